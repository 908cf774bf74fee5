"""The typed conversion config: precisions for the parts of a model that have no quantizer.

QKeras quantizers always win where present.  Everything else (float Dense,
MultiHeadAttention internals, LayerNormalization, Add, softmax) gets a type of
``activation_bits`` whose integer part comes from range analysis on
calibration data, unless a per-layer override names one::

    {"activation_bits": 16, "layers": {"mha": {"probs": "ufixed<16,1>"}, "ln1": {"output": "fixed<16,4>"}}}

Keys are snake_case; an unknown key is rejected with the list of valid ones.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import ConfigError
from ..fixed import FixedType, Overflow, Rounding


@dataclass
class ConvertConfig:
    #: width of activations without a quantizer (integer bits from range analysis)
    activation_bits: int = 16
    #: width of weights of float layers (Dense, attention projections)
    weight_bits: int = 8
    #: width of biases of float layers and of layer-norm gamma/beta
    bias_bits: int = 16
    #: width of the softmax output (unsigned, one integer bit so 1.0 fits)
    softmax_bits: int = 16
    #: width of the exp table entries (unsigned, one integer bit)
    exp_bits: int = 17
    #: width of the reciprocal / inverse-square-root table entries
    recip_out_bits: int = 17
    #: index bits of the reciprocal table (2**bits entries)
    recip_bits: int = 8
    #: index bits of the inverse-square-root table (3 * 2**bits entries; even)
    invsqrt_bits: int = 8
    #: width of the normalised value inside layer norm
    norm_bits: int = 18
    #: index bits of element-wise function tables (GELU, …) and of the exp table
    table_index_bits: int = 10
    #: head-room factor on calibration ranges (1.25: 25 % above the largest value seen)
    range_margin: float = 1.25
    #: rounding and overflow of every type fabformer chooses (quantizers keep theirs)
    rounding: str = "RND"
    overflow: str = "SAT"
    #: per-layer overrides: {keras_layer_name: {role: "fixed<W,I>"}}
    layers: dict = field(default_factory=dict)

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_bits"):
                if not isinstance(v, int) or isinstance(v, bool) or not 2 <= v <= 32:
                    raise ConfigError(f"config {f.name} must be an integer in 2..32, not {v!r}")
        if self.invsqrt_bits % 2:
            raise ConfigError(f"config invsqrt_bits must be even, not {self.invsqrt_bits}")
        if (not isinstance(self.range_margin, (int, float)) or isinstance(self.range_margin, bool)
                or not math.isfinite(self.range_margin) or self.range_margin < 1):
            raise ConfigError(f"config range_margin must be a number >= 1, not {self.range_margin!r}")
        try:
            Rounding(self.rounding)
        except ValueError:
            raise ConfigError(f"config rounding must be one of TRN, RND, not {self.rounding!r}") from None
        try:
            Overflow(self.overflow)
        except ValueError:
            raise ConfigError(f"config overflow must be one of WRAP, SAT, not {self.overflow!r}") from None
        if not isinstance(self.layers, dict):
            raise ConfigError("config layers must be a mapping {layer_name: {role: type}}")
        parsed = {}
        for lname, roles in self.layers.items():
            if not isinstance(roles, dict):
                raise ConfigError(f"config layers[{lname!r}] must be a mapping {{role: type}}, not {roles!r}")
            parsed[lname] = {}
            for role, t in roles.items():
                try:
                    parsed[lname][role] = FixedType.parse(t)
                except Exception as e:
                    raise ConfigError(f"config layers[{lname!r}][{role!r}]: {e}") from None
        self.layers = parsed

    @classmethod
    def from_dict(cls, d: dict) -> "ConvertConfig":
        if d is None:
            return cls()
        valid = [f.name for f in fields(cls)]
        if not isinstance(d, dict):
            raise ConfigError(f"a precision config is a JSON object with keys {', '.join(valid)}; "
                              f"got {type(d).__name__}")
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(map(repr, unknown))}; "
                              f"valid keys: {', '.join(valid)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path) -> "ConvertConfig":
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {str(p)!r} is not valid JSON: {e}") from None

    def act(self, width: int, frac: int, signed: bool = True) -> FixedType:
        return FixedType(width, frac, signed, self.rounding, self.overflow)
