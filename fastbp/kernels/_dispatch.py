"""What the public ``@njit`` dispatchers of the kernels share: the flat view their twins run
on, and the choice between a serial and a parallel twin (their docstrings share parameter
texts through :func:`fastbp.kernels._docstrings.with_doc`).

:func:`twin_runner` makes, for each pair of twins, one small cached ``@njit`` function with
that choice, and each public dispatcher (its own signature, the user-facing API) calls its
pair's runner. A single helper taking the twins as arguments would not do: dispatchers
passed as values are dynamic globals, and Numba refuses to cache the caller. One overload
for every pair, inlined at every call site (before 2026-12-01 evening, never released), did
work, at a price: a cache index keyed by Dispatcher types that never hit in another
process, and with the rows' sigmoid and softmax inlined as well, about 2 s more compile
time on a cold start (docs/decisions/cold-start.md).
"""
import types as pytypes

from numba import njit

from ._compile import MACHINE_DEFAULT, twins


@njit(cache=True, nogil=True, inline="always")
def flat(a):
    """`a` as a 1-D view (a C-contiguous reshape copies nothing)."""
    return a.reshape(a.size)


@njit(cache=True, nogil=True, inline="always")
def resolved(min_parallel, default):
    """A kernel's `min_parallel` argument with :data:`._compile.MACHINE_DEFAULT` replaced by
    `default` (the threshold of the kernel's class); ``None`` stays ``None``."""
    if min_parallel is None:
        return None
    return default if min_parallel == MACHINE_DEFAULT else min_parallel


def _pick(args, size, minimum, allowed=True):
    # The template of every runner (twin_runner binds _SERIAL and _PARALLEL). Two plain
    # `is None` tests: Numba prunes each before typing when its argument is None, so the
    # parallel twin is then not even compiled.
    if minimum is None:
        _SERIAL(*args)  # noqa: F821 (bound by twin_runner)
    elif allowed is None:
        _SERIAL(*args)  # noqa: F821
    elif size >= minimum:
        _PARALLEL(*args)  # noqa: F821
    else:
        _SERIAL(*args)  # noqa: F821


def twin_runner(serial, parallel):
    """The ``@njit`` function ``run(args, size, minimum, allowed=True)`` that calls
    ``parallel(*args)`` when ``size >= minimum``, else ``serial(*args)``.

    `minimum` or `allowed` ``None`` (a caller's argument passed through) selects the serial
    twin at any size and leaves the parallel one out of the compiled code (the same bits,
    less to compile: docs/decisions/cold-start.md). Each runner is a copy of one template
    whose globals name its twins, cached under its own name (``_pick__<module>__<body>``):
    it is keyed by the argument types only, so its cache hits in every later process.
    Called from compiled code it is inlined (``inline="always"``, at Numba's IR level):
    Numba optimizes and generates code again for every function a caller links in, so one
    call level less is less to compile (docs/decisions/cold-start.md).
    """
    code = _pick.__code__
    runner = pytypes.FunctionType(code, dict(_pick.__globals__, _SERIAL=serial,
                                             _PARALLEL=parallel),
                                  "_pick", _pick.__defaults__)
    body = getattr(serial, "py_func", serial)  # a plain function under NUMBA_DISABLE_JIT=1
    runner.__qualname__ = "_pick__{}__{}".format(body.__module__.rsplit(".", 1)[-1],
                                                  body.__qualname__.removesuffix("__serial"))
    runner.__module__ = _pick.__module__
    return njit(cache=True, nogil=True, inline="always")(runner)


def twins_with_runner(body, **options):
    """``(serial, parallel, run)``: :func:`._compile.twins` of `body` and their
    :func:`twin_runner`."""
    serial, parallel = twins(body, **options)
    return serial, parallel, twin_runner(serial, parallel)
