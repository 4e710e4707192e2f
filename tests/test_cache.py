"""Numba's disk cache unusable (no writable folder, a full disk, an unwritable NUMBA_CACHE_DIR):
fastbp still imports and trains, compiling in memory, and warns once (fastbp.kernels._cache).

Each case runs in a child process with an empty cache folder, so it compiles for real. Root
ignores permission bits, so "no writable folder" is made where Numba checks it (the
locators' ``ensure_cache_path`` raising ``PermissionError``); "full" is a real write error:
the child lowers its file-size limit (``RLIMIT_FSIZE``) so every cache write fails with
``EFBIG``, as ``ENOSPC`` would.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import COMPILE_RECORDER, compiled_only

pytestmark = compiled_only

# Two kernels (a twin pair and a BLAS product), compiled in the child and checked there
# against NumPy; kept small so that each child's compilation takes seconds.
STEP = textwrap.dedent("""
    import json, warnings
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        import numpy as np
        import fastbp
        from fastbp import kernels as K
        from fastbp.kernels._cache import CacheWarning
        rng = np.random.default_rng(0)
        x = rng.standard_normal((64, 300)).astype(np.float32)
        W = rng.standard_normal((300, 40)).astype(np.float32)
        b = rng.standard_normal(40).astype(np.float32)
        out = np.empty((64, 40), np.float32)
        ok = []
        for _ in range(2):  # the second call runs what the first compiled
            K.affine_forward(x, W, b, out)
            ok.append(bool(np.allclose(out, x.astype(np.float64) @ W + b, rtol=1e-4, atol=1e-3)))
            r = np.empty_like(x)
            K.relu_forward(x, r)
            ok.append(bool((r == np.maximum(x, 0)).all()))
    ours = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    print(json.dumps({"ok": ok, "warnings": ours}))
""")


def _run(prelude, cache_dir):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(prelude) + STEP], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ok"] == [True] * 4
    return got["warnings"]


def test_working_cache_gives_no_warning(tmp_path):
    assert _run("", tmp_path / "cache") == []
    assert list((tmp_path / "cache").rglob("*.nbi"))  # it was used


def test_no_writable_cache_folder_compiles_in_memory(tmp_path):
    prelude = """
        from numba.core import caching
        def refuse(self):
            raise PermissionError(13, "Permission denied", self.get_cache_path())
        caching._CacheLocator.ensure_cache_path = refuse
    """
    warned = _run(prelude, tmp_path / "cache")
    assert len(warned) == 1
    assert "no writable cache folder" in warned[0]
    assert "set NUMBA_CACHE_DIR to a writable folder" in warned[0]  # the fix is named


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_full_disk_compiles_in_memory(tmp_path):
    prelude = """
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    """
    cache = tmp_path / "cache"
    warned = _run(prelude, cache)
    assert len(warned) == 1
    assert "could not write its cache" in warned[0]
    # Nothing usable was left behind: no index file has any content.
    assert all(p.stat().st_size == 0 for p in cache.rglob("*.nbi"))


def test_unwritable_numba_cache_dir_is_reported(tmp_path):
    """NUMBA_CACHE_DIR below a regular file can never be created (not even by root): Numba
    moves on to another folder silently; fastbp says so once."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    warned = _run("", blocker / "cache")
    assert len(warned) == 1
    assert f"NUMBA_CACHE_DIR={blocker / 'cache'} is not writable" in warned[0]


def test_other_libraries_keep_numbas_behaviour(tmp_path):
    """Only fastbp's functions fall back: a user's cache=True function still gets Numba's
    own error when no folder is writable."""
    (tmp_path / "usermod.py").write_text("from numba import njit\n\n\n"
                                         "def plus_one(v):\n    return v + 1\n")
    code = textwrap.dedent("""
        from numba.core import caching
        def refuse(self):
            raise PermissionError(13, "Permission denied", self.get_cache_path())
        caching._CacheLocator.ensure_cache_path = refuse
        import fastbp
        from numba import njit
        import usermod
        try:
            njit(cache=True)(usermod.plus_one)
        except RuntimeError as e:
            print("numba:", e)
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "c"), PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "numba: cannot cache function" in out.stdout


TWIN_CALLS = COMPILE_RECORDER + textwrap.dedent("""
    import gc, json
    import numpy as np
    from fastbp.kernels import adam_update, relu_forward
    from fastbp.kernels.optimizers import _adam_run
    gc.set_threshold(1)  # rebuilt objects are collected at once
    q = np.ones(10, np.float64)
    _adam_run((q, q.copy(), q * 0, q * 0, 1e-3, 0.9, 0.999, 0.0), 10, 10 ** 9)  # a runner alone
    for dtype in (np.float32, np.float64):
        p = np.ones(3000, dtype); g = p.copy(); m = np.zeros_like(p); v = np.zeros_like(p)
        for minimum in (None, 1, 10 ** 9):
            adam_update(p, g, m, v, 1e-3, 0.9, 0.999, 0.0, minimum)
        relu_forward(p, g)
    print(json.dumps(compiled))
""")


def test_twin_dispatch_is_cached_across_processes(tmp_path):
    """Kernels that choose between twins (``_dispatch.twin_runner``) stay cacheable, and so
    does a runner called on its own: the first process compiles them (so the recorder
    works), a second process with the same calls compiles nothing. (A runner called as a
    non-inlined overload with the twins as arguments made every caller uncacheable; a
    closure over the twins missed its own cache in every new process.)"""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", TWIN_CALLS], env=env, capture_output=True,
                             text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert any(name.startswith("_pick__optimizers__") for name in runs[0])
    assert runs[1] == []


def test_index_that_cannot_be_saved_again_is_dropped(tmp_path):
    """An index whose old entries no longer pickle (ReferenceError, as the stale index of the
    unreleased inlined run_twins did) is removed and the new entry saved: no error, no
    warning."""
    prelude = """
        from numba.core import caching
        original = caching.IndexDataCacheFile._save_index
        failed = []
        def save_index(self, overloads):
            if not failed:
                failed.append(self._index_path)
                raise ReferenceError("underlying object has vanished")
            return original(self, overloads)
        caching.IndexDataCacheFile._save_index = save_index
    """
    cache = tmp_path / "cache"
    assert _run(prelude, cache) == []
    assert all(p.stat().st_size > 0 for p in cache.rglob("*.nbi"))
