"""One training step in float32: fastbp vs plain NumPy, PyTorch, JAX and the bare GEMMs.

    python benchmarks/compare_frameworks.py               # TwoLayerNet; batches 1, 100, 10000
    python benchmarks/compare_frameworks.py --rounds 20 --batches 1 100
    python benchmarks/compare_frameworks.py --model mlp4  # MultiLayerNet 784-100x4-10, Adam
    python benchmarks/compare_frameworks.py --model convnet --batches 1 100 1000  # SimpleConvNet

Two networks (``--model``):

* ``twolayer`` (default): the book's ch. 5 TwoLayerNet 784-50-10, one SGD step (lr 0.1).
  fastbp ``TwoLayerNet.train_step``; the book's NumPy layers (``gradient`` + the update
  loop); PyTorch eager (``nn.Sequential``, ``cross_entropy``, ``optim.SGD``); a ``jax.jit``
  step; the two large GEMMs alone (``X @ W1``, ``X.T @ dH``).
* ``mlp4``: the book's ch. 6 MultiLayerNet 784-100-100-100-100-10 (ReLU), one Adam step
  (lr 0.001, betas 0.9 / 0.999, eps 1e-7 as the book). fastbp ``MultiLayerNet.train_step``
  with ``fastbp.optimizers.Adam``; the book's NumPy ``MultiLayerNet`` and ``Adam``
  (``fastbp.baseline``, shared with the asv suite); PyTorch eager (``nn.Sequential`` of
  ``Linear``/``ReLU``, ``cross_entropy``, ``optim.Adam``, whose eps is added to the
  bias-corrected ``sqrt(v)``, the book's to the uncorrected one: the same work, slightly
  different steps); one ``jax.jit`` function
  doing forward, gradient and Adam (written in ``jax.numpy`` with the book's arithmetic);
  and every matrix product of the step alone (5 forward, 5 weight gradients, 4 input
  gradients: 14 GEMMs).
* ``convnet``: the book's ch. 7 SimpleConvNet (conv 30 filters 5x5, ReLU, 2x2 max pool,
  Affine 4320-100, ReLU, Affine 100-10), one Adam step as for ``mlp4``. fastbp
  ``SimpleConvNet.train_step``; the book's own ``ch07/simple_convnet.py`` and
  ``common/optimizer.py`` Adam (im2col; imported from ``../shared/book-reference`` or
  ``$FASTBP_BOOK_REFERENCE``, "missing" without it; its im2col buffers are float64 as the
  book allocates them); PyTorch eager (``nn.Conv2d``, ``nn.MaxPool2d``, ``optim.Adam``); a
  ``jax.jit`` step (``lax.conv_general_dilated``, ``lax.reduce_window``, the book's Adam);
  and the five GEMMs of the affine layers alone.

Every framework runs in its own process (their thread pools disturb each other inside one).
All processes start first, set up and warm up every batch size, then take turns in short
slices: round r gives each framework, for each batch size, one slice of ``--slice`` seconds
of steps run back to back (the first two after the idle gap untimed, then every step timed
alone), in an order rotated by r, with ``--gap`` seconds of idle time before each slice so
that the previous framework's spinning threads have gone to sleep. On a shared machine whose
speed drifts within seconds, each column is thus sampled in the same minutes as the others.
The table shows, per batch and framework, the median of the slice medians (and their
min-max range), and fastbp's speed-up over each alternative; a second table gives the
median over rounds of each round's own ratio (slices minutes apart never meet in it). A
framework that is not installed is reported as "missing", one whose process died as
"failed". The GEMMs (NumPy, into preallocated outputs) are the floor a training step cannot
beat without skipping work.

BLAS: the workers run without ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` (removed from
their environment if set, so that OpenBLAS picks its kernels for this CPU itself), and each
reports the BLAS libraries it loaded (threadpoolctl: library, version, kernel architecture,
threads); the script prints them before the measurements.

Data: like MNIST (seeded): 784 pixels in [0, 1], 81 % zeros, labels 0-9 (the real MNIST is
not needed; the sparsity matters only for fastbp's batch <= 24 paths, which skip zeros).
PyTorch and JAX are installed with ``pip install -e .[bench]`` (torch 2.13 CPU, jax).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

FRAMEWORKS = ("fastbp", "numpy", "torch", "jax", "gemm")
D, H, C = 784, 50, 10
LR = 0.1
#: The chapter-6 network: 4 hidden layers of 100 units, Adam with the book's defaults.
MLP_SIZES = (D, 100, 100, 100, 100, C)
ADAM_LR, ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.001, 0.9, 0.999, 1e-7
MODELS = {
    "twolayer": "TwoLayerNet 784-50-10, float32, SGD step (lr 0.1)",
    "mlp4": "MultiLayerNet 784-100x4-10, float32, Adam step (lr 0.001)",
    "convnet": "SimpleConvNet conv30x5x5-pool-100-10, float32, Adam step (lr 0.001)",
}
#: The chapter-7 network: 30 filters 5x5 on 28x28 images, 2x2 pooling, 100 hidden units.
CONV_FN, CONV_FS, CONV_HIDDEN = 30, 5, 100
CONV_POOLED = CONV_FN * 12 * 12
# The workers run without the OpenBLAS pins and report their BLAS (benchmarks/blas_env.py).
try:  # asv imports every module of benchmarks/ as part of the package
    from .blas_env import OPENBLAS_PINS, blas_lines as blas_info, unpinned_env
except ImportError:  # run as a script: this folder is first on sys.path
    from blas_env import OPENBLAS_PINS, blas_lines as blas_info, unpinned_env


#: Input data (``--data``) by the fraction of zero pixels: ``mnist-like`` has MNIST's 81 %,
#: ``dense`` none. Only fastbp's batch <= 24 paths skip zeros, so the two differ there.
ZERO_FRACTION = {"mnist-like": 0.81, "dense": 0.0}
_data_kind = "mnist-like"  # set by main() and passed on to the workers


def _data(n, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.random((n, D), dtype=np.float32)
    x[rng.random((n, D)) < ZERO_FRACTION[_data_kind]] = 0
    t = rng.integers(0, C, n)
    return x, t


def _init(seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    return (0.01 * rng.standard_normal((D, H))).astype(np.float32), np.zeros(H, np.float32), \
        (0.01 * rng.standard_normal((H, C))).astype(np.float32), np.zeros(C, np.float32)


def _init_mlp(seed=0):
    """``{"W1": ..., "b1": ..., ..., "b5": ...}`` (in that order) of the 784-100x4-10
    network: He's initial values (the book's MultiLayerNet default), zero biases, float32."""
    import numpy as np
    rng = np.random.default_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(MLP_SIZES[:-1], MLP_SIZES[1:]), 1):
        W = np.sqrt(2.0 / fan_in) * rng.standard_normal((fan_in, fan_out))
        params[f"W{i}"], params[f"b{i}"] = W.astype(np.float32), np.zeros(fan_out, np.float32)
    return params


def _warmup_calls(n):
    return max(5, min(20, 200_000 // n))


# -- the contenders, TwoLayerNet 784-50-10 with SGD -----------------------------------------

def setup_fastbp(n):
    import numpy as np
    import fastbp
    net = fastbp.TwoLayerNet(D, H, C, dtype=np.float32, seed=0)
    for k, v in zip(("W1", "b1", "W2", "b2"), _init()):
        net.params[k][...] = v
    x, t = _data(n)
    return lambda: net.train_step(x, t, LR)


def setup_numpy(n):
    # The book's ch05 TwoLayerNet (Affine / Relu / SoftmaxWithLoss layers, gradient + the
    # update loop), in float32: what "plain NumPy" means for this network.
    from fastbp.baseline import TwoLayerNet
    net = TwoLayerNet(dict(zip(("W1", "b1", "W2", "b2"), _init())))
    x, t = _data(n)
    return lambda: net.train_step(x, t, LR)


def setup_torch(n):
    # Eager PyTorch as a user would write it: nn.Sequential, cross_entropy, optim.SGD.
    import torch
    torch.set_num_threads(2)
    W1, b1, W2, b2 = _init()
    model = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.ReLU(), torch.nn.Linear(H, C))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(W1.T.copy()))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.from_numpy(W2.T.copy()))
        model[2].bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x, t = _data(n)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    lossf = torch.nn.functional.cross_entropy

    def step():
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(xt), tt)
        loss.backward()
        opt.step()
    return step


def setup_jax(n):
    import jax
    import jax.numpy as jnp

    def loss_fn(p, x, t):
        h = jax.nn.relu(x @ p[0] + p[1])
        y = h @ p[2] + p[3]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(y), t[:, None], axis=1))

    @jax.jit
    def train(p, x, t):
        loss, g = jax.value_and_grad(loss_fn)(p, x, t)
        return tuple(a - LR * b for a, b in zip(p, g)), loss

    state = [tuple(jnp.asarray(a) for a in _init())]
    x, t = _data(n)
    xj, tj = jnp.asarray(x), jnp.asarray(t.astype("int32"))

    def step():
        state[0], loss = train(state[0], xj, tj)
        loss.block_until_ready()
    return step


def setup_gemm(n):
    import numpy as np
    x, _ = _data(n)
    W1 = _init()[0]
    h = np.empty((n, H), np.float32)
    dh = np.random.default_rng(1).standard_normal((n, H)).astype(np.float32)
    dW1 = np.empty((D, H), np.float32)

    def step():
        np.dot(x, W1, out=h)
        np.dot(x.T, dh, out=dW1)
    return step


# -- the contenders, MultiLayerNet 784-100x4-10 with Adam -----------------------------------

def setup_fastbp_mlp4(n):
    import numpy as np
    import fastbp
    net = fastbp.MultiLayerNet(D, list(MLP_SIZES[1:-1]), C, dtype=np.float32, seed=0)
    for key, value in _init_mlp().items():
        net.params[key][...] = value
    opt = fastbp.optimizers.Adam(lr=ADAM_LR, beta1=ADAM_BETA1, beta2=ADAM_BETA2)
    x, t = _data(n)
    return lambda: net.train_step(x, t, opt)


def setup_numpy_mlp4(n):
    # The book's MultiLayerNet and Adam, as the asv suite has them.
    from fastbp.baseline import Adam, MultiLayerNet
    net = MultiLayerNet(_init_mlp())
    opt = Adam(lr=ADAM_LR, beta1=ADAM_BETA1, beta2=ADAM_BETA2)
    x, t = _data(n)
    return lambda: net.train_step(x, t, opt)


def setup_torch_mlp4(n):
    # Eager PyTorch as a user would write it: nn.Sequential, cross_entropy, optim.Adam.
    import torch
    torch.set_num_threads(2)
    layers = []
    for fan_in, fan_out in zip(MLP_SIZES[:-1], MLP_SIZES[1:]):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    init = _init_mlp()
    with torch.no_grad():
        for i, linear in enumerate(model[::2], 1):
            linear.weight.copy_(torch.from_numpy(init[f"W{i}"].T.copy()))
            linear.bias.copy_(torch.from_numpy(init[f"b{i}"]))
    opt = torch.optim.Adam(model.parameters(), lr=ADAM_LR, betas=(ADAM_BETA1, ADAM_BETA2),
                           eps=ADAM_EPS)
    x, t = _data(n)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    lossf = torch.nn.functional.cross_entropy

    def step():
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(xt), tt)
        loss.backward()
        opt.step()
    return step


def setup_jax_mlp4(n):
    # Forward, gradient and the book's Adam in one jitted function.
    import jax
    import jax.numpy as jnp

    def loss_fn(p, x, t):
        h = x
        for i in range(0, len(p) - 2, 2):
            h = jax.nn.relu(h @ p[i] + p[i + 1])
        y = h @ p[-2] + p[-1]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(y), t[:, None], axis=1))

    @jax.jit
    def train(p, m, v, it, x, t):
        loss, g = jax.value_and_grad(loss_fn)(p, x, t)
        it = it + 1
        lr_t = ADAM_LR * jnp.sqrt(1 - ADAM_BETA2 ** it) / (1 - ADAM_BETA1 ** it)
        m = tuple(a + (1 - ADAM_BETA1) * (b - a) for a, b in zip(m, g))
        v = tuple(a + (1 - ADAM_BETA2) * (b * b - a) for a, b in zip(v, g))
        p = tuple(a - lr_t * b / (jnp.sqrt(c) + ADAM_EPS) for a, b, c in zip(p, m, v))
        return p, m, v, it, loss

    p = tuple(jnp.asarray(a) for a in _init_mlp().values())  # W1, b1, W2, ...
    state = [p, tuple(jnp.zeros_like(a) for a in p), tuple(jnp.zeros_like(a) for a in p),
             jnp.float32(0)]
    x, t = _data(n)
    xj, tj = jnp.asarray(x), jnp.asarray(t.astype("int32"))

    def step():
        p, m, v, it, loss = train(*state, xj, tj)
        state[:] = p, m, v, it
        loss.block_until_ready()
    return step


def setup_gemm_mlp4(n):
    # Every product of a step: a_i = h_{i-1} @ W_i (forward), dW_i = h_{i-1}.T @ dy_i and,
    # below the first layer, dh_{i-1} = dy_i @ W_i.T (backward); NumPy into buffers.
    import numpy as np
    x, _ = _data(n)
    Ws = [a for key, a in _init_mlp().items() if key[0] == "W"]
    rng = np.random.default_rng(1)
    hs = [x] + [np.empty((n, w.shape[1]), np.float32) for w in Ws]
    dys = [rng.standard_normal((n, w.shape[1])).astype(np.float32) for w in Ws]
    dWs = [np.empty_like(w) for w in Ws]
    dhs = [np.empty((n, w.shape[0]), np.float32) for w in Ws]

    def step():
        for i, W in enumerate(Ws):
            np.dot(hs[i], W, out=hs[i + 1])
        for i in reversed(range(len(Ws))):
            np.dot(hs[i].T, dys[i], out=dWs[i])
            if i:
                np.dot(dys[i], Ws[i].T, out=dhs[i])
    return step


# -- the contenders, SimpleConvNet with Adam --------------------------------------------

def _init_convnet(seed=0):
    """``{"W1": (30, 1, 5, 5), "b1", "W2": (4320, 100), "b2", "W3": (100, 10), "b3"}``:
    the book's ``weight_init_std=0.01`` draws, zero biases, float32."""
    import numpy as np
    rng = np.random.default_rng(seed)
    shapes = {"W1": (CONV_FN, 1, CONV_FS, CONV_FS), "W2": (CONV_POOLED, CONV_HIDDEN),
              "W3": (CONV_HIDDEN, C)}
    params = {}
    for i, (key, shape) in enumerate(shapes.items(), 1):
        params[key] = (0.01 * rng.standard_normal(shape)).astype(np.float32)
        params[f"b{i}"] = np.zeros(shape[1] if i > 1 else shape[0], np.float32)
    return params


def _images(n):
    x, t = _data(n)
    return x.reshape(n, 1, 28, 28), t


def setup_fastbp_convnet(n):
    import numpy as np
    import fastbp
    net = fastbp.SimpleConvNet(dtype=np.float32, seed=0)
    for key, value in _init_convnet().items():
        net.params[key][...] = value
    opt = fastbp.optimizers.Adam(lr=ADAM_LR, beta1=ADAM_BETA1, beta2=ADAM_BETA2)
    x, t = _images(n)
    return lambda: net.train_step(x, t, opt)


def _book_module(name):
    """A module of the book's code (``../shared/book-reference``, MIT), imported as is."""
    import importlib
    root = os.environ.get("FASTBP_BOOK_REFERENCE", os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "book-reference"))
    if not os.path.isdir(os.path.join(root, "ch07")):
        raise ImportError(f"the book's code is not at {os.path.abspath(root)}")
    for folder in (os.path.join(root, "ch07"), root):
        if folder not in sys.path:  # first: the book's `common` package, not benchmarks/common.py
            sys.path.insert(0, folder)
    return importlib.import_module(name)


def setup_numpy_convnet(n):
    # The book's own SimpleConvNet (im2col) and Adam, parameters float32.
    net = _book_module("simple_convnet").SimpleConvNet()
    for key, value in _init_convnet().items():
        net.params[key] = value.copy()
    for i, key in enumerate(("Conv1", "Affine1", "Affine2"), 1):
        net.layers[key].W, net.layers[key].b = net.params[f"W{i}"], net.params[f"b{i}"]
    opt = _book_module("common.optimizer").Adam(lr=ADAM_LR, beta1=ADAM_BETA1,
                                                beta2=ADAM_BETA2)
    x, t = _images(n)

    def step():
        opt.update(net.params, net.gradient(x, t))
    return step


def setup_torch_convnet(n):
    # Eager PyTorch as a user would write it: nn.Conv2d, nn.MaxPool2d, optim.Adam.
    import torch
    torch.set_num_threads(2)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, CONV_FN, CONV_FS), nn.ReLU(), nn.MaxPool2d(2, 2),
                          nn.Flatten(), nn.Linear(CONV_POOLED, CONV_HIDDEN), nn.ReLU(),
                          nn.Linear(CONV_HIDDEN, C))
    init = _init_convnet()
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(init["W1"]))
        model[0].bias.zero_()
        model[4].weight.copy_(torch.from_numpy(init["W2"].T.copy()))
        model[4].bias.zero_()
        model[6].weight.copy_(torch.from_numpy(init["W3"].T.copy()))
        model[6].bias.zero_()
    opt = torch.optim.Adam(model.parameters(), lr=ADAM_LR, betas=(ADAM_BETA1, ADAM_BETA2),
                           eps=ADAM_EPS)
    x, t = _images(n)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    lossf = torch.nn.functional.cross_entropy

    def step():
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(xt), tt)
        loss.backward()
        opt.step()
    return step


def setup_jax_convnet(n):
    # Forward, gradient and the book's Adam in one jitted function.
    import jax
    import jax.numpy as jnp
    from jax import lax

    def loss_fn(p, x, t):
        z = lax.conv_general_dilated(x, p[0], (1, 1), "VALID",
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        z = jax.nn.relu(z + p[1][None, :, None, None])
        z = lax.reduce_window(z, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        h = jax.nn.relu(z.reshape(z.shape[0], -1) @ p[2] + p[3])
        y = h @ p[4] + p[5]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(y), t[:, None], axis=1))

    @jax.jit
    def train(p, m, v, it, x, t):
        loss, g = jax.value_and_grad(loss_fn)(p, x, t)
        it = it + 1
        lr_t = ADAM_LR * jnp.sqrt(1 - ADAM_BETA2 ** it) / (1 - ADAM_BETA1 ** it)
        m = tuple(a + (1 - ADAM_BETA1) * (b - a) for a, b in zip(m, g))
        v = tuple(a + (1 - ADAM_BETA2) * (b * b - a) for a, b in zip(v, g))
        p = tuple(a - lr_t * b / (jnp.sqrt(c) + ADAM_EPS) for a, b, c in zip(p, m, v))
        return p, m, v, it, loss

    p = tuple(jnp.asarray(a) for a in _init_convnet().values())  # W1, b1, W2, ...
    state = [p, tuple(jnp.zeros_like(a) for a in p), tuple(jnp.zeros_like(a) for a in p),
             jnp.float32(0)]
    x, t = _images(n)
    xj, tj = jnp.asarray(x), jnp.asarray(t.astype("int32"))

    def step():
        p, m, v, it, loss = train(*state, xj, tj)
        state[:] = p, m, v, it
        loss.block_until_ready()
    return step


def setup_gemm_convnet(n):
    # The affine layers' products of a step: h @ W2, a @ W3 (forward), h.T @ dz, a.T @ dy
    # (weight gradients), dz @ W2.T (the gradient reaching the pooling layer).
    import numpy as np
    init = _init_convnet()
    rng = np.random.default_rng(1)
    h = rng.random((n, CONV_POOLED), dtype=np.float32)
    a = np.empty((n, CONV_HIDDEN), np.float32)
    y = np.empty((n, C), np.float32)
    dz = rng.standard_normal((n, CONV_HIDDEN)).astype(np.float32)
    dy = rng.standard_normal((n, C)).astype(np.float32)
    dW2, dW3 = np.empty_like(init["W2"]), np.empty_like(init["W3"])
    dh = np.empty_like(h)

    def step():
        np.dot(h, init["W2"], out=a)
        np.dot(a, init["W3"], out=y)
        np.dot(a.T, dy, out=dW3)
        np.dot(h.T, dz, out=dW2)
        np.dot(dz, init["W2"].T, out=dh)
    return step


SETUPS = {
    "twolayer": {"fastbp": setup_fastbp, "numpy": setup_numpy, "torch": setup_torch,
                 "jax": setup_jax, "gemm": setup_gemm},
    "mlp4": {"fastbp": setup_fastbp_mlp4, "numpy": setup_numpy_mlp4, "torch": setup_torch_mlp4,
             "jax": setup_jax_mlp4, "gemm": setup_gemm_mlp4},
    "convnet": {"fastbp": setup_fastbp_convnet, "numpy": setup_numpy_convnet,
                "torch": setup_torch_convnet, "jax": setup_jax_convnet,
                "gemm": setup_gemm_convnet},
}


def worker(name, batches, model="twolayer"):
    """Serve timed slices: set every batch size up, say ready, then answer each line
    ``n seconds`` with the median of `n`-row steps run back to back for `seconds`."""
    try:
        if name in ("torch", "jax"):
            __import__(name)
        if name == "numpy" and model == "convnet":
            _book_module("simple_convnet")  # the book's own code: "missing" without it
    except ImportError:
        print(json.dumps({"missing": True}), flush=True)
        return
    import numpy as np
    steps = {}
    for n in batches:
        steps[n] = SETUPS[model][name](n)
        for _ in range(_warmup_calls(n)):
            steps[n]()
    print(json.dumps({"ready": True, "blas": blas_info()}), flush=True)
    clock = time.perf_counter
    for line in sys.stdin:
        n, seconds = line.split()
        step, seconds = steps[int(n)], float(seconds)
        # The first calls after the idle gap wake the thread pools and refill the caches;
        # a training loop runs steps back to back, so they are not timed.
        for _ in range(2):
            step()
        ts = []
        end = clock() + seconds
        while len(ts) < 3 or clock() < end:
            t0 = clock()
            step()
            ts.append(clock() - t0)
        print(json.dumps({"median": float(np.median(ts))}), flush=True)


class _Worker:
    def __init__(self, name, batches, model):
        self.name = name
        self.err = tempfile.TemporaryFile("w+")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--model", model,
               "--data", _data_kind,
               "--batches", *map(str, batches)]
        env = unpinned_env()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, env=env)

    def reply(self):
        line = self.proc.stdout.readline()
        if not line:
            self.err.seek(0)
            sys.stderr.write(f"{self.name} failed:\n{self.err.read()[-2000:]}\n")
            return None
        return json.loads(line)

    def run(self, n, seconds):
        self.proc.stdin.write(f"{n} {seconds}\n")
        self.proc.stdin.flush()
        return self.reply()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def _speedup(f, fastbp, other):
    """fastbp's speed-up over `f` from two times; for the GEMMs, fastbp's time over theirs."""
    return fastbp / other if f == "gemm" else other / fastbp


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10,
                   help="timed slices per framework and batch size (default 10)")
    p.add_argument("--slice", type=float, default=0.25, dest="seconds",
                   help="seconds of back-to-back steps per slice (default 0.25)")
    p.add_argument("--gap", type=float, default=0.1,
                   help="idle seconds between slices, for the last slice's spinning "
                        "threads to go to sleep (default 0.1)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 100, 10000])
    p.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    p.add_argument("--model", choices=list(MODELS), default="twolayer",
                   help="twolayer: TwoLayerNet 784-50-10 with SGD (default); mlp4: "
                        "MultiLayerNet 784-100x4-10 with Adam; convnet: SimpleConvNet with "
                        "Adam")
    p.add_argument("--data", choices=list(ZERO_FRACTION), default="mnist-like",
                   help="input pixels: mnist-like (81 %% zeros, default) or dense (no zeros)")
    p.add_argument("--json", metavar="PATH",
                   help="also write every slice median and each worker's BLAS to PATH "
                        "(read by scripts/perf_page.py)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    global _data_kind
    _data_kind = args.data
    if args.worker:
        return worker(args.worker, args.batches, args.model)

    import numpy as np
    results = {f: {n: [] for n in args.batches} for f in args.frameworks}
    absent = {}  # framework -> "missing" (not installed) or "failed" (its process died)
    fws = list(args.frameworks)
    workers = {}
    pinned = [f"{k}={os.environ[k]}" for k in OPENBLAS_PINS if k in os.environ]
    if pinned:
        print(f"workers run without {', '.join(pinned)} (OpenBLAS picks its own kernels)")
    print(f"{MODELS[args.model]}; {args.data} data; batches {', '.join(map(str, args.batches))}",
          flush=True)
    blas = {}  # framework -> its worker's BLAS libraries (threadpoolctl)
    for f in fws:  # one at a time: set-up and compilation are not what is compared
        w = _Worker(f, args.batches, args.model)
        ready = w.reply()
        if ready is None or ready.get("missing"):
            absent[f] = "failed" if ready is None else "missing"
            w.close()
        else:
            workers[f] = w
            blas[f] = ready.get("blas", [])
            print(f"BLAS in the {f} worker: " + "; ".join(blas[f]), flush=True)
    try:
        for r in range(args.rounds):
            for n in args.batches:
                order = fws[r % len(fws):] + fws[:r % len(fws)]
                line = []
                for f in order:
                    if f in absent:
                        continue
                    time.sleep(args.gap)
                    res = workers[f].run(n, args.seconds)
                    if res is None:
                        absent[f] = "failed"
                        continue
                    results[f][n].append(res["median"])
                    line.append(f"{f} {res['median'] * 1e6:,.1f}")
                print(f"round {r + 1}/{args.rounds} batch {n}: " + ", ".join(line) + " us",
                      flush=True)
    finally:
        for w in workers.values():
            w.close()

    def cell(f, n):
        v = results[f][n]
        if f in absent or not v:
            return absent.get(f, "missing"), None
        m = float(np.median(v)) * 1e6
        return f"{m:,.1f} ({min(v) * 1e6:,.0f}-{max(v) * 1e6:,.0f})", m

    print(f"\n{MODELS[args.model]}, median us over {args.rounds} "
          f"interleaved slices of {args.seconds} s (min-max of the slice medians)")
    names = {"fastbp": "fastbp", "numpy": "NumPy (book)", "torch": "PyTorch eager",
             "jax": "JAX jit",
             "gemm": {"twolayer": "2 GEMMs alone", "mlp4": "14 GEMMs alone",
                      "convnet": "5 affine GEMMs alone"}[args.model]}
    print("| batch | " + " | ".join(names[f] for f in fws) + " | fastbp speed-up |")
    print("|---" * (len(fws) + 2) + "|")
    for n in args.batches:
        cells = {f: cell(f, n) for f in fws}
        base = cells.get("fastbp", (None, None))[1]
        ups = []
        for f in fws:
            if f in ("fastbp",) or cells[f][1] is None or base is None:
                continue
            up = _speedup(f, base, cells[f][1])
            ups.append(f"{up:.2f}x the GEMMs" if f == "gemm" else f"{up:.1f}x {names[f]}")
        print(f"| {n} | " + " | ".join(cells[f][0] for f in fws) + " | " + ", ".join(ups)
              + " |")

    # Each round's own ratio: both slices of a pair ran seconds apart.
    others = [f for f in fws if f != "fastbp"]
    print("\nfastbp speed-up per round (other / fastbp; for the GEMMs fastbp / GEMMs), median "
          "(min-max) over rounds")
    print("| batch | " + " | ".join(names[f] for f in others) + " |")
    print("|---" * (len(others) + 1) + "|")
    for n in args.batches:
        mine = results.get("fastbp", {}).get(n, [])
        row = []
        for f in others:
            theirs = results[f][n]
            if f in absent or not mine or len(theirs) != len(mine):
                row.append("-")
                continue
            r = [_speedup(f, m, o) for m, o in zip(mine, theirs)]
            row.append(f"{np.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})")
        print(f"| {n} | " + " | ".join(row) + " |")

    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": args.model, "title": MODELS[args.model], "data": args.data,
                       "rounds": args.rounds, "slice": args.seconds, "batches": args.batches,
                       "frameworks": fws, "names": names, "absent": absent, "blas": blas,
                       "seconds": {f: {str(n): v for n, v in results[f].items()}
                                   for f in fws}}, fh, indent=1)


if __name__ == "__main__":
    main()
