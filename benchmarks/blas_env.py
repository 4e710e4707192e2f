"""OpenBLAS's own kernel choice for benchmark runs: one home for unsetting the pins and for
reporting which BLAS a process loaded.

``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` force OpenBLAS's kernel choice; a forced
``Haswell`` skips the AVX-512 kernels of a newer CPU (measured on the development machine:
the batch-10 000 step went from 0.87x to 1.17x of JAX by that alone;
docs/decisions/benchmark-method.md). Benchmark scripts therefore run without them, and say
which kernel OpenBLAS picked. Tests and CI leave the environment as it is.

OpenBLAS reads the variables when its library loads, so :func:`unpin` must run before NumPy
is imported; child processes get :func:`unpinned_env`.
"""
from __future__ import annotations

import os
import re
import sys

#: Environment variables that pin OpenBLAS's kernel choice.
OPENBLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def unpinned_env(env: dict | None = None) -> dict:
    """A copy of `env` (default ``os.environ``) without the OpenBLAS pins."""
    return {k: v for k, v in (os.environ if env is None else env).items()
            if k not in OPENBLAS_PINS}


def unpin() -> dict:
    """Remove the pins from this process's environment; returns what was removed. Call it
    before NumPy is imported (it warns when NumPy already is: then the pins are in force)."""
    removed = {k: os.environ.pop(k) for k in OPENBLAS_PINS if k in os.environ}
    if removed and "numpy" in sys.modules:
        print(f"warning: {', '.join(removed)} removed after NumPy loaded OpenBLAS; they still "
              "apply to this process", file=sys.stderr)
    return removed


def blas_lines() -> list[str]:
    """The BLAS libraries loaded in this process, one line each: library, version, the
    kernel OpenBLAS chose (threadpoolctl's ``architecture``) and the thread count."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["(threadpoolctl not installed: BLAS unknown)"]
    lines = [f"{i.get('internal_api')} {i.get('version')}, kernel {i.get('architecture')}, "
             f"{i.get('num_threads')} threads ({os.path.basename(i.get('filepath', ''))})"
             for i in threadpool_info() if i.get("user_api") == "blas"]
    if "torch" in sys.modules:  # PyTorch links its BLAS statically: threadpoolctl misses it
        torch_blas = re.findall(r"BLAS_INFO=(\w+)", sys.modules["torch"].__config__.show())
        lines.append(f"torch's own {torch_blas[0] if torch_blas else 'unknown'} (linked in)")
    return lines or ["no BLAS library seen by threadpoolctl"]


def report(removed: dict | None = None, file=None) -> None:
    """Print what :func:`unpin` removed and :func:`blas_lines`."""
    file = file or sys.stdout
    if removed:
        print("running without " + ", ".join(f"{k}={v}" for k, v in removed.items())
              + " (OpenBLAS picks its own kernels)", file=file)
    for line in blas_lines():
        print(f"BLAS: {line}", file=file, flush=True)
