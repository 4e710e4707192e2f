"""Chapter-6 optimizers: the kernels, their validated wrappers and the book's classes.

The classes are compared with the book's own ``common/optimizer.py`` step by step. With
``decay=0`` the kernels do the book's arithmetic operation for operation in the array's
dtype, so the results are the book's bits (float32 Adam excepted, see
``test_matches_the_book``); the kernels with weight decay are compared with the textbook
formulas of tests/reference.py in float64.
"""
import io

import numba
import numpy as np
import pytest
from numba import njit

from fastbp import kernels as K
from fastbp import ops
from fastbp import optimizers as O
from fastbp.kernels import optimizers as KO
from fastbp.kernels._compile import NEVER, PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_HEAVY_ELEMENTS

import reference as R
from book import book as book_module
from conftest import DTYPES, compiled_only, tol

NAMES = ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam")
STATE = {"SGD": (), "Momentum": ("v",), "Nesterov": ("v",), "AdaGrad": ("h",),
         "RMSprop": ("h",), "Adam": ("m", "v")}
CODE = {"SGD": KO.SGD, "Momentum": KO.MOMENTUM, "Nesterov": KO.NESTEROV,
        "AdaGrad": KO.ADAGRAD, "RMSprop": KO.RMSPROP, "Adam": KO.ADAM}
#: Constructor arguments: the book's defaults, and other values (every argument changed).
HYPER = {"default": {name: {} for name in NAMES},
         "custom": {"SGD": dict(lr=0.05), "Momentum": dict(lr=0.05, momentum=0.5),
                    "Nesterov": dict(lr=0.05, momentum=0.5), "AdaGrad": dict(lr=0.05),
                    "RMSprop": dict(lr=0.005, decay_rate=0.9),
                    "Adam": dict(lr=0.01, beta1=0.8, beta2=0.99)}}
SHAPES = {"W1": (7, 5), "b1": (5,), "W2": (5, 3), "b2": (3,)}
#: 2 unused elements after b1 in the flat buffer, so offsets are not just running sums.
GAP_AFTER = "b1"


def _arrays(rng, dtype, shapes=SHAPES):
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def _copy(d):
    return {k: np.array(a, copy=True) for k, a in d.items()}


@pytest.fixture(scope="module")
def book():
    """The book's ``common/optimizer.py`` (the test is skipped when it is absent)."""
    return book_module("common.optimizer")


# -- the classes against the book's ------------------------------------------------------

@pytest.mark.parametrize("hyper", ["default", "custom"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_matches_the_book(book, name, dtype, hyper):
    rng = np.random.default_rng(7)
    ours, theirs = getattr(O, name)(**HYPER[hyper][name]), getattr(book, name)(**HYPER[hyper][name])
    params = _arrays(rng, dtype)
    book_params = _copy(params)
    start = _copy(params)
    # NumPy 2 promotes the book's float32 Adam step to float64 (lr_t is an np.float64, a
    # "strong" scalar): `lr_t * m / (...)` is computed in float64 and rounded once. The
    # kernel keeps it in float32 like every other step (and like NumPy 1 did): the same
    # to rounding. Everything else is the book's arithmetic, so the same bits.
    exact = not (name == "Adam" and dtype == np.float32)
    same = (np.testing.assert_array_equal if exact
            else lambda a, b: np.testing.assert_allclose(a, b, **tol(dtype)))
    for _ in range(6):
        grads = _arrays(rng, dtype)
        ours.update(params, grads)
        theirs.update(book_params, _copy(grads))
        for k in SHAPES:
            assert params[k].dtype == dtype
            same(params[k], book_params[k])
            for s in STATE[name]:
                assert getattr(ours, s)[k].dtype == dtype
                same(getattr(ours, s)[k], getattr(theirs, s)[k])
    assert all((params[k] != start[k]).all() for k in SHAPES)
    if name == "Adam":
        assert ours.iter == theirs.iter == 6


@pytest.mark.parametrize("name", NAMES)
def test_attributes_and_defaults_are_the_books(book, name):
    ours, theirs = getattr(O, name)(), getattr(book, name)()
    want = {k: v for k, v in vars(theirs).items()}
    got = {k: getattr(ours, k) for k in want}
    assert got == want  # lr, momentum, ..., iter = 0, state None
    assert repr(ours).startswith(f"{name}(lr=")


def test_state_is_allocated_once_in_the_params_dtype(rng):
    opt = O.Adam()
    params = _arrays(rng, np.float32)
    opt.update(params, _arrays(rng, np.float32))
    m = opt.m["W1"]
    assert m.dtype == np.float32 and m.shape == SHAPES["W1"]
    opt.update(params, _arrays(rng, np.float32))
    assert opt.m["W1"] is m


def test_next_hyper_advances_like_update(book):
    opt, ref = O.Adam(lr=0.01, beta1=0.8, beta2=0.99), book.Adam(lr=0.01, beta1=0.8, beta2=0.99)
    for it in (1, 2, 3):
        lr_t, c1, c2 = opt.next_hyper()
        want = ref.lr * np.sqrt(1.0 - ref.beta2 ** it) / (1.0 - ref.beta1 ** it)
        assert (opt.iter, lr_t, c1, c2) == (it, want, 0.8, 0.99)
        assert type(lr_t) is float
    opt.update({}, {})
    assert opt.iter == 4
    assert O.SGD(0.1).next_hyper() == (0.1, 0.0, 0.0)
    assert O.AdaGrad(0.1).next_hyper() == (0.1, 0.0, 0.0)
    assert O.Momentum(0.1, 0.5).next_hyper() == (0.1, 0.5, 0.0)
    assert O.Nesterov(0.1, 0.5).next_hyper() == (0.1, 0.5, 0.0)
    assert O.RMSprop(0.1, 0.9).next_hyper() == (0.1, 0.9, 0.0)


# -- kernels against the textbook formulas ------------------------------------------------

def _kernel_cases():
    return {
        "sgd_decay": (ops.sgd_decay_update, R.sgd_decay_update, (), dict(lr=0.1)),
        "momentum": (ops.momentum_update, R.momentum_update, ("v",),
                     dict(lr=0.1, momentum=0.9)),
        "nesterov": (ops.nesterov_update, R.nesterov_update, ("v",),
                     dict(lr=0.1, momentum=0.8)),
        "adagrad": (ops.adagrad_update, R.adagrad_update, ("h",), dict(lr=0.1)),
        "rmsprop": (ops.rmsprop_update, R.rmsprop_update, ("h",),
                    dict(lr=0.01, decay_rate=0.9)),
        "adam": (ops.adam_update, R.adam_update, ("m", "v"),
                 dict(lr_t=R.adam_lr(0.01, 0.9, 0.999, 3), beta1=0.9, beta2=0.999)),
    }


KERNELS = tuple(_kernel_cases())


def _kernel_inputs(rng, kernel, shape, dtype):
    """param, grad and a plausible mid-training state: Momentum's v and Adam's m of any
    sign, AdaGrad's/RMSprop's h and Adam's v (means of squares) >= 0."""
    states = _kernel_cases()[kernel][2]
    p, g = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    signed = kernel in ("momentum", "nesterov")
    s = []
    for name in states:
        a = rng.standard_normal(shape)
        s.append((a if signed or name == "m" else a * a).astype(dtype))
    return p, g, s


LARGE = max(PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_HEAVY_ELEMENTS) + 3  # parallel, every kind


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,decay", [((1,), 0.0), ((3, 4), 0.01), ((2, 3, 5), 0.0),
                                         ((2, 3, 5), 0.3), ((0, 4), 0.01),
                                         ((PARALLEL_MIN_ELEMENTS - 1,), 0.01),
                                         ((LARGE,), 0.01)])
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernels_against_reference(rng, kernel, shape, decay, dtype):
    op, ref, _, hyper = _kernel_cases()[kernel]
    p, g, s = _kernel_inputs(rng, kernel, shape, dtype)
    want = ref(p, g, *s, **hyper, decay=decay)
    want = want if isinstance(want, tuple) else (want,)
    got = (p, *s)
    assert op(p, g, *s, **hyper, decay=decay) is p
    for a, w in zip(got, want):
        assert a.dtype == dtype and a.shape == shape
        np.testing.assert_allclose(a, w, **tol(dtype))


@pytest.mark.parametrize("kernel", KERNELS)
def test_zero_decay_leaves_infinite_parameters_infinite(kernel):
    """decay=0 is the book's update even for an infinite parameter (``grad + 0 * param``
    would make its gradient NaN)."""
    op, _, _, hyper = _kernel_cases()[kernel]
    p = np.array([np.inf, -np.inf, 1.0])
    s = [np.ones(3) for _ in _kernel_cases()[kernel][2]]
    op(p, np.ones(3), *s, **hyper)
    np.testing.assert_array_equal(p[:2], [np.inf, -np.inf])
    assert np.isfinite(p[2]) and np.isfinite(s).all()


def _dispatch_args(kernel, p, g, s, hyper):
    """`optimizer_update`'s (kind, param, grad, state1, state2, lr, c1, c2) for a case."""
    none = np.empty(0, p.dtype)
    s1, s2 = (list(s) + [none, none])[:2]
    h = list(hyper.values()) + [0.0, 0.0]
    kind = {"sgd_decay": KO.SGD, "momentum": KO.MOMENTUM, "nesterov": KO.NESTEROV,
            "adagrad": KO.ADAGRAD, "rmsprop": KO.RMSPROP, "adam": KO.ADAM}[kernel]
    return kind, p, g, s1, s2, h[0], h[1], h[2]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_dispatcher_is_each_kernel(rng, kernel, dtype):
    op, _, _, hyper = _kernel_cases()[kernel]
    p, g, s = _kernel_inputs(rng, kernel, (4, 5), dtype)
    p2, s2 = p.copy(), [a.copy() for a in s]
    op(p, g, *s, **hyper, decay=0.02)
    kind, *args = _dispatch_args(kernel, p2, g, s2, hyper)
    K.optimizer_update(kind, *args, 0.02)
    for a, b in zip((p, *s), (p2, *s2)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kernel", KERNELS)
def test_min_parallel_none_one_and_never_give_the_same_bits(rng, kernel):
    """``min_parallel``: 1 (parallel at any size), NEVER and ``None`` (serial; ``None``
    leaves the parallel twin out of the compiled code) and MACHINE_DEFAULT
    (the kind's own default) change which twin runs, never the result."""
    _, _, _, hyper = _kernel_cases()[kernel]
    op = getattr(K, f"{kernel}_update")
    p, g, s = _kernel_inputs(rng, kernel, (4, 5), np.float32)
    results = []
    for min_parallel in (1, NEVER, None):
        pc, sc = p.copy(), [a.copy() for a in s]
        op(pc, g, *sc, **hyper, decay=0.02, min_parallel=min_parallel)
        results.append((pc, *sc))
        pc, sc = p.copy(), [a.copy() for a in s]
        kind, *args = _dispatch_args(kernel, pc, g, sc, hyper)
        K.optimizer_update(kind, *args, 0.02, min_parallel)
        results.append((pc, *sc))
    pc, sc = p.copy(), [a.copy() for a in s]
    kind, *args = _dispatch_args(kernel, pc, g, sc, hyper)
    K.optimizer_update(kind, *args, 0.02, K.MACHINE_DEFAULT)
    results.append((pc, *sc))
    for r in results[1:]:
        for a, b in zip(results[0], r):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(results[0][0], p)


def test_dispatcher_rejects_unknown_kind():
    p = np.ones(4)
    with pytest.raises(ValueError, match="kind must be one of"):
        K.optimizer_update(6, p, np.ones(4), np.zeros(4), np.zeros(4), 0.1, 0.9, 0.9, 0.0)
    np.testing.assert_array_equal(p, 1)


@compiled_only
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_serial_and_parallel_twins_give_the_same_bits(rng, kernel, dtype):
    """Twins directly, and the dispatcher (the parallel twin at this size) on 1 thread and
    on all of Numba's threads."""
    body = {"sgd_decay": "_sgd_decay", "momentum": "_momentum", "nesterov": "_nesterov",
            "adagrad": "_adagrad", "rmsprop": "_rmsprop", "adam": "_adam"}[kernel]
    serial, parallel = getattr(KO, body + "_serial"), getattr(KO, body + "_parallel")
    hyper = list(_kernel_cases()[kernel][3].values())
    p, g, s = _kernel_inputs(rng, kernel, (LARGE,), dtype)
    results = []
    for f in (serial, parallel):
        pc, sc = p.copy(), [a.copy() for a in s]
        f(pc, g, *sc, *hyper, 0.01)
        results.append((pc, *sc))
    kind, _, _, _, _, lr, c1, c2 = _dispatch_args(kernel, p, g, s, _kernel_cases()[kernel][3])
    before = numba.get_num_threads()
    try:
        for n in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(n)
            pc, sc = p.copy(), [a.copy() for a in s] + [np.empty(0, dtype)] * 2
            K.optimizer_update(kind, pc, g, sc[0], sc[1], lr, c1, c2, 0.01)
            results.append((pc, *sc[:len(s)]))
    finally:
        numba.set_num_threads(before)
    for r in results[1:]:
        for a, b in zip(results[0], r):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(results[0][0], p)


@compiled_only
def test_twins_have_their_own_cache_files():
    """Each twin must load its own machine code from the on-disk cache (see _compile)."""
    twins = [getattr(KO, n) for n in sorted(vars(KO)) if n.endswith(("_serial", "_parallel"))]
    assert len(twins) == 12
    paths = [f._cache._cache_file._index_path for f in twins]
    assert len(set(paths)) == len(paths), paths


# -- called from a user's own @njit code --------------------------------------------------

@njit
def _user_loop(kind, param, grads, state1, state2, lr, c1, c2, decay):
    """A user's compiled loop: several steps of one optimizer on a 1-D parameter."""
    for i in range(grads.shape[0]):
        K.optimizer_update(kind, param, grads[i], state1, state2, lr, c1, c2, decay)


@njit
def _user_step(W, dW, v, b, db, m, vb):
    """Per-optimizer kernels with their default decay, on 2-D and 1-D parameters."""
    K.momentum_update(W, dW, v, 0.1, 0.9)
    K.adam_update(b, db, m, vb, 0.01, 0.9, 0.999)


def test_kernels_callable_from_user_njit(rng):
    p, grads = rng.standard_normal(10), rng.standard_normal((3, 10))
    v = np.zeros(10)
    p2, v2 = p.copy(), v.copy()
    _user_loop(KO.NESTEROV, p, grads, v, np.empty(0), 0.1, 0.9, 0.0, 0.01)
    for g in grads:
        ops.nesterov_update(p2, g, v2, 0.1, 0.9, 0.01)
    np.testing.assert_array_equal(p, p2)
    np.testing.assert_array_equal(v, v2)

    W, dW, b, db = (rng.standard_normal(s) for s in ((4, 3), (4, 3), 3, 3))
    v, m, vb = np.zeros((4, 3)), np.zeros(3), np.zeros(3)
    want_W, want_v = R.momentum_update(W, dW, v, 0.1, 0.9)
    want_b, want_m, want_vb = R.adam_update(b, db, m, vb, 0.01, 0.9, 0.999)
    _user_step(W, dW, v, b, db, m, vb)
    for a, w in ((W, want_W), (v, want_v), (b, want_b), (m, want_m), (vb, want_vb)):
        np.testing.assert_allclose(a, w, rtol=1e-12, atol=1e-15)


# -- flat_state: the fused step's view of the state ---------------------------------------

def _flat_params(rng, dtype):
    """All parameters as views into one flat buffer (with a gap), like the fused networks."""
    sizes = {k: int(np.prod(s)) for k, s in SHAPES.items()}
    flat = np.zeros(sum(sizes.values()) + 2, dtype)
    params, offsets, at = {}, {}, 0
    for k, s in SHAPES.items():
        params[k] = flat[at:at + sizes[k]].reshape(s)
        params[k][...] = rng.standard_normal(s)
        offsets[k] = at
        at += sizes[k] + (2 if k == GAP_AFTER else 0)
    return flat, params, offsets


def _flat_grads(grads, offsets, size, dtype):
    gflat = np.zeros(size, dtype)
    for k, g in grads.items():
        gflat[offsets[k]:offsets[k] + g.size] = g.reshape(-1)
    return gflat


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_flat_state_views_and_fused_updates(rng, name, dtype):
    hyper = HYPER["custom"][name]
    opt, ref = getattr(O, name)(**hyper), getattr(O, name)(**hyper)
    flat, params, offsets = _flat_params(rng, dtype)
    ref_params = _copy(params)

    def check():
        for k in SHAPES:
            np.testing.assert_array_equal(params[k], ref_params[k])
            for s in STATE[name]:
                np.testing.assert_array_equal(getattr(opt, s)[k], getattr(ref, s)[k])

    # Step 1 by update(): separate state arrays, then copied into the flat state.
    grads = _arrays(rng, dtype)
    opt.update(params, grads)
    ref.update(ref_params, grads)
    kind, s1, s2 = opt.flat_state(params, flat)
    assert kind == CODE[name]
    flats = (s1, s2)
    for i, s in enumerate(flats):
        assert s.dtype == dtype and s.ndim == 1 and s.flags.c_contiguous
        assert s.size == (flat.size if i < len(STATE[name]) else 0)
    for i, s in enumerate(STATE[name]):
        for k, shape in SHAPES.items():
            view = getattr(opt, s)[k]
            start = view.__array_interface__["data"][0] - flats[i].__array_interface__["data"][0]
            assert start == offsets[k] * flat.itemsize and view.shape == shape
    check()
    again = opt.flat_state(params, flat)
    assert all(a is b for a, b in zip(again, (kind, s1, s2)))

    # Steps 2-3 as the fused step does them: next_hyper once, then segments of flat.
    cut = offsets["W2"] + 4
    for _ in range(2):
        grads = _arrays(rng, dtype)
        gflat = _flat_grads(grads, offsets, flat.size, dtype)
        lr, c1, c2 = opt.next_hyper()
        for seg in (slice(0, cut), slice(cut, flat.size)):
            K.optimizer_update(kind, flat[seg], gflat[seg], s1[seg], s2[seg], lr, c1, c2, 0.0)
        ref.update(ref_params, grads)
        check()

    # Step 4 by update() again: it works on the views.
    grads = _arrays(rng, dtype)
    opt.update(params, grads)
    ref.update(ref_params, grads)
    check()
    if STATE[name]:
        i = len(STATE[name]) - 1
        np.testing.assert_array_equal(flats[i][offsets["W2"]:offsets["W2"] + 15],
                                      getattr(opt, STATE[name][i])["W2"].reshape(-1))
        # Replacing the state dict rebuilds the flat state from it.
        setattr(opt, STATE[name][0], None)
        _, t1, _ = opt.flat_state(params, flat)
        assert t1 is not s1 and not t1.any()


def test_flat_state_before_any_update_is_zeros(rng):
    flat, params, _ = _flat_params(rng, np.float32)
    opt = O.Adam()
    kind, m, v = opt.flat_state(params, flat)
    assert kind == KO.ADAM and m.dtype == v.dtype == np.float32
    assert not m.any() and not v.any()
    assert np.shares_memory(opt.m["b2"], m) and np.shares_memory(opt.v["b2"], v)
    sgd = O.SGD()
    kind, a, b = sgd.flat_state(params, flat)
    assert kind == KO.SGD and a.size == b.size == 0 and a.dtype == np.float32


def test_flat_state_errors_change_nothing(rng):
    flat, params, _ = _flat_params(rng, np.float64)
    opt = O.Momentum()
    with pytest.raises(TypeError, match="flat must be a float32 or float64"):
        opt.flat_state(params, flat.astype(np.int64))
    with pytest.raises(ValueError, match="flat must be a 1-D C-contiguous"):
        opt.flat_state(params, flat.reshape(1, -1))
    with pytest.raises(ValueError, match=r"params\['b2'\] must be a C-contiguous view into flat"):
        opt.flat_state(dict(params, b2=params["b2"].copy()), flat)
    with pytest.raises(ValueError, match=r"params\['W1'\] must be a C-contiguous view"):
        opt.flat_state(dict(params, W1=params["W1"].T), flat)
    with pytest.raises(TypeError, match=r"params\['b1'\] must be a view into flat \(float64\)"):
        opt.flat_state(dict(params, b1=params["b1"].astype(np.float32)), flat)
    assert opt.v is None and opt._flat_cache is None
    # State built by update() for another network: refused, kept.
    other = _arrays(rng, np.float64, dict(SHAPES, b2=(4,)))
    opt.update(other, _arrays(rng, np.float64, dict(SHAPES, b2=(4,))))
    v = _copy(opt.v)
    with pytest.raises(ValueError, match=r"Momentum.v\['b2'\] has shape \(4,\)"):
        opt.flat_state(params, flat)
    opt2 = O.Momentum()
    opt2.update(dict(params, extra=np.ones(2)), dict(_arrays(rng, np.float64), extra=np.ones(2)))
    with pytest.raises(ValueError, match="entry 'extra' that params lacks"):
        opt2.flat_state(params, flat)
    assert all(np.array_equal(opt.v[k], v[k]) for k in v)


# -- checks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,kwargs,exc,match", [
    (O.SGD, dict(lr=0), ValueError, "lr must be a finite number > 0"),
    (O.SGD, dict(lr=-0.1), ValueError, "lr must be a finite number > 0"),
    (O.AdaGrad, dict(lr=float("nan")), ValueError, "lr must be a finite number > 0"),
    (O.Adam, dict(lr=float("inf")), ValueError, "lr must be a finite number > 0"),
    (O.SGD, dict(lr="0.1"), TypeError, "lr must be a real number"),
    (O.Momentum, dict(lr=np.ones(2)), TypeError, "lr must be a real number"),
    (O.Momentum, dict(momentum=1.0), ValueError, r"momentum must be in \[0, 1\)"),
    (O.Nesterov, dict(momentum=-0.1), ValueError, r"momentum must be in \[0, 1\)"),
    (O.Nesterov, dict(momentum=float("nan")), ValueError, r"momentum must be in \[0, 1\)"),
    (O.RMSprop, dict(decay_rate=1.5), ValueError, r"decay_rate must be in \[0, 1\)"),
    (O.Adam, dict(beta1=1.0), ValueError, r"beta1 must be in \[0, 1\)"),
    (O.Adam, dict(beta2=-1e-9), ValueError, r"beta2 must be in \[0, 1\)"),
])
def test_hyperparameters_are_checked(cls, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kwargs)
    opt = cls()
    key, value = next(iter(kwargs.items()))
    before = getattr(opt, key)
    with pytest.raises(exc, match=match):
        setattr(opt, key, value)  # a schedule setting opt.lr later is checked too
    assert getattr(opt, key) == before


def _bad_updates(rng, dtype):
    """(label, params, grads, exception, message) with the fault in the last key, b2."""
    P, G = _arrays(rng, dtype), _arrays(rng, dtype)
    other = np.float32 if dtype == np.float64 else np.float64
    ro = P["b2"].copy()
    ro.flags.writeable = False
    wide = np.zeros((3, 2), dtype)
    return [
        ("params list", list(P.values()), G, TypeError, "params must be a dict"),
        ("grads list", P, list(G.values()), TypeError, "grads must be a dict"),
        ("int param", dict(P, b2=np.ones(3, np.int64)), G, TypeError,
         r"params\['b2'\] must be a float32 or float64 numpy.ndarray"),
        ("list param", dict(P, b2=[1.0, 2.0, 3.0]), G, TypeError,
         r"params\['b2'\] must be a float32 or float64"),
        ("missing grad", P, {k: G[k] for k in ("W1", "b1", "W2")}, ValueError,
         "grads has no entry 'b2'"),
        ("grad shape", P, dict(G, b2=np.ones(4, dtype)), ValueError,
         r"grads\['b2'\] must have the shape of params\['b2'\]"),
        ("grad dtype", P, dict(G, b2=G["b2"].astype(other)), TypeError,
         r"grads\['b2'\] is \w+ but the other arrays are"),
        ("strided param", dict(P, b2=wide[:, 0]), G, ValueError,
         r"params\['b2'\] must be a writeable C-contiguous"),
        ("read-only param", dict(P, b2=ro), G, ValueError,
         r"params\['b2'\] must be a writeable C-contiguous"),
        ("grad is param", P, dict(G, b2=P["b2"]), ValueError,
         r"grads\['b2'\] shares memory with params\['b2'\]"),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_rejected_updates_change_nothing(rng, name, dtype):
    opt = getattr(O, name)()
    params = _arrays(rng, dtype)
    opt.update(params, _arrays(rng, dtype))

    def snapshot():
        return (_copy(params), {s: _copy(getattr(opt, s)) for s in STATE[name]},
                getattr(opt, "iter", None))

    def unchanged(before):
        p, s, it = before
        assert all(np.array_equal(params[k], p[k]) for k in p)
        assert all(np.array_equal(getattr(opt, n)[k], s[n][k]) for n in s for k in s[n])
        assert getattr(opt, "iter", None) == it

    cases = _bad_updates(rng, dtype)
    if STATE[name]:
        s0 = STATE[name][0]
        other = np.float32 if dtype == np.float64 else np.float64
        cases += [
            ("other network", dict(params, b2=np.ones(4, dtype)),
             dict(_arrays(rng, dtype), b2=np.ones(4, dtype)), ValueError,
             (rf"{name}.{s0}\['b2'\] has shape \(3,\) but params\['b2'\] has shape \(4,\); "
              r"the optimizer's state was built for other parameters")),
            ("other dtype", dict(params, b2=params["b2"].astype(other)),
             dict(_arrays(rng, dtype), b2=np.ones(3, other)), ValueError,
             rf"{name}.{s0}\['b2'\] is {np.dtype(dtype).name} but params\['b2'\] is"),
            ("new key", dict(params, W3=np.ones(2, dtype)),
             dict(_arrays(rng, dtype), W3=np.ones(2, dtype)), ValueError,
             rf"{name}.{STATE[name][0]} has no entry 'W3'"),
        ]
    for label, p, g, exc, match in cases:
        before = snapshot()
        # The faulty entry is the last one: a first key updated early would show here.
        with pytest.raises(exc, match=match):
            opt.update(p, g)
        unchanged(before)


def test_weight_tied_state_is_rejected(rng):
    opt = O.Adam()
    params = _arrays(rng, np.float64)
    opt.update(params, _arrays(rng, np.float64))
    opt.v["b2"] = opt.m["b2"]
    with pytest.raises(ValueError, match=r"Adam.v\['b2'\] shares memory with Adam.m\['b2'\]"):
        opt.update(params, _arrays(rng, np.float64))


def _good_ops_call(kernel, dtype=np.float64):
    op, _, states, hyper = _kernel_cases()[kernel]
    p = np.linspace(-1, 1, 6, dtype=dtype).reshape(2, 3)
    return op, p, np.full((2, 3), 0.5, dtype), [np.full((2, 3), 0.25, dtype) for _ in states], \
        dict(hyper)


def _bad_ops_calls(kernel):
    """(label, mutate(p, g, s, hyper) -> (p, g, s, hyper), exception, message)."""
    f32 = np.float32
    cases = [
        ("param list", lambda p, g, s, h: (p.tolist(), g, s, h), TypeError,
         "param must be a numpy.ndarray"),
        ("param int", lambda p, g, s, h: (p.astype(np.int64), g, s, h), TypeError,
         "param must be float32 or float64"),
        ("param strided", lambda p, g, s, h: (np.repeat(p, 2, 1)[:, ::2], g, s, h), ValueError,
         "param must be C-contiguous"),
        ("grad dtype", lambda p, g, s, h: (p, g.astype(f32), s, h), TypeError,
         (r"grad is float32 but the other arrays are float64; convert it with "
          r"grad.astype\(np.float64\)")),
        ("grad shape", lambda p, g, s, h: (p, g[:1], s, h), ValueError,
         r"grad must have the shape of param, \(2, 3\), got \(1, 3\)"),
        ("grad is param", lambda p, g, s, h: (p, p, s, h), ValueError,
         "grad must not share memory with param"),
        ("lr nan", lambda p, g, s, h: (p, g, s, {**h, next(iter(h)): np.nan}), ValueError,
         "must be finite"),
        ("lr str", lambda p, g, s, h: (p, g, s, {**h, next(iter(h)): "0.1"}), TypeError,
         "must be a real number"),
        ("negative decay", lambda p, g, s, h: (p, g, s, {**h, "decay": -0.1}), ValueError,
         "decay must be finite and >= 0"),
        ("infinite decay", lambda p, g, s, h: (p, g, s, {**h, "decay": np.inf}), ValueError,
         "decay must be finite and >= 0"),
    ]
    if _kernel_cases()[kernel][2]:
        first = _kernel_cases()[kernel][2][0]
        fix = r"create it once with np.zeros_like\(param\)"
        cases += [
            ("state list", lambda p, g, s, h: (p, g, [a.tolist() for a in s], h), TypeError,
             f"{first} must be a numpy.ndarray .optimizer state, updated in place.*{fix}"),
            ("state dtype", lambda p, g, s, h: (p, g, [a.astype(f32) for a in s], h), TypeError,
             f"{first} must be float64 like param, got float32; {fix}"),
            ("state shape", lambda p, g, s, h: (p, g, [a[:1] for a in s], h), ValueError,
             f"{first} must have the shape of param"),
            ("state strided", lambda p, g, s, h: (p, g, [np.repeat(a, 2, 1)[:, ::2] for a in s],
                                                  h), ValueError,
             f"{first} must be a writeable C-contiguous array"),
            ("state is grad", lambda p, g, s, h: (p, g, [g] + s[1:], h), ValueError,
             f"{first} must not share memory with grad"),
        ]
    for arg, bad in {"momentum": (1.0, ValueError, r"momentum must be in \[0, 1\)"),
                     "decay_rate": (-0.5, ValueError, r"decay_rate must be in \[0, 1\)"),
                     "beta1": (1.0, ValueError, r"beta1 must be in \[0, 1\)"),
                     "beta2": (np.nan, ValueError, r"beta2 must be in \[0, 1\)")}.items():
        if arg in _kernel_cases()[kernel][3]:
            cases.append((arg, lambda p, g, s, h, arg=arg, v=bad[0]: (p, g, s, {**h, arg: v}),
                          bad[1], bad[2]))
    if kernel == "adam":
        cases.append(("m is v", lambda p, g, s, h: (p, g, [s[0], s[0]], h), ValueError,
                      "v must not share memory with m"))
    return cases


@pytest.mark.parametrize("kernel", KERNELS)
def test_ops_reject_bad_arguments_and_change_nothing(kernel):
    for label, mutate, exc, match in _bad_ops_calls(kernel):
        op, p, g, s, hyper = _good_ops_call(kernel)
        p0, s0 = p.copy(), [a.copy() for a in s]
        bp, bg, bs, bh = mutate(p, g, s, hyper)
        with pytest.raises(exc, match=match):
            op(bp, bg, *bs, **bh)
        np.testing.assert_array_equal(p, p0, err_msg=label)
        for a, b in zip(s, s0):
            np.testing.assert_array_equal(a, b, err_msg=label)
        # the same call with the good arguments goes through
        op(p, g, *s, **hyper)
        assert not np.array_equal(p, p0)


def test_ops_read_only_param_and_empty_arrays():
    p = np.ones(3)
    p.flags.writeable = False
    with pytest.raises(ValueError, match="param is read-only"):
        ops.momentum_update(p, np.ones(3), np.zeros(3), 0.1)
    e = np.empty((0, 3))
    assert ops.adam_update(e, e.copy(), e.copy(), e.copy(), 0.1) is e


# -- checkpoints ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_resumes_exactly(rng, name, dtype):
    hyper = HYPER["custom"][name]
    a = getattr(O, name)(**hyper)
    pa = _arrays(rng, dtype)
    for _ in range(3):
        a.update(pa, _arrays(rng, dtype))
    sd = a.state_dict()
    want = {f"{s}/{k}" for s in STATE[name] for k in SHAPES}
    want |= {"iter"} if name == "Adam" else set()
    assert set(sd) == want
    if name == "Adam":
        assert sd["iter"].shape == () and sd["iter"].dtype == np.int64 and sd["iter"] == 3
    for s in STATE[name]:
        assert not np.shares_memory(sd[f"{s}/W1"], getattr(a, s)["W1"])  # a copy
    buf = io.BytesIO()
    np.savez(buf, **sd)
    buf.seek(0)
    with np.load(buf) as loaded:
        b = getattr(O, name)(**hyper)
        b.load_state_dict(loaded)
    pb = _copy(pa)
    for _ in range(2):
        g = _arrays(rng, dtype)
        a.update(pa, g)
        b.update(pb, g)
    for k in SHAPES:
        np.testing.assert_array_equal(pa[k], pb[k])
    assert getattr(a, "iter", None) == getattr(b, "iter", None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_load_state_dict_in_place_keeps_flat_views(rng, dtype):
    src = O.RMSprop()
    src.update(_arrays(rng, dtype), _arrays(rng, dtype))
    flat, params, _ = _flat_params(rng, dtype)
    opt = O.RMSprop()
    _, h, _ = opt.flat_state(params, flat)
    opt.load_state_dict(src.state_dict())
    assert opt.flat_state(params, flat)[1] is h
    for k in SHAPES:
        np.testing.assert_array_equal(opt.h[k], src.h[k])
        assert np.shares_memory(opt.h[k], h)
    # A state from before the first update clears the state; flat_state then starts over.
    opt.load_state_dict(O.RMSprop().state_dict())
    assert opt.h is None
    assert not opt.flat_state(params, flat)[1].any()


def test_load_state_dict_errors_change_nothing(rng):
    opt = O.Adam()
    params = _arrays(rng, np.float64)
    opt.update(params, _arrays(rng, np.float64))
    good = opt.state_dict()
    m0, it0 = _copy(opt.m), opt.iter
    bad = [
        ([1, 2], TypeError, "state must be a dict like Adam"),
        (dict(good, **{"x/W1": np.ones(2)}), ValueError,
         r"unexpected entry 'x/W1' in the state of Adam; expected 'm/<key>' and 'v/<key>'"),
        ({k: v for k, v in good.items() if k != "iter"}, ValueError, "state has no 'iter'"),
        (dict(good, iter=np.array(-1)), ValueError, r"state\['iter'\] must be >= 0"),
        (dict(good, iter=np.array(2.5)), TypeError, r"state\['iter'\] must be an integer"),
        ({k: v for k, v in good.items() if k != "v/b2"}, ValueError,
         "state has no entry 'v/b2'"),
        (dict(good, **{"m/b2": np.zeros(4), "v/b2": np.zeros(4)}), ValueError,
         r"state\['m/b2'\] is \(4,\) float64 but Adam.m\['b2'\] is \(3,\) float64"),
        (dict(good, **{"m/b2": np.zeros(3, np.float32), "v/b2": np.zeros(3, np.float32)}),
         ValueError, r"state\['m/b2'\] is \(3,\) float32 but"),
        (dict(good, **{"m/b2": np.zeros(4)}), ValueError,
         r"state\['v/b2'\] has shape \(3,\) \(float64\), state\['m/b2'\] \(4,\)"),
        (dict(good, **{"m/W3": np.zeros(2), "v/W3": np.zeros(2)}), ValueError,
         "another network's state"),
        (dict(good, **{"m/b2": np.zeros(3, np.int64)}), TypeError,
         r"state\['m/b2'\] must be float32 or float64"),
    ]
    for state, exc, match in bad:
        with pytest.raises(exc, match=match):
            opt.load_state_dict(state)
        assert opt.iter == it0 and all(np.array_equal(opt.m[k], m0[k]) for k in m0)
    with pytest.raises(ValueError, match="unexpected entry 'iter' in the state of Momentum"):
        O.Momentum().load_state_dict({"iter": np.array(1)})
    with pytest.raises(ValueError, match="unexpected entry 'v/W1' in the state of SGD; "
                                         "expected no entries"):
        O.SGD().load_state_dict({"v/W1": np.ones(2)})
    O.SGD().load_state_dict({})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["momentum", "nesterov", "rmsprop", "adam"])
def test_decaying_state_never_stays_subnormal(name, dtype):
    """Where the gradient is 0 the state decays geometrically; once below the smallest
    normal number it is set to 0 (subnormal arithmetic runs in microcode, several times
    slower), and NaN stays NaN."""
    from fastbp import kernels as K
    tiny = np.finfo(dtype).tiny
    n = 5
    param = np.ones(n, dtype)
    grad = np.zeros(n, dtype)
    s1 = np.array([tiny * 1.5, tiny * 4, 1.0, np.nan, -tiny * 1.01], dtype)
    s2 = s1.copy()
    calls = {
        "momentum": lambda: K.momentum_update(param, grad, s1, 0.1, 0.5),
        "nesterov": lambda: K.nesterov_update(param, grad, s1, 0.1, 0.5),
        "rmsprop": lambda: K.rmsprop_update(param, grad, s1, 0.1, 0.5),
        "adam": lambda: K.adam_update(param, grad, s1, s2, 0.1, 0.5, 0.5),
    }
    calls[name]()
    for s in ((s1, s2) if name == "adam" else (s1,)):
        assert s[0] == 0 and s[4] == 0  # halved: below tiny, flushed
        assert s[1] == dtype(tiny * 2)  # still normal: kept, exactly
        assert np.isnan(s[3])
        finite = s[np.isfinite(s)]
        assert not np.any((finite != 0) & (np.abs(finite) < tiny))
