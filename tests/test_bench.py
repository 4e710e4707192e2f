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
    ref = bench._NumpyNet(W1.copy(), b1.copy(), W2.copy(), b2.copy())
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
