"""Generated files of the digits example, digested: proof that a refactor changed no output.

Writes, for the shipped digits model: the graph JSON, the HLS project folder, and the
Verilog at the default parallelism and at parallelism 4; prints one SHA-256 per file
(and one over all).  Run it on two commits and compare the lines:

    python bench/snapshot.py -o out/snapshot > before.txt   # on the old commit
    python bench/snapshot.py -o out/snapshot > after.txt    # on the new one
    diff before.txt after.txt
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default="out/snapshot")
    args = ap.parse_args(argv)
    out = Path(args.output)
    if out.exists():
        if not (out / ".fabformer-snapshot").is_file():
            print(f"snapshot: {out} exists and was not made by this script", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / ".fabformer-snapshot").write_text("")

    import fabformer
    from fabformer import hls, rtl
    from fabformer.frontend import load_keras_model
    try:
        from fabformer.apps.data import digits
    except ModuleNotFoundError:
        from fabformer.data import digits

    model = load_keras_model(ROOT / "examples" / "digits" / "model_q8.h5")
    g = fabformer.convert(model, calibration=digits().x_train)
    g.save(out / "digits.graph.json")
    hls.write(g, out / "hls")
    for label, par in (("default", None), ("par4", 4)):
        d = rtl.generate(g, parallelism=par)
        (out / f"top_{label}.v").write_text(d.verilog("top"))
    total = hashlib.sha256()
    for p in sorted(q for q in out.rglob("*") if q.is_file() and q.name != ".fabformer-snapshot"):
        h = hashlib.sha256(p.read_bytes()).hexdigest()
        total.update(f"{p.relative_to(out)} {h}\n".encode())
        print(f"{h}  {p.relative_to(out)}")
    print(f"{total.hexdigest()}  ALL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
