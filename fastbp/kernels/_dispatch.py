"""What the public ``@njit`` dispatchers of the elementwise kernels share: the flat view
their twins run on (their docstrings share parameter texts through
:func:`fastbp._docstrings.with_doc`).

The few lines in which each dispatcher flattens its arrays and picks its serial or parallel
twin by size stay in each dispatcher: a Numba function that took the twins as arguments
would be compiled (and cached) once per pair of twins and would hide each kernel's
signature, which is user-facing API.
"""
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def flat(a):
    """`a` as a 1-D view (a C-contiguous reshape copies nothing)."""
    return a.reshape(a.size)
