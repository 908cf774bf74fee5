"""fabformer: quantized Transformers to verified FPGA hardware.

``fabformer.convert(model)`` (Keras/QKeras or PyTorch) gives a :class:`Graph` (the fixed-point IR);
``graph.predict(x)`` runs the bit-exact golden model; ``fabformer.hls``,
``fabformer.rtl``, ``fabformer.sim`` and ``fabformer.boards`` take the same
graph to C++, Verilog, simulation and bitstreams.
"""
from .errors import FabformerError, ConversionError, GraphError, ConfigError
from .fixed import FixedType, Rounding, Overflow
from .ir import Graph, load
from . import golden as _golden  # noqa: F401  (registers the golden model)

__version__ = "0.1.0"
__all__ = ["FixedType", "Rounding", "Overflow", "Graph", "load", "convert", "ConvertConfig",
           "FabformerError", "ConversionError", "GraphError", "ConfigError"]


def convert(model, config=None, calibration=None):
    """Convert a Keras 2 / QKeras or a PyTorch model (``nn.Module``, Brevitas included, or a
    ``torch.export`` program) into a fixed-point :class:`Graph`."""
    from .frontend.pytorch import is_torch_model
    if is_torch_model(model):
        from .frontend.pytorch import convert as _convert
    else:
        from .frontend import convert as _convert
    return _convert(model, config=config, calibration=calibration)


def __getattr__(name):
    if name == "ConvertConfig":
        from .frontend.config import ConvertConfig
        return ConvertConfig
    raise AttributeError(name)
