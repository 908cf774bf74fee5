"""fabformer.boards: board definitions, the UART shell and the build flows.

``fabformer.boards.build.build(graph, "ulx3s-85f", out)`` fits the graph's parallelism to the board,
wraps the model in the UART shell, runs the open flow (or writes the Vivado
plan for Xilinx boards) and returns the report; see :mod:`.build`.
"""
from .platforms import BOARDS, PART_DEVICES, PartTarget, get_board, get_target

# ``build`` is the submodule fabformer.boards.build; its function: fabformer.boards.build.build
__all__ = ["BOARDS", "PART_DEVICES", "PartTarget", "get_board", "get_target"]
