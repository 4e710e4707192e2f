"""Regenerate docs/performance.md from one run: the framework comparison and the asv results.

    flock /tmp/helpers/bench.lock .venv/bin/python scripts/perf_page.py        # about 10 minutes
    .venv/bin/python scripts/perf_page.py --rounds 3 --models twolayer          # a quicker page
    .venv/bin/python scripts/perf_page.py --from-json runs/perf                  # re-render only

What it does, in one process tree:

1. probes the machine in a child process started without ``OPENBLAS_CORETYPE`` and
   ``OPENBLAS_L2_SIZE`` (those pin OpenBLAS's kernel choice; a forced ``Haswell`` skips
   the AVX-512 kernels): CPU model and vector flags, cores, library versions, Numba's
   threading layer and thread count, and every BLAS library with the kernel OpenBLAS picked
   (threadpoolctl's ``architecture``) and its thread count;
2. runs ``benchmarks/compare_frameworks.py`` (which removes the same two variables for its
   workers and reports each worker's BLAS) once per model and per input data: MNIST-like
   (81 % zero pixels, which fastbp's batch <= 24 path skips) and dense (no zeros);
3. reads the newest asv result file under ``.asv/results`` (it does not run asv: a full
   ``asv run`` takes about 20 minutes; its command is printed on the page) and turns its
   ``track_speedup_*`` values, or the NumPy / fastbp ratio of its ``time_*`` values, into a
   speed-up table;
4. writes docs/performance.md (and, with ``--keep-json DIR``, the raw JSON of every run).

The page says when and how it was made. Other jobs on the machine disturb the figures: run
it on a quiet machine, under the benchmark lock when others measure too.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPARE = ROOT / "benchmarks" / "compare_frameworks.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
from blas_env import OPENBLAS_PINS, unpinned_env  # noqa: E402  (the benchmarks' one home)

DATA_KINDS = ("mnist-like", "dense")
DATA_TITLES = {"mnist-like": "MNIST-like (81 % zeros)", "dense": "dense"}
#: CPU flags worth naming for this code (vector widths and FMA).
FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
         "avx512_bf16", "amx_tile", "asimd", "sve")

PROBE = r"""
import json, os, platform, sys
info = {"python": platform.python_version(), "platform": platform.platform(),
        "machine": platform.machine(), "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
cpu, flags = platform.processor() or "unknown", []
try:
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and cpu in ("unknown", "", platform.machine()):
                cpu = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = value.split()
except OSError:
    pass
info["cpu"], info["flags"] = cpu, flags
import numpy as np, scipy, numba
import fastbp
from fastbp import kernels
x = np.ones(1 << 20, np.float32)
kernels.relu_forward(x, x)  # starts Numba's pool, so the threading layer is known
info["versions"] = {"fastbp": fastbp.__version__, "numpy": np.__version__,
                    "scipy": scipy.__version__, "numba": numba.__version__}
info["numba_threads"] = numba.get_num_threads()
info["threading_layer"] = numba.threading_layer()
from threadpoolctl import threadpool_info
info["blas"] = [{"api": i.get("internal_api"), "version": i.get("version"),
                 "kernel": i.get("architecture"), "threads": i.get("num_threads"),
                 "library": os.path.basename(i.get("filepath", ""))}
                for i in threadpool_info() if i.get("user_api") == "blas"]
print(json.dumps(info))
"""


def probe_machine() -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env=unpinned_env(), check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    info = json.loads(out.strip().splitlines()[-1])
    info["pins_unset"] = {k: os.environ[k] for k in OPENBLAS_PINS if k in os.environ}
    return info


def run_comparison(model: str, data: str, args, out_dir: Path) -> dict:
    path = out_dir / f"compare-{model}-{data}.json"
    cmd = [sys.executable, str(COMPARE), "--model", model, "--data", data,
           "--rounds", str(args.rounds), "--batches", *map(str, args.batches),
           "--json", str(path)]
    if args.frameworks:
        cmd += ["--frameworks", *args.frameworks]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, env=unpinned_env(), cwd=ROOT)
    return json.loads(path.read_text())


# -- asv ---------------------------------------------------------------------------------------

def newest_asv_result(results_dir: Path) -> tuple[dict, dict] | None:
    """(result file, machine.json) of the newest asv result under `results_dir`, or None."""
    best = None
    for path in results_dir.glob("*/*.json"):
        if path.name in ("machine.json", "benchmarks.json"):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if "results" in data and (best is None or data.get("date", 0) > best[0].get("date", 0)):
            machine = path.parent / "machine.json"
            best = (data, json.loads(machine.read_text()) if machine.exists() else {})
    return best


def _unquote(v: str):
    return v.strip("'\"")


def asv_speedups(result: dict) -> dict:
    """``{(benchmark, dtype): {batch: speed-up}}`` from an asv result file: the values of
    ``track_speedup_*`` benchmarks, and NumPy time / fastbp time of ``time_*`` benchmarks
    parameterized by ``impl``."""
    columns = result.get("result_columns", ["result", "params"])
    table: dict = {}
    for name, row in result["results"].items():
        cell = dict(zip(columns, row))
        values, params = cell.get("result"), cell.get("params") or []
        if values is None:
            continue
        names = [list(map(_unquote, p)) for p in params]
        combos = list(itertools.product(*names))
        short = name.split(".", 1)[-1] if "." in name else name
        if ".track_speedup_" in name:
            for combo, value in zip(combos, values):
                if value is None:
                    continue
                batch = combo[0]
                dtype = next((c for c in combo[1:] if c.startswith("float")), "")
                key = (short.replace("track_speedup_", "").split(".")[-1], dtype)
                table.setdefault(key, {})[batch] = value
        elif ".time_" in name and any("fastbp" in p and "numpy" in p for p in names):
            impl_axis = next(i for i, p in enumerate(names) if "fastbp" in p and "numpy" in p)
            by = {}
            for combo, value in zip(combos, values):
                if value is not None:
                    by[combo] = value
            for combo, value in by.items():
                if combo[impl_axis] != "fastbp":
                    continue
                other = tuple("numpy" if i == impl_axis else c for i, c in enumerate(combo))
                if other not in by:
                    continue
                rest = [c for i, c in enumerate(combo) if i not in (0, impl_axis)]
                dtype = next((c for c in rest if c.startswith("float")), "")
                label = " ".join([short.split(".")[-1].replace("time_", "")]
                                 + [c for c in rest if not c.startswith("float")])
                table.setdefault((label, dtype), {})[combo[0]] = by[other] / value
    return table


# -- rendering ---------------------------------------------------------------------------------

def _us(seconds: list) -> tuple[float, float, float] | None:
    if not seconds:
        return None
    return _median(seconds) * 1e6, min(seconds) * 1e6, max(seconds) * 1e6


def _ratio(v: float) -> str:
    """Three significant digits at most: 0.92, 14.5, 109."""
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _fmt(v: float) -> str:
    return f"{v:,.1f}".replace(",", " ") if v < 1000 else f"{v:,.0f}".replace(",", " ")


def _median(values: list) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def paired_ratios(other: list, mine: list, gemm: bool) -> list[float]:
    """Each round's own speed-up (the contender's slice / fastbp's, seconds apart; for the
    GEMMs fastbp's / theirs), or [] when the rounds do not pair up."""
    if not other or len(other) != len(mine):
        return []
    return [m / o if gemm else o / m for o, m in zip(other, mine)]


#: A run whose bare-GEMM slices differ by more than this factor within one batch size ran on
#: a machine whose speed moved: other work on the cores, or (on the 2-vCPU VM these pages
#: were made on) the slow state of OpenBLAS's two threads
#: (docs/decisions/dropped-one-blas-thread-small-gemms.md).
BUSY_SPREAD = 1.5


def busy_batches(run: dict) -> list[int]:
    """Batch sizes at which the bare GEMMs' slice medians spread more than BUSY_SPREAD."""
    out = []
    for n in run["batches"]:
        gemm = run["seconds"].get("gemm", {}).get(str(n), [])
        if gemm and max(gemm) > BUSY_SPREAD * min(gemm):
            out.append(n)
    return out


def comparison_table(runs: dict) -> list[str]:
    """One model's runs (``{data: compare_frameworks JSON}``) as a Markdown table with a pair
    of columns per data kind: the time (median and range of the slice medians) and fastbp's
    speed-up (median and range of the per-round ratios)."""
    kinds = [k for k in DATA_KINDS if k in runs]
    first = runs[kinds[0]]
    names, fws = first["names"], first["frameworks"]
    head = ["batch", "contender"]
    for k in kinds:
        head += [f"{DATA_TITLES[k]}: us", "fastbp speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (2 * len(kinds))]
    for n in first["batches"]:
        for f in fws:
            row = [str(n), names.get(f, f)]
            for k in kinds:
                run = runs[k]
                mine_s = run["seconds"].get("fastbp", {}).get(str(n), [])
                other_s = run["seconds"].get(f, {}).get(str(n), [])
                cell = _us(other_s)
                if f in run["absent"] or cell is None:
                    row += [run["absent"].get(f, "missing"), ""]
                    continue
                row.append(_fmt(cell[0]))
                ratios = [] if f == "fastbp" else paired_ratios(other_s, mine_s, f == "gemm")
                if not ratios:
                    row.append("")
                    continue
                text = f"{_ratio(_median(ratios))}x ({_ratio(min(ratios))}-{_ratio(max(ratios))})"
                row.append(f"fastbp at {text} of it" if f == "gemm" else f"**{text}**")
            lines.append("| " + " | ".join(row) + " |")
    busy = sorted({n for k in kinds for n in busy_batches(runs[k])})
    if busy:
        lines += ["", f"**Unsteady machine:** at batch {', '.join(map(str, busy))} the bare "
                  f"GEMMs' slices differed by more than {BUSY_SPREAD}x between rounds (other "
                  "work on the cores, or the slow state of OpenBLAS's two threads on this "
                  "VM: [record](decisions/dropped-one-blas-thread-small-gemms.md)), so the "
                  "ratios of those rows moved with it: read their min-max, not only the "
                  "median."]
    return lines


def asv_table(table: dict) -> list[str]:
    batches = sorted({b for row in table.values() for b in row}, key=lambda b: float(b))
    lines = ["| benchmark | dtype | " + " | ".join(batches) + " |",
             "|---|---|" + "---:|" * len(batches)]
    for (label, dtype), row in sorted(table.items()):
        cells = [f"{row[b]:.1f}" if b in row else "" for b in batches]
        lines.append(f"| {label} | {dtype} | " + " | ".join(cells) + " |")
    return lines


def render(machine: dict, comparisons: dict, asv: tuple[dict, dict] | None, args,
           started: str, seconds: float) -> str:
    flags = [f for f in FLAGS if f in machine.get("flags", [])]
    v = machine["versions"]
    out = [
        "# Performance",
        "",
        "<!-- Generated by scripts/perf_page.py: edit that script, not this page. -->",
        "",
        f"Generated {started} UTC in {seconds / 60:.0f} minutes by",
        "`" + " ".join(["python scripts/perf_page.py", *args.argv]) + "`",
        "(one run: every figure below comes from it, except the asv table, which is read from",
        "the newest asv result file). Where the figures come from, and how to read them: the",
        "[performance guide](guides/performance.md) and the decision record",
        "[How fastbp's comparisons are measured](decisions/benchmark-method.md).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {machine['cpu']} ({machine['machine']}) |",
        f"| cores | {machine['cores']} ({machine.get('usable_cores')} usable by this process) |",
        f"| vector flags | {', '.join(flags) or 'none of ' + ', '.join(FLAGS)} |",
        f"| system | {machine['platform']} |",
        f"| Python, NumPy, SciPy, Numba | {machine['python']}, {v['numpy']}, {v['scipy']}, "
        f"{v['numba']} |",
        f"| fastbp | {v['fastbp']} |",
        f"| Numba threading layer, threads | {machine['threading_layer']}, "
        f"{machine['numba_threads']} |",
    ]
    for b in machine["blas"]:
        out.append(f"| BLAS `{b['library']}` | {b['api']} {b['version']}, kernel "
                   f"**{b['kernel']}**, {b['threads']} threads |")
    pins = machine.get("pins_unset") or {}
    out += ["", ("The environment set " + ", ".join(f"`{k}={val}`" for k, val in pins.items())
                 + ": unset for every benchmark process, so OpenBLAS chose its own kernel "
                   "(above).") if pins else
            "No `OPENBLAS_CORETYPE` / `OPENBLAS_L2_SIZE` was set: OpenBLAS chose its own kernel."]
    if any(busy_batches(run) for runs in comparisons.values() for run in runs.values()):
        out += ["", "> **The machine's speed moved during this run** (see the notes under the "
                "tables): the rows named there are less certain than the others."]
    for model, runs in comparisons.items():
        any_run = next(iter(runs.values()))
        out += ["", f"## {any_run['title']}", "",
                f"Median microseconds per step over {any_run['rounds']} interleaved slices of "
                f"{any_run['slice']} s per contender; speed-up: the "
                "median (min-max) over rounds of each round's contender time / fastbp time. "
                "Threads: fastbp and NumPy as the BLAS lines "
                "below say, PyTorch set to 2, JAX its own pool.", ""]
        out += comparison_table(runs)
        blas = any_run.get("blas", {})
        if blas:
            out += ["", "BLAS in each contender's process:", ""]
            out += [f"- {f}: " + "; ".join(lines) for f, lines in blas.items()]
    out += ["", "## asv: speed-up over the book's NumPy code, per batch size", ""]
    if asv is None:
        out += ["No asv results found (`.asv/results`). Run the suite first:", ""]
    else:
        result, asv_machine = asv
        when = _dt.datetime.fromtimestamp(result.get("date", 0) / 1000, _dt.timezone.utc)
        out += [f"From the asv result of commit `{result.get('commit_hash', '?')[:8]}` "
                f"({when:%Y-%m-%d %H:%M} UTC, machine `{asv_machine.get('machine', '?')}`: "
                f"{asv_machine.get('cpu', '?')}, {asv_machine.get('num_cpu', '?')} CPUs). "
                "NumPy time / fastbp time, 1 thread per side unless `FASTBP_BENCH_THREADS` "
                "was set; inputs: the test images when found, else MNIST-like random images.",
                ""]
        table = asv_speedups(result)
        out += asv_table(table) if table else ["(the result file holds no speed-up benchmark)"]
        out += [""]
    out += ["```bash",
            "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\",
            "    .venv/bin/asv run --python=same --set-commit-hash \"$(git rev-parse HEAD)\"   # ~20 min",
            ".venv/bin/python benchmarks/dashboard.py                                     # docs/asv-speedup.png",
            "```", "",
            "![asv dashboard: train-step speed-up over NumPy against batch size](asv-speedup.png)",
            ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds per comparison")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 100, 10000])
    p.add_argument("--models", nargs="+", default=["twolayer", "mlp4"],
                   help="compare_frameworks.py --model values (default twolayer mlp4)")
    p.add_argument("--data", nargs="+", choices=DATA_KINDS, default=list(DATA_KINDS))
    p.add_argument("--frameworks", nargs="+", help="default: all of compare_frameworks.py's")
    p.add_argument("--asv-results", type=Path, default=ROOT / ".asv" / "results")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    p.add_argument("--keep-json", type=Path, metavar="DIR",
                   help="keep the raw JSON of the run in DIR (re-render with --from-json)")
    p.add_argument("--from-json", type=Path, metavar="DIR",
                   help="render from a kept run instead of measuring")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    started = _dt.datetime.now(_dt.timezone.utc)
    if args.from_json:
        kept = json.loads((args.from_json / "run.json").read_text())
        machine, comparisons = kept["machine"], kept["comparisons"]
        started_text, seconds = kept["started"], kept["seconds"]
        args.argv = kept.get("argv", args.argv)  # the command that measured
    else:
        machine = probe_machine()
        print(f"CPU {machine['cpu']}; BLAS kernels: "
              + ", ".join(f"{b['library']} {b['kernel']}" for b in machine["blas"]), flush=True)
        comparisons = {}
        with tempfile.TemporaryDirectory() as tmp:
            out_dir = args.keep_json or Path(tmp)
            out_dir.mkdir(parents=True, exist_ok=True)
            for model in args.models:
                comparisons[model] = {d: run_comparison(model, d, args, out_dir) for d in args.data}
            started_text = f"{started:%Y-%m-%d %H:%M}"
            seconds = (_dt.datetime.now(_dt.timezone.utc) - started).total_seconds()
            if args.keep_json:
                (out_dir / "run.json").write_text(json.dumps(
                    {"machine": machine, "comparisons": comparisons, "started": started_text,
                     "seconds": seconds, "argv": args.argv}, indent=1))
    page = render(machine, comparisons, newest_asv_result(args.asv_results), args,
                  started_text, seconds)
    args.out.write_text(page)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
