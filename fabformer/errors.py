"""Errors a person can act on.  Each names the layer/tensor, the value and the valid choices."""


class FabformerError(ValueError):
    """Base class of every error fabformer raises for bad input."""


class ConversionError(FabformerError):
    """A model (or part of it) cannot be converted; the message lists every problem."""

    def __init__(self, problems):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"cannot convert the model ({len(self.problems)} problem"
                         f"{'s' if len(self.problems) != 1 else ''}):\n{lines}")


class GraphError(FabformerError):
    """The graph verifier found problems; all of them are listed."""

    def __init__(self, problems):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid graph ({len(self.problems)} problem"
                         f"{'s' if len(self.problems) != 1 else ''}):\n{lines}")


class ConfigError(FabformerError):
    """A configuration key or value is not valid."""
