"""Publish the asv dashboard, check in headless Chromium that it drew the speed-up graph,
and save a screenshot of it.

    python benchmarks/dashboard.py [--bench NAME] [--out docs/asv-speedup.png] [--no-publish]

Run ``asv run`` first (see the README section "Benchmarks (asv dashboard)"). Steps:

1. ``asv publish``: ``.asv/results`` -> static HTML in ``.asv/html``.
2. Make the HTML self-contained. asv 0.6's ``index.html`` loads jQuery, flot, bootstrap,
   stupidtable and md5 from public CDNs, which a closed network (this project's machines)
   cannot reach: the page is then an empty shell. The same libraries, as asv itself shipped
   them up to 0.5.1 (``asv/www/vendor``), are taken from the asv 0.5.1 sdist (fetched once
   from PyPI with pip, hash-checked, cached in ``.asv/vendor``), copied to
   ``.asv/html/vendor`` and the CDN tags rewritten to point there. The result also works
   from ``file://`` or any static host.
3. Serve ``.asv/html`` on 127.0.0.1 (a free port, a daemon thread).
4. Drive headless Chromium through chromedriver (W3C WebDriver over HTTP, no Python
   dependency; Debian: ``apt-get install -y chromium chromium-driver``) to the graph page of a
   ``track_speedup_*`` benchmark with batch size as the x-axis
   (``#<bench>?x-axis=batch_size``), wait until flot has drawn it, and check *in the page*
   that the plot has data: ``$('#main-graph').data('plot').getData()`` has series with
   finite points at every batch size, the x-axis is labelled ``batch_size``, and the plot
   canvas has coloured (line/bar) pixels.
5. Screenshot the window; store it as a palette PNG (small enough to commit).

Exit status 1 if the page did not render the graph (each problem is printed).

Not a benchmark: asv imports this module during discovery, so nothing runs at import.
"""
import argparse
import base64
import functools
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / ".asv" / "html"
VENDOR_CACHE = ROOT / ".asv" / "vendor"
DEFAULT_BENCH = "bench_train_step.Speedup.track_speedup_train_step"
DEFAULT_OUT = ROOT / "docs" / "asv-speedup.png"
DEFAULT_PARAMS = "y-axis-scale=log&p-dtype='float32'&p-dtype='float64'"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]

#: The asv release whose sdist carries the web libraries (asv/www/vendor) and its sha256.
VENDOR_SDIST = ("asv", "0.5.1", "805fc3cc46c0bcf3e7baeaa16a12e4b92f1276c25490db4cb80fc541afa52bfc")
#: CDN file name in asv 0.6's index.html -> file in asv 0.5.1's www/vendor.
VENDOR_MAP = {
    "jquery-3.3.1.min.js": "jquery-3.3.1.min.js",
    "jquery.flot.min.js": "jquery.flot-0.8.3.min.js",
    "jquery.flot.time.min.js": "jquery.flot-0.8.3.time.min.js",
    "jquery.flot.selection.min.js": "jquery.flot-0.8.3.selection.min.js",
    "jquery.flot.categories.min.js": "jquery.flot-0.8.3.categories.min.js",
    "jquery.flot.orderBars.js": "jquery.flot.orderBars.js",
    "stupidtable.min.js": "stupidtable.js",
    "md5.min.js": "md5.js",
    "bootstrap.min.js": "bootstrap-3.1.0.min.js",
    "bootstrap.min.css": "bootstrap-3.1.0.min.css",
}


# -- 2. a self-contained dashboard ----------------------------------------------------------

def ensure_vendor(cache=VENDOR_CACHE):
    """The directory holding the files of :data:`VENDOR_MAP` (fetched once with pip)."""
    needed = set(VENDOR_MAP.values())
    if cache.is_dir() and needed <= {p.name for p in cache.iterdir()}:
        return cache
    name, version, sha256 = VENDOR_SDIST
    with tempfile.TemporaryDirectory(prefix="fastbp-asv-sdist-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", f"{name}=={version}", "-d", tmp], check=True)
        sdist = Path(tmp) / f"{name}-{version}.tar.gz"
        data = sdist.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise SystemExit(f"dashboard: {sdist.name} does not have the expected sha256")
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if parts[-3:-1] == ("www", "vendor") and parts[-1] in needed:
                    (cache / parts[-1]).write_bytes(tar.extractfile(member).read())
    missing = needed - {p.name for p in cache.iterdir()}
    if missing:
        raise SystemExit(f"dashboard: {name} {version} sdist lacks {sorted(missing)}")
    return cache


_CDN_TAG = re.compile(r"<(script|link)\b[^>]*?(?:src|href)=\"(https?://[^\"]+)\"[^>]*>")


def make_offline(html_dir=HTML, vendor=None):
    """Point every CDN ``<script>``/``<link>`` of ``html_dir/*.html`` at ``html_dir/vendor``.
    Returns the number of tags rewritten; raises SystemExit on a CDN file it does not know."""
    vendor = vendor or ensure_vendor()
    dest = html_dir / "vendor"
    dest.mkdir(exist_ok=True)
    for f in set(VENDOR_MAP.values()):
        shutil.copyfile(vendor / f, dest / f)
    count = 0
    for page in html_dir.glob("*.html"):
        text = page.read_text()

        def local(m):
            nonlocal count
            tag, url = m.group(0), m.group(2)
            base = url.rsplit("/", 1)[-1]
            if base not in VENDOR_MAP:
                raise SystemExit(f"dashboard: {page.name} loads {url}, which has no local copy")
            count += 1
            tag = tag.replace(url, f"vendor/{VENDOR_MAP[base]}")
            return re.sub(r"\s(integrity|crossorigin|referrerpolicy)=\"[^\"]*\"", "", tag)

        new = _CDN_TAG.sub(local, text)
        if new != text:
            page.write_text(new)
    return count


# -- 3. serving -----------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(directory):
    """Serve `directory` on 127.0.0.1 in a daemon thread; returns (base URL, server)."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


# -- 4. headless Chromium through chromedriver ----------------------------------------------

def find_browser():
    """(chromium binary, chromedriver) or SystemExit with the install command."""
    browser = next((p for p in ("/usr/lib/chromium/chromium",) if os.access(p, os.X_OK)), None)
    browser = browser or next(filter(None, map(shutil.which, (
        "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"))), None)
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        raise SystemExit("dashboard: needs Chromium and chromedriver: "
                         "apt-get install -y chromium chromium-driver")
    return browser, driver


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriver:
    """The few W3C WebDriver commands needed, over chromedriver's HTTP endpoint."""

    def __init__(self, browser, driver, profile, size, timeout):
        self.port = _free_port()
        self.timeout = timeout
        self.proc = subprocess.Popen([driver, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._call("GET", "/status")["ready"]:
                    break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.quit()
                raise SystemExit("dashboard: chromedriver did not start")
            time.sleep(0.2)
        args = CHROMIUM_FLAGS + [f"--user-data-dir={profile}", f"--window-size={size}"]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": browser, "args": args}}}}
        try:
            self.session = self._call("POST", "/session", caps)["sessionId"]
        except Exception:
            self.quit()
            raise

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"WebDriver {method} {path}: {e.read()[:500]!r}") from None

    def cmd(self, method, path, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url):
        self.cmd("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self):
        return base64.b64decode(self.cmd("GET", "/screenshot"))

    def quit(self):
        try:
            if getattr(self, "session", None):
                self._call("DELETE", f"/session/{self.session}")
        except Exception:
            pass
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


#: Runs in the page: what flot drew in asv's #main-graph (null until the plot exists).
PLOT_STATE_JS = r"""
var $ = window.jQuery;
if (!$ || !$.plot) { return {ready: false, why: "jQuery/flot not loaded"}; }
var ph = $('#main-graph'), plot = ph.data('plot');
if (!plot) { return {ready: false, why: "no flot plot in #main-graph", text: ph.text().slice(0, 200)}; }
var series = plot.getData().map(function (s) {
    var pts = s.data.filter(function (p) { return p && p[1] !== null && isFinite(p[1]); });
    return {label: s.label, n: pts.length, x: pts.map(function (p) { return p[0]; }),
            y: pts.map(function (p) { return p[1]; })};
});
var canvas = ph.find('canvas.flot-base')[0], coloured = 0;
if (canvas) {
    var d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (var i = 0; i < d.length; i += 4) {
        var hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);
        if (d[i + 3] > 0 && hi - lo > 60) { coloured++; }
    }
}
return {ready: true, series: series, coloured: coloured,
        canvas: canvas ? [canvas.width, canvas.height] : null,
        xlabel: plot.getXAxes()[0].options.axisLabel,
        xmode: plot.getXAxes()[0].options.mode,
        xticks: ph.find('.flot-x-axis .flot-tick-label').map(function () { return $(this).text(); }).get(),
        title: document.title};
"""


def check_plot(state, expected_x, min_coloured=500):
    """Problems with the rendered graph (empty list: it shows data at every batch size)."""
    if not state or not state.get("ready"):
        return [f"the graph was not drawn ({(state or {}).get('why', 'no state')})"]
    problems = []
    series = [s for s in state["series"] if s["n"]]
    if not series:
        problems.append("the plot has no series with data")
    for s in series:
        xs = sorted(float(x) for x in s["x"])
        if xs != sorted(float(x) for x in expected_x):
            problems.append(f"series {s['label']!r} has points at {xs}, expected {expected_x}")
    if state.get("xlabel") != "batch_size":
        problems.append(f"x-axis label is {state.get('xlabel')!r}, not batch_size")
    if state.get("xmode") == "categories":  # string parameters: one tick label per batch size
        ticks = sorted(float(t) for t in state.get("xticks", []) if t.strip())
        if ticks != sorted(expected_x):
            problems.append(f"x-axis ticks {state.get('xticks')}, expected {expected_x}")
    if state["coloured"] < min_coloured:
        problems.append(f"only {state['coloured']} coloured pixels on the plot canvas")
    return problems


def _expected_batches(html, bench):
    """The batch sizes the published results hold for `bench` (from its index.json)."""
    index = json.loads((html / "index.json").read_text())
    info = index["benchmarks"][bench]
    values = info["params"][info["param_names"].index("batch_size")]
    return [float(v.strip("'")) for v in values]


def save_small_png(png_bytes, out, colours=128):
    """Write `png_bytes` to `out` as a palette PNG (Pillow, a matplotlib dependency)."""
    from PIL import Image
    img = Image.open(io.BytesIO(png_bytes)).convert("RGB")
    img.quantize(colours, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return img.size


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", default=DEFAULT_BENCH, help=f"benchmark page (default {DEFAULT_BENCH})")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"screenshot PNG (default {DEFAULT_OUT})")
    p.add_argument("--params", default=DEFAULT_PARAMS,
                   help=f"extra graph URL parameters, &-separated (default {DEFAULT_PARAMS!r}: "
                        "logarithmic y-axis, whose 1x baseline means 'as fast as NumPy', and "
                        "both dtypes)")
    p.add_argument("--size", default="1200,760", help="window size W,H (default 1200,760)")
    p.add_argument("--no-publish", action="store_true", help="skip `asv publish`")
    p.add_argument("--html", default=str(HTML), help=f"published dashboard (default {HTML})")
    p.add_argument("--keep-cdn", action="store_true",
                   help="leave asv's CDN links alone (a browser with internet access)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the graph")
    args = p.parse_args(argv)

    html = Path(args.html)
    if not args.no_publish:
        subprocess.run([sys.executable, "-m", "asv", "publish", "--html-dir", str(html)],
                       cwd=ROOT, check=True)
    if not (html / "index.html").is_file():
        raise SystemExit(f"dashboard: {html / 'index.html'} missing; run `asv run` and `asv publish`")
    if not any((html / "graphs").rglob(f"{args.bench}.json")):
        raise SystemExit(f"dashboard: no results for {args.bench} in {html}; run it with asv run first")
    if not args.keep_cdn:
        print(f"dashboard: {make_offline(html)} CDN tags now load {html / 'vendor'}")

    browser, driver = find_browser()
    base, server = serve(html)
    query = "x-axis=batch_size" + (f"&{args.params}" if args.params else "")
    url = f"{base}/index.html#{args.bench}?{query}"
    expected = _expected_batches(html, args.bench)
    state, problems = None, ["not loaded"]
    try:
        with tempfile.TemporaryDirectory(prefix="fastbp-chromium-") as profile:
            wd = WebDriver(browser, driver, profile, args.size, timeout=args.timeout)
            try:
                wd.get(url)
                deadline = time.monotonic() + args.timeout
                while time.monotonic() < deadline:
                    state = wd.js(PLOT_STATE_JS)
                    problems = check_plot(state, expected)
                    if not problems:
                        time.sleep(1.0)  # let flot finish the legend and axis labels
                        state = wd.js(PLOT_STATE_JS)
                        problems = check_plot(state, expected)
                        break
                    time.sleep(0.5)
                png = wd.screenshot()
            finally:
                wd.quit()
    finally:
        server.shutdown()
        server.server_close()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    w, h = save_small_png(png, out)
    print(f"page: {url}")
    if state and state.get("ready"):
        for s in state["series"]:
            ys = ", ".join(f"{y:.3g}" for y in s["y"])
            print(f"  series {s['label']!r}: {s['n']} points, y = {ys}")
        print(f"  x-axis {state.get('xlabel')!r}, ticks {state.get('xticks')}, "
              f"{state['coloured']} coloured canvas pixels {state.get('canvas')}")
    print(f"screenshot {out} ({w}x{h}, {out.stat().st_size // 1024} KiB)")
    if problems:
        print("dashboard: the graph did not render:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("graph rendered with data at every batch size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
