"""The first training step compiles only the code path it runs (issue 15 item 7,
docs/decisions/cold-start.md), and the path flags change no result."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import COMPILE_RECORDER, compiled_only
from fastbp.kernels import network as KN

CHILD = COMPILE_RECORDER + textwrap.dedent("""
    import json, sys
    import numpy as np
    import fastbp
    n = int(sys.argv[1])
    rng = np.random.default_rng(0)
    net = fastbp.TwoLayerNet(784, 30, 10, dtype=np.float32, seed=0)
    x = rng.random((n, 784), dtype=np.float32)
    t = rng.integers(0, 10, n)
    for _ in range(2):  # the checked first step, then the fast path
        net.train_step(x, t, 0.1)
    if len(sys.argv) > 2:  # and the fused evaluation, on as many rows as its argument
        from fastbp.train import accuracy
        rows = int(sys.argv[2])
        accuracy(net, rng.random((rows, 784), dtype=np.float32), rng.integers(0, 10, rows))
    print(json.dumps(sorted(set(compiled))))
""")


def _compiled(n, tmp_path, eval_rows=None):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    args = [str(n)] + ([] if eval_rows is None else [str(eval_rows)])
    out = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True,
                         text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@compiled_only
def test_batch_100_step_compiles_neither_small_batch_nor_parallel_code(tmp_path):
    """Nor does the evaluation (its row passes stay serial at any size), and a ReLU network
    compiles no sigmoid, tanh or softmax-inference code."""
    names = _compiled(100, tmp_path, eval_rows=2 * KN.PARALLEL_MIN_ROWS)
    assert "two_layer_step_paths" in names  # it did compile, cold
    assert "count_correct" in names
    parallel = sorted(q for q in names if q.endswith("__parallel"))
    assert parallel == []
    assert not names & {"_add_bias_sigmoid", "_add_bias_softmax", "sigmoid_scalar"}
    # neither the listed products (the step's small-batch path, and the evaluation runs
    # every chunk through BLAS), nor the gradients-only branch (lr == 0: fill_zero and
    # the dW2 = h.T @ dy loops)
    for never in ("_list_nonzeros", "_update_W2_small", "scatter_rows", "fill_zero",
                  "_matmul_body__serial"):
        assert never not in names
    # the layout check is an intrinsic, no function of its own
    assert not [q for q in names if "require_c_contiguous" in q]


@pytest.mark.parametrize("n", [1, KN.SMALL_BATCH, KN.SMALL_BATCH + 1, 100,
                               KN.PARALLEL_MIN_ROWS - 1, KN.PARALLEL_MIN_ROWS])
@pytest.mark.parametrize("dtype", [np.float32])  # the paths do not depend on the dtype
def test_path_arguments_give_the_bits_of_the_run_time_choice(rng, n, dtype):
    """What TwoLayerNet passes for its batch size (fastbp.network._training_paths), and each
    argument alone where it keeps the path that runs: the same weights and loss, bit for
    bit, as the plain kernel choosing at run time."""
    from fastbp.network import _training_paths

    d, H, C = 40, 12, 5
    x = (rng.random((n, d)) * (rng.random((n, d)) < 0.5)).astype(dtype)
    t = rng.integers(0, C, n)
    params = [rng.standard_normal(s).astype(dtype) * 0.3 for s in ((d, H), (H,), (H, C), (C,))]

    def run(kernel, *flags):
        W1, b1, W2, b2 = (p.copy() for p in params)
        work = [np.empty(s, dtype) for s in ((n, H), (n, C), (n, C), (n, H), (d, H), (H,),
                                            (H, C), (C,))] + [np.empty(n)]
        loss = kernel(x, t, W1, b1, W2, b2, 0.1, *work, *flags)
        return loss, W1, b1, W2, b2

    want = run(KN.train_step_labels)
    variants = [(None, True, True), (True, True, None)]
    if n > KN.SMALL_BATCH:
        variants += [(True, None, True), _training_paths(n)]
    for flags in variants:
        got = run(KN.train_step_labels_paths, *flags)
        assert got[0] == want[0], flags
        for a, b in zip(got[1:], want[1:]):
            np.testing.assert_array_equal(a, b, err_msg=str(flags))


def test_training_paths_leave_out_only_untaken_paths():
    from fastbp.network import _training_paths

    assert _training_paths(1) == _training_paths(KN.SMALL_BATCH) == ()  # the plain kernels
    assert _training_paths(KN.SMALL_BATCH + 1) == (None, None, None)
    assert _training_paths(KN.PARALLEL_MIN_ROWS - 1) == (None, None, None)
    assert _training_paths(KN.PARALLEL_MIN_ROWS) == (None, None, True)  # parallel kept
