"""The README's and the guides' code runs, their links resolve, and the performance page
renders (scripts/perf_page.py, from a recorded run: no timing here)."""
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Documents whose ```python blocks must run as written (fast, no data download).
RUNNABLE = ["README.md", "docs/guides/kernels.md", "docs/guides/threads.md"]


def _python_blocks(path):
    return re.findall(r"```python\n(.*?)```", (ROOT / path).read_text(), re.S)


@pytest.mark.parametrize("path", RUNNABLE)
def test_python_blocks_run(path, tmp_path):
    """Each document's blocks in order, in one fresh process (they may set thread counts)."""
    blocks = _python_blocks(path)
    assert blocks, f"{path} has no python block"
    script = tmp_path / "blocks.py"
    script.write_text("\n\n".join(blocks))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"{path}:\n{proc.stderr[-3000:]}"


def test_readme_book_example_prints_what_it_says():
    """The comments in the README's MulLayer example are the book's output."""
    block = next(b for b in _python_blocks("README.md") if "MulLayer" in b)
    expected = re.findall(r"# (price: \S+)", block)
    assert expected == ["price: 220"], block


def _links(path):
    text = (ROOT / path).read_text()
    return [m for m in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
            if not re.match(r"[a-z]+:", m)]


@pytest.mark.parametrize("path", ["README.md", "CHANGELOG.md"])
def test_relative_links_resolve(path):
    missing = [link for link in _links(path) if not (ROOT / link).exists()]
    assert not missing, f"{path} links to missing files: {missing}"


def test_readme_keeps_the_test_command():
    """.ci/run runs scripts/test.sh; the README must name the same command."""
    assert "bash scripts/test.sh" in (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


# -- scripts/perf_page.py --------------------------------------------------------------------

def _perf_page():
    spec = importlib.util.spec_from_file_location("perf_page", ROOT / "scripts" / "perf_page.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["perf_page"] = module
    spec.loader.exec_module(module)
    return module


def _comparison(data, fastbp_s, numpy_s):
    return {"model": "twolayer", "title": "TwoLayerNet 784-50-10", "data": data, "rounds": 3,
            "slice": 0.25, "batches": [1, 100], "frameworks": ["fastbp", "numpy", "gemm", "jax"],
            "names": {"fastbp": "fastbp", "numpy": "NumPy (book)", "gemm": "2 GEMMs alone",
                      "jax": "JAX jit"},
            "absent": {"jax": "missing"},
            "blas": {"fastbp": ["openblas 0.3.31, kernel SkylakeX, 2 threads (libx.so)"]},
            "seconds": {"fastbp": {"1": [fastbp_s] * 3, "100": [1e-4, 2e-4, 3e-4]},
                        "numpy": {"1": [numpy_s] * 3, "100": [4e-4] * 3},
                        "gemm": {"1": [1e-5] * 3, "100": [1e-4] * 3},
                        "jax": {"1": [], "100": []}}}


def test_asv_speedups_from_track_and_time_benchmarks():
    pp = _perf_page()
    result = {"result_columns": ["result", "params"], "results": {
        "bench_train_step.Speedup.track_speedup_train_step": [
            [2.0, 3.0, None, 5.0], [["'1'", "'100'"], ["'float32'", "'float64'"]]],
        "bench_affine.Affine.time_forward": [
            [4.0, 1.0, 8.0, 2.0], [["1", "100"], ["'numpy'", "'fastbp'"]]],
    }}
    table = pp.asv_speedups(result)
    # asv flattens the results in itertools.product order of the parameters
    assert table[("train_step", "float32")] == {"1": 2.0}
    assert table[("train_step", "float64")] == {"1": 3.0, "100": 5.0}
    assert table[("forward", "")] == {"1": 4.0, "100": 4.0}


def test_perf_page_renders_sparse_and_dense_side_by_side(tmp_path):
    pp = _perf_page()
    machine = {"cpu": "Test CPU", "machine": "x86_64", "cores": 2, "usable_cores": 2,
               "flags": ["avx2", "fma", "avx512f"], "platform": "Linux", "python": "3.11",
               "versions": {"fastbp": "0.1.0", "numpy": "2.4", "scipy": "1.17",
                            "numba": "0.68"},
               "threading_layer": "tbb", "numba_threads": 2,
               "blas": [{"library": "libx.so", "api": "openblas", "version": "0.3.31",
                         "kernel": "SkylakeX", "threads": 2}],
               "pins_unset": {"OPENBLAS_CORETYPE": "Haswell"}}
    run = {"machine": machine, "started": "2026-12-01 12:00", "seconds": 600,
           "comparisons": {"twolayer": {"mnist-like": _comparison("mnist-like", 5e-6, 9e-5),
                                        "dense": _comparison("dense", 1e-5, 9e-5)}}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    out = tmp_path / "performance.md"
    assert pp.main(["--from-json", str(tmp_path), "--out", str(out),
                    "--asv-results", str(tmp_path / "none")]) == 0
    page = out.read_text()
    assert "kernel **SkylakeX**" in page and "avx2, fma, avx512f" in page
    assert "`OPENBLAS_CORETYPE=Haswell`: unset" in page
    assert "MNIST-like (81 % zeros): us" in page and "dense: us" in page
    row = next(line for line in page.splitlines() if line.startswith("| 1 | NumPy (book)"))
    assert "**18.0x (18.0-18.0)**" in row and "**9.00x (9.00-9.00)**" in row  # 90/5, 90/10
    assert "| 100 | fastbp | 200.0 |" in page                  # median of the slices, us
    assert "| 1 | JAX jit | missing |" in page
    assert "No asv results found" in page
    assert "Unsteady machine" not in page                  # the GEMM slices agree


def test_perf_page_names_the_rows_of_an_unsteady_machine():
    """Bare-GEMM slices more than BUSY_SPREAD apart at one batch size: the note under the
    table names that batch size and not the other."""
    pp = _perf_page()
    run = _comparison("mnist-like", 5e-6, 9e-5)
    run["seconds"]["gemm"]["100"] = [1e-4, 1e-4, 1e-4 * (pp.BUSY_SPREAD + 0.1)]
    assert pp.busy_batches(run) == [100]
    lines = "\n".join(pp.comparison_table({"mnist-like": run}))
    assert "**Unsteady machine:** at batch 100 the bare GEMMs'" in lines
