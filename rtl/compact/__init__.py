"""The compact RTL architecture: one MAC array, one row unit, a sequencer (see :mod:`.program`)."""
from .program import BACKEND, LANES, Instr, Program, compile_graph  # noqa: F401
