"""What the public ``@njit`` dispatchers of the kernels share: the flat view their twins run
on, and the choice between a serial and a parallel twin (their docstrings share parameter
texts through :func:`fastbp.kernels._docstrings.with_doc`).

:func:`run_twins` is an overload inlined into each dispatcher at typing time, so each
dispatcher keeps its own signature (user-facing API) and its own cache entry, and the call
compiles to the same two direct calls a hand-written ``if``/``else`` did. A plain
``@njit`` helper taking the twins as arguments would not do: dispatchers passed as values
are dynamic globals, and Numba refuses to cache the caller.
"""
from numba import njit, types
from numba.extending import overload


@njit(cache=True, nogil=True, inline="always")
def flat(a):
    """`a` as a 1-D view (a C-contiguous reshape copies nothing)."""
    return a.reshape(a.size)


def run_twins(serial, parallel, args, size, minimum, allowed=True):
    """Call ``parallel(*args)`` when ``size >= minimum``, else ``serial(*args)``.

    `minimum` or `allowed` ``None`` (the caller's argument passed through) selects the serial
    twin at any size and leaves the parallel one out of the compiled code (same bits, less
    to compile: docs/decisions/cold-start.md). This body runs under NUMBA_DISABLE_JIT=1;
    compiled code takes the overload below.
    """
    if allowed is not None and minimum is not None and size >= minimum:
        parallel(*args)
    else:
        serial(*args)


def _is_none(t):
    return t is None or isinstance(t, types.NoneType)


# Not cached (no ``jit_options={"cache": True}``): its signature holds the twins' Dispatcher
# types, which Numba pickles by a per-process id. A cached index of this overload never hit
# in another process, grew by every process that compiled, and once it held more twins than
# Numba keeps alive (128 recent dispatchers) saving it raised ReferenceError ("underlying
# object has vanished") in a user's call. Inlined, it is part of each caller's cached code.
@overload(run_twins, inline="always")
def _run_twins_overload(serial, parallel, args, size, minimum, allowed=True):
    if _is_none(minimum) or _is_none(allowed):
        def serial_only(serial, parallel, args, size, minimum, allowed=True):
            serial(*args)
        return serial_only

    def pick(serial, parallel, args, size, minimum, allowed=True):
        if size >= minimum:
            parallel(*args)
        else:
            serial(*args)
    return pick
