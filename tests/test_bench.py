"""``fastbp bench`` and :mod:`fastbp.bench`: structure only, never timings."""
import numpy as np
import pytest

from fastbp import bench
from fastbp.cli import main


def test_run_bench_rows_and_table():
    rows = bench.run_bench([1, 3], np.float32, repeat=1, min_sample=1e-4)
    assert [(r["name"], r["batch"]) for r in rows] == [(n, b) for n in bench.NAMES for b in (1, 3)]
    for r in rows:
        assert r["dtype"] == "float32"
        assert r["numpy_s"] > 0 and r["fastbp_s"] > 0
        assert r["speedup"] == pytest.approx(r["numpy_s"] / r["fastbp_s"])
    table = bench.format_table(rows).splitlines()
    assert table[0].split() == ["benchmark", "batch", "numpy", "fastbp", "speedup"]
    body = [ln for ln in table[2:] if ln.strip()]
    assert len(body) == len(rows)
    assert body[-1].split()[:2] == ["train_step", "3"] and body[-1].endswith("x")


def test_run_bench_subset_float64():
    rows = bench.run_bench([2], np.float64, repeat=1, names=("train_step", "relu_forward"),
                           min_sample=1e-4)
    assert [r["name"] for r in rows] == ["relu_forward", "train_step"]
    assert {r["dtype"] for r in rows} == {"float64"}


@pytest.mark.parametrize("kwargs", [dict(names=("nope",)), dict(dtype=np.int32),
                                    dict(repeat=0), dict(batch_sizes=[0])])
def test_run_bench_rejects_bad_arguments(kwargs):
    args = dict(batch_sizes=[1], dtype=np.float32, repeat=1)
    args.update(kwargs)
    with pytest.raises(ValueError):
        bench.run_bench(**args)


def test_baselines_compute_the_same_as_the_kernels():
    # The NumPy side is a faithful implementation, not just something that takes time.
    def cell(fn, name):  # a buffer the case's closure writes
        return fn.__closure__[fn.__code__.co_freevars.index(name)].cell_contents

    cases = bench._cases(5, np.float64)
    outs = {"relu_forward": ("o1", "o2"), "relu_backward": ("o1", "o2"),
            "sigmoid_forward": ("o1", "o2"), "sigmoid_backward": ("o1", "o2"),
            "affine_forward": ("o1", "o2"), "affine_backward": ("dx1", "dx2"),
            "softmax_cross_entropy": ("g1", "g2")}
    for name, (n1, n2) in outs.items():
        a, b = cases[name]
        a(), b()
        assert cell(a, n1) is not cell(b, n2)
        np.testing.assert_allclose(cell(a, n1), cell(b, n2), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    x, t, W1, b1, W2, b2 = bench._data(5, np.float64)
    import fastbp
    net = fastbp.TwoLayerNet(784, 50, 10, dtype=np.float64, seed=0)
    for k, v in zip(("W1", "b1", "W2", "b2"), (W1, b1, W2, b2)):
        net.params[k][...] = v
    from fastbp.baseline import TwoLayerNet as BookNet
    ref = BookNet({"W1": W1.copy(), "b1": b1.copy(), "W2": W2.copy(), "b2": b2.copy()})
    assert ref.train_step(x, t, 0.1) == pytest.approx(net.train_step(x, t, 0.1), rel=1e-6)
    for k in ("W1", "b1", "W2", "b2"):
        np.testing.assert_allclose(ref.params[k], net.params[k], rtol=1e-9, atol=1e-12)


def test_cli_bench_prints_table_and_writes_plot(tmp_path, capsys):
    png = tmp_path / "speedup.png"
    assert main(["bench", "--batch-sizes", "1,4", "--repeat", "1", "--only",
                 "relu_forward,train_step", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("fastbp bench: float32, Numba threads")
    rows = [ln.split() for ln in lines if ln.startswith(("relu_forward", "train_step"))]
    assert [(r[0], r[1]) for r in rows] == [("relu_forward", "1"), ("relu_forward", "4"),
                                            ("train_step", "1"), ("train_step", "4")]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in out


@pytest.mark.parametrize("argv", [["bench", "--batch-sizes", "0"], ["bench", "--batch-sizes", "a"],
                                  ["bench", "--dtype", "int8"]])
def test_cli_bench_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_cli_bench_unknown_name(capsys):
    assert main(["bench", "--batch-sizes", "1", "--only", "nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


# -- benchmarks/ helpers: ch06_scripts.py's timer, dashboard.py (no browser needed) -------------

def _benchmark_module(name):
    """``benchmarks/<name>.py`` loaded as a module (the folder is not a package)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"fastbp_bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dashboard():
    return _benchmark_module("dashboard")


def test_ch06_gemm_share_times_numpy_dot(tmp_path):
    # The timer --gemm-share loads through sitecustomize: np.dot, as the book's layers call
    # it, still multiplies and its time is written at exit.
    import os
    import subprocess
    import sys
    (tmp_path / "sitecustomize.py").write_text(_benchmark_module("ch06_scripts").DOT_TIMER)
    record = tmp_path / "dot_seconds"
    code = ("import numpy as np; a = np.arange(90000.0).reshape(300, 300); "
            "assert np.dot(a, np.eye(300))[7, 9] == a[7, 9]; np.dot(a, a)")
    env = dict(os.environ, PYTHONPATH=str(tmp_path), CH06_DOT_TIME=str(record))
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert float(record.read_text()) > 0


ASV_HEAD = """<html><head>
<script src="https://code.jquery.com/jquery-3.3.1.min.js" integrity="sha256-Fg" crossorigin="anonymous" onerror="js_load_failure()"></script>
<script src="https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js" integrity="sha512-eO" crossorigin="anonymous" referrerpolicy="no-referrer" onerror="js_load_failure()"></script>
<script language="javascript" type="text/javascript" src="jquery.flot.axislabels.js"></script>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css" integrity="sha256-6V" crossorigin="anonymous">
<link rel="alternate" type="application/atom+xml" title="Regressions" href="regressions.xml"/>
</head><body><a href="http://github.com/airspeed-velocity/asv/">asv</a></body></html>
"""


def _site(dash, tmp_path, page):
    """A vendor cache holding every mapped library and an html folder with `page`."""
    vendor, html = tmp_path / "vendor-cache", tmp_path / "html"
    vendor.mkdir()
    html.mkdir()
    for name in set(dash.VENDOR_MAP.values()):
        (vendor / name).write_text(f"/* {name} */")
    (html / "index.html").write_text(page)
    return vendor, html


def test_dashboard_make_offline_points_cdn_tags_at_vendor_copies(tmp_path):
    dash = _dashboard()
    vendor, html = _site(dash, tmp_path, ASV_HEAD)
    assert dash.make_offline(html, vendor) == 3
    page = (html / "index.html").read_text()
    assert 'src="vendor/jquery-3.3.1.min.js"' in page
    assert 'src="vendor/jquery.flot-0.8.3.min.js"' in page
    assert 'href="vendor/bootstrap-3.1.0.min.css"' in page
    assert "integrity=" not in page and "https://" not in page
    assert 'href="http://github.com/airspeed-velocity/asv/"' in page  # links stay links
    assert 'href="regressions.xml"' in page and 'src="jquery.flot.axislabels.js"' in page
    assert sorted(p.name for p in (html / "vendor").iterdir()) == sorted(set(dash.VENDOR_MAP.values()))
    assert dash.make_offline(html, vendor) == 0  # idempotent


def test_dashboard_make_offline_rejects_an_unknown_cdn_file(tmp_path):
    dash = _dashboard()
    vendor, html = _site(dash, tmp_path,
                         '<script src="https://cdn.example/new-lib.min.js"></script>')
    with pytest.raises(SystemExit, match="new-lib.min.js"):
        dash.make_offline(html, vendor)


def test_dashboard_check_plot():
    dash = _dashboard()
    xs = [1.0, 8.0, 100.0]
    good = {"ready": True, "xlabel": "batch_size", "xmode": "categories",
            "xticks": ["1", "8", "100"], "coloured": 5000,
            "series": [{"label": "dtype-float32", "n": 3, "x": ["1", "8", "100"], "y": [5, 2, 1]}]}
    assert dash.check_plot(good, xs) == []
    assert "not drawn" in dash.check_plot({"ready": False, "why": "no flot plot"}, xs)[0]
    assert dash.check_plot(None, xs)
    assert dash.check_plot(dict(good, series=[]), xs) == ["the plot has no series with data"]
    short = dict(good, series=[dict(good["series"][0], n=2, x=["1", "8"], y=[5, 2])])
    assert "has points at" in dash.check_plot(short, xs)[0]
    assert "not batch_size" in dash.check_plot(dict(good, xlabel="commits"), xs)[0]
    assert "coloured pixels" in dash.check_plot(dict(good, coloured=3), xs)[0]
    assert "x-axis ticks" in dash.check_plot(dict(good, xticks=["1", "8"]), xs)[0]
