"""The HLS backend's configuration: target part, clock, and parallelism per op."""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import ConfigError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class HLSConfig:
    """Settings of a generated Vitis HLS project.

    ``reuse_factor`` is the initiation interval of each op's row loop (1 = fully
    parallel); ``layer_reuse`` overrides it per node name.  ``name`` is the top
    function's name (default: the graph's name).  ``tb_samples`` is the number of
    test vectors written for the C++ testbench when no inputs are given.
    """

    part: str = "xcu250-figd2104-2L-e"
    clock_period_ns: float = 5.0
    reuse_factor: int = 1
    layer_reuse: dict = field(default_factory=dict)
    name: str | None = None
    tb_samples: int = 16

    def __post_init__(self):
        if not isinstance(self.reuse_factor, int) or self.reuse_factor < 1:
            raise ConfigError(f"reuse_factor must be a positive integer, not {self.reuse_factor!r}")
        if not isinstance(self.part, str) or not self.part:
            raise ConfigError(f"part must be a device name such as xcu250-figd2104-2L-e, not {self.part!r}")
        if not isinstance(self.layer_reuse, dict):
            raise ConfigError(f"layer_reuse must be a mapping {{node: reuse factor}}, not {self.layer_reuse!r}")
        for k, v in self.layer_reuse.items():
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"layer_reuse[{k!r}] must be a positive integer, not {v!r}")
        if self.name is not None and not _IDENT.match(self.name):
            raise ConfigError(f"name {self.name!r} is not a valid C identifier (letters, digits, _)")
        if not (isinstance(self.clock_period_ns, (int, float)) and self.clock_period_ns > 0):
            raise ConfigError(f"clock_period_ns must be positive, not {self.clock_period_ns!r}")
        if not isinstance(self.tb_samples, int) or self.tb_samples < 1:
            raise ConfigError(f"tb_samples must be a positive integer, not {self.tb_samples!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "HLSConfig":
        valid = [f.name for f in fields(cls)]
        if not isinstance(d, dict):
            raise ConfigError(f"an HLS config is a JSON object with keys {', '.join(valid)}; got {type(d).__name__}")
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ConfigError(f"unknown HLS config key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path) -> "HLSConfig":
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"HLS config file {str(p)!r} does not exist")
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"HLS config file {str(p)!r} is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        return asdict(self)

    def reuse(self, node_name: str) -> int:
        return int(self.layer_reuse.get(node_name, self.reuse_factor))

    def check(self, graph) -> None:
        names = {n.name for n in graph.nodes}
        bad = sorted(set(self.layer_reuse) - names)
        if bad:
            raise ConfigError(f"layer_reuse names unknown node(s) {', '.join(bad)}; "
                              f"nodes: {', '.join(n.name for n in graph.nodes)}")
