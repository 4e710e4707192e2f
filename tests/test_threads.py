"""fastbp.threads: the threading layer it picks and the thread-count control."""
import os
import subprocess
import sys
import textwrap

import numba
import pytest

import fastbp
from conftest import compiled_only

CHILD = textwrap.dedent("""
    import os, sys, json
    import numpy as np
    import fastbp, numba
    from fastbp import kernels
    x = np.ones(1 << 20, np.float32)
    kernels.relu_forward(x, x)  # large enough for the parallel twin: starts the pool
    print(json.dumps([numba.threading_layer(), os.environ.get("OMP_WAIT_POLICY")]))
""")


def _child(env_extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    import json
    return json.loads(out.stdout.strip().splitlines()[-1])


@compiled_only
def test_policy_picks_tbb_when_its_runtime_is_installed():
    import platform
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the tbb wheel is a dependency on x86-64 only")
    layer, wait = _child({})
    from fastbp.threads import _tbb_candidates
    tbb_wheel = any(os.path.exists(p) for p in _tbb_candidates())
    assert tbb_wheel, "the tbb wheel is a dependency on x86-64: its library must be there"
    # the pip wheel's library is not on the loader path of a virtualenv; fastbp loads it
    assert layer == "tbb"
    assert wait is None  # with tbb, fastbp leaves OpenMP's environment alone


@compiled_only
def test_omp_layer_gets_passive_waiting_unless_turned_off():
    layer, wait = _child({"NUMBA_THREADING_LAYER": "omp"})
    assert (layer, wait) == ("omp", "PASSIVE")
    layer, wait = _child({"NUMBA_THREADING_LAYER": "omp", "FASTBP_NO_ENV": "1"})
    assert (layer, wait) == ("omp", None)


@compiled_only
def test_user_choice_of_layer_and_wait_policy_is_kept():
    layer, wait = _child({"NUMBA_THREADING_LAYER": "workqueue", "OMP_WAIT_POLICY": "ACTIVE"})
    assert (layer, wait) == ("workqueue", "ACTIVE")


def test_set_num_threads_sets_numba_and_blas():
    from fastbp.threads import blas_threads

    top = numba.config.NUMBA_NUM_THREADS
    try:
        fastbp.set_num_threads(1)
        assert fastbp.get_num_threads() == 1
        assert set(blas_threads().values()) == {1}
    finally:
        fastbp.set_num_threads(top)
    assert set(blas_threads().values()) == {top}
    with pytest.raises(ValueError, match=f"between 1 and {top} .*the cores.*pass at most {top}"):
        fastbp.set_num_threads(top + 1)
    with pytest.raises(ValueError, match="between 1 and"):
        fastbp.set_num_threads(0)
    assert fastbp.get_num_threads() == top  # a rejected call changes nothing
    assert set(blas_threads().values()) == {top}
    with pytest.raises(TypeError, match="n must be an int"):
        fastbp.set_num_threads(1.0)


@pytest.mark.parametrize("platform, name, folder", [
    ("linux", "libtbb.so.12", os.path.join("P", "lib")),
    ("darwin", "libtbb.12.dylib", os.path.join("P", "lib")),
    ("win32", "tbb12.dll", os.path.join("P", "Library", "bin")),
])
def test_tbb_runtime_is_looked_for_under_each_platforms_name(platform, name, folder):
    """The names Numba itself loads (numba/np/ufunc/parallel.py), in the folders where PyPI's
    tbb wheel installs them: <prefix>/lib, or <prefix>/Library/bin on Windows."""
    from fastbp.threads import _tbb_candidates

    paths = _tbb_candidates(platform, ["P"])
    assert paths[0] == os.path.join(folder, name)
    assert all(os.path.basename(p) == name for p in paths)
