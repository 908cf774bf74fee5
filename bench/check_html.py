"""Check a fabformer report.html in headless Chromium: it loads with no errors and shows its tables and images.

    python bench/check_html.py out/demo/report/report.html [--screenshot page.png]

A copy of the page gets a small probe script (the report itself has none): it
records script errors and, once the page has loaded, the number of tables,
table rows and images, and each image's decoded size.  Chromium runs with no
network access (``--host-resolver-rules``) and prints the DOM; the probe's
result and Chromium's console errors decide.  Exit status 0 when every image
decoded, every table has rows, and there were no errors; prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE_HEAD = """<script>window.__errors=[];window.addEventListener('error',function(e){
window.__errors.push(String(e.message||(e.target&&e.target.outerHTML)||e));},true);</script>"""
PROBE_BODY = """<script>window.addEventListener('load',function(){
var imgs=[].slice.call(document.images),tables=[].slice.call(document.querySelectorAll('table'));
var r={tables:tables.length,rows:tables.map(function(t){return t.tBodies[0]?t.tBodies[0].rows.length:0;}),
images:imgs.map(function(i){return {alt:i.alt,complete:i.complete,width:i.naturalWidth,height:i.naturalHeight,
external:!/^data:/.test(i.getAttribute('src'))};}),
errors:window.__errors,title:document.title};
var p=document.createElement('pre');p.id='fabformer-check';p.textContent=JSON.stringify(r);
document.body.appendChild(p);});</script>"""

CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    for name in CHROMIUMS:
        p = shutil.which(name)
        if p:
            return p
    return None


def check(html_path, screenshot=None, timeout: float = 60.0) -> dict:
    """Load ``html_path`` in headless Chromium; returns the probe's findings plus ``ok`` and ``problems``."""
    exe = find_chromium()
    if exe is None:
        raise RuntimeError(f"no Chromium found (looked for {', '.join(CHROMIUMS)}); apt-get install chromium")
    text = Path(html_path).read_text()
    problems = []
    for m in re.finditer(r'(?:src|href)\s*=\s*"([^"]*)"', text):
        if not m.group(1).startswith(("data:", "#")):
            problems.append(f"reference outside the page: {m.group(1)[:80]}")
    probed = text.replace("<head>", "<head>" + PROBE_HEAD, 1) if "<head>" in text else PROBE_HEAD + text
    probed = probed.replace("</body>", PROBE_BODY + "</body>", 1)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(probed)
        base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp}/profile",
                "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
        r = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=timeout)
        if screenshot:
            subprocess.run(base + [f"--screenshot={Path(screenshot).resolve()}", "--window-size=1100,3000",
                                   page.as_uri()], capture_output=True, text=True, timeout=timeout)
    m = re.search(r'<pre id="fabformer-check">(.*?)</pre>', r.stdout, re.S)
    if not m:
        return {"ok": False, "problems": problems + ["the page did not finish loading (no probe result)"],
                "stderr": r.stderr[-2000:]}
    import html as _html
    res = json.loads(_html.unescape(m.group(1)))
    console = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln and ("error" in ln.lower() or "Uncaught" in ln)]
    problems += [f"script error: {e}" for e in res["errors"]] + [f"console: {c}" for c in console]
    if res["tables"] == 0:
        problems.append("no tables")
    problems += [f"table {i} has no rows" for i, n in enumerate(res["rows"]) if n == 0]
    if not res["images"]:
        problems.append("no images")
    for i in res["images"]:
        if i["external"]:
            problems.append(f"image {i['alt']} is not inlined")
        if not i["complete"] or i["width"] == 0:
            problems.append(f"image {i['alt']} did not decode")
    return {**res, "ok": not problems, "problems": problems}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("html")
    p.add_argument("--screenshot", help="also save a PNG of the page here")
    a = p.parse_args(argv)
    try:
        res = check(a.html, a.screenshot)
    except RuntimeError as e:
        print(f"check_html: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=1))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
