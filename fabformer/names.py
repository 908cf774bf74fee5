"""The one identifier sanitizer of the generated C++ and Verilog.

Model, layer and tensor names come from the user's model and may be anything a
framework accepts: punctuation (``mha/query``, ``x.y`` and ``x-y``), case pairs
(``Foo`` and ``foo``), unicode, or words that are keywords in C++ or Verilog
(``class``, ``int``, ``module``) or that the generated code uses itself
(``main``).  A :class:`Namer` gives each name one identifier, unique within the
namer and distinct from every other one even case-insensitively (HLS tools and
some file systems fold case), and never a keyword of either language.
"""
from __future__ import annotations

import re

__all__ = ["sanitize", "Namer", "RESERVED"]

_CPP = """alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t char32_t
class compl concept const consteval constexpr constinit const_cast continue co_await co_return co_yield decltype
default delete do double dynamic_cast else enum explicit export extern false float for friend goto if inline int
long mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected public register
reinterpret_cast requires return short signed sizeof static static_assert static_cast struct switch template this
thread_local throw true try typedef typeid typename union unsigned using virtual void volatile wchar_t while xor
xor_eq main std fab ap_int ap_uint ap_fixed ap_ufixed NULL"""
_VERILOG = """always and assign automatic begin buf bufif0 bufif1 case casex casez cell cmos config deassign default
defparam design disable edge else end endcase endconfig endfunction endgenerate endmodule endprimitive endspecify
endtable endtask event for force forever fork function generate genvar highz0 highz1 if ifnone incdir include
initial inout input instance integer join large liblist library localparam macromodule medium module nand
negedge nmos nor noshowcancelled not notif0 notif1 or output parameter pmos posedge primitive pull0 pull1 pulldown
pullup pulsestyle_onevent pulsestyle_ondetect rcmos real realtime reg release repeat rnmos rpmos rtran rtranif0
rtranif1 scalared showcancelled signed small specify specparam strong0 strong1 supply0 supply1 table task time
tran tranif0 tranif1 tri tri0 tri1 triand trior trireg unsigned use uwire vectored wait wand weak0 weak1 while
wire wor xnor xor logic bit byte clk rst top"""
#: words no generated identifier may be (compared case-insensitively)
RESERVED = frozenset(w.lower() for w in (_CPP + " " + _VERILOG).split())
_BAD = re.compile(r"[^A-Za-z0-9_]")


def sanitize(name: str) -> str:
    """An identifier for ``name``: every character outside ``[A-Za-z0-9_]`` (unicode included)
    becomes ``_``; a leading digit or an empty name gets an ``n_`` prefix; a reserved word gets
    a ``_`` suffix.  Not unique by itself: use a :class:`Namer` for a set of names."""
    s = _BAD.sub("_", str(name))
    if not s or s[0].isdigit():
        s = "n_" + s
    if s.lower() in RESERVED or s.startswith("__"):
        s = s + "_"
    return s


class Namer:
    """Unique identifiers for a set of names: ``namer(name)`` is stable for a name and
    distinct (case-insensitively) from every other identifier this namer gave out or was
    told to avoid (``taken``)."""

    def __init__(self, taken=()):
        self._given: dict[str, str] = {}
        self._used = {t.lower() for t in taken}

    def __call__(self, name: str) -> str:
        if name in self._given:
            return self._given[name]
        ident = sanitize(name)
        while ident.lower() in self._used:
            ident += "_"
        self._used.add(ident.lower())
        self._given[name] = ident
        return ident
