"""Publish the asv dashboard and screenshot its speed-up vs batch size graph.

    python benchmarks/dashboard.py [--bench NAME] [--out docs/dashboard.png] [--no-publish]

Steps: ``asv publish`` (results in ``.asv/results`` -> HTML in ``.asv/html``); serve
``.asv/html`` on 127.0.0.1 (a random free port, a background thread that stops itself after
``--serve-seconds``); load the graph page of a ``track_speedup_*`` benchmark with batch size
as the x-axis (``#<bench>?x-axis=batch_size``) in headless Chromium (Debian's ``chromium``:
``apt-get install chromium``); check in the rendered DOM that asv drew the graph (flot's
canvases and the ``batch_size`` axis, not the empty page shell or an error), take the
screenshot and check it has plot content (enough non-background pixels, several colours).
Exit status 1 if the page did not render. Run ``asv run`` first (see the README).

Not a benchmark: asv imports this module during discovery, so nothing runs at import.
"""
import argparse
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BENCH = "bench_train_step.Speedup.track_speedup_train_step"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--mute-audio"]


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("dashboard: Chromium not found; install it with `apt-get install -y chromium`")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(directory, seconds):
    """Serve `directory` on 127.0.0.1 in a daemon thread for at most `seconds`; returns
    (base URL, server). ``server.shutdown()`` stops it earlier."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    timer = threading.Timer(seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def chromium(browser, url, profile, extra, size, budget_ms, timeout):
    cmd = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
           f"--virtual-time-budget={budget_ms}", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check_dom(dom, bench):
    """Problems that show the graph page did not render (empty list: it did)."""
    problems = []
    if 'class="flot-base"' not in dom and "flot-base" not in dom:
        problems.append("no flot canvas (class flot-base): the graph was not drawn")
    if "flot-tick-label" not in dom:
        problems.append("no axis tick labels (flot-tick-label)")
    if "batch_size" not in dom:
        problems.append("batch_size does not appear: x-axis not the batch size")
    if bench.rsplit(".", 1)[-1] not in dom:
        problems.append(f"benchmark {bench} not on the page")
    if re.search(r"Failed to load|Cannot load|No data", dom):
        problems.append("the page shows a load error or no data")
    return problems


def check_png(path, min_fraction=0.02, min_colours=4):
    """Problems with the screenshot: blank page, or no coloured plot lines."""
    import numpy as np
    from matplotlib import image

    img = image.imread(path)[..., :3]
    if img.dtype != np.uint8:
        img = (img * 255).round().astype(np.uint8)
    flat = img.reshape(-1, 3).astype(int)
    bg = np.bincount(flat[:, 0] * 65536 + flat[:, 1] * 256 + flat[:, 2]).argmax()
    bg = np.array([bg // 65536, bg // 256 % 256, bg % 256])
    differs = np.abs(flat - bg).sum(axis=1) > 30
    saturated = (flat.max(axis=1) - flat.min(axis=1)) > 60       # coloured, not grey text
    colours = {tuple(c) for c in (flat[saturated] // 32).tolist()}
    problems = []
    if differs.mean() < min_fraction:
        problems.append(f"only {differs.mean():.1%} of pixels differ from the background")
    if len(colours) < min_colours:
        problems.append(f"only {len(colours)} saturated colour(s): no plot lines")
    return problems, {"non_background": float(differs.mean()), "colours": len(colours),
                      "coloured_pixels": int(saturated.sum())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", default=DEFAULT_BENCH, help=f"benchmark page (default {DEFAULT_BENCH})")
    p.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"), help="screenshot PNG")
    p.add_argument("--params", default="",
                   help="extra graph URL parameters, e.g. \"p-dtype='float32'\" (&-separated)")
    p.add_argument("--size", default="1400,900", help="window size W,H (default 1400,900)")
    p.add_argument("--no-publish", action="store_true", help="skip `asv publish`")
    p.add_argument("--serve-seconds", type=float, default=120.0,
                   help="the HTTP server stops itself after this many seconds (default 120)")
    p.add_argument("--budget-ms", type=int, default=15000, help="Chromium's virtual time budget")
    args = p.parse_args(argv)

    html = ROOT / ".asv" / "html"
    if not args.no_publish:
        subprocess.run([sys.executable, "-m", "asv", "publish"], cwd=ROOT, check=True)
    if not (html / "index.html").is_file():
        raise SystemExit(f"dashboard: {html / 'index.html'} missing; run `asv run` and `asv publish`")
    if not (html / "graphs").is_dir() or not any((html / "graphs").rglob(f"{args.bench}.json")):
        raise SystemExit(f"dashboard: no results for {args.bench} in {html}; run it with asv run first")

    browser = find_chromium()
    base, server = serve(html, args.serve_seconds)
    query = "x-axis=batch_size" + (f"&{args.params}" if args.params else "")
    url = f"{base}/index.html#{args.bench}?{query}"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    timeout = args.serve_seconds
    try:
        with tempfile.TemporaryDirectory(prefix="fastbp-chromium-") as profile:
            dom = chromium(browser, url, profile, ["--dump-dom"], args.size, args.budget_ms, timeout)
            problems = check_dom(dom.stdout, args.bench)
            if not dom.stdout.strip():
                problems.append(f"Chromium printed no DOM: {dom.stderr.strip()[-500:]}")
            shot = chromium(browser, url, profile, [f"--screenshot={out.resolve()}"], args.size,
                            args.budget_ms, timeout)
            if shot.returncode or not out.is_file():
                problems.append(f"no screenshot written: {shot.stderr.strip()[-500:]}")
    finally:
        server.shutdown()
        server.server_close()
    if out.is_file():
        png_problems, stats = check_png(out)
        problems += png_problems
        print(f"screenshot {out}: {stats['non_background']:.1%} non-background pixels, "
              f"{stats['colours']} saturated colour bins")
    print(f"page: {url}")
    if problems:
        print("dashboard: the graph did not render:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"graph rendered; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
