"""One text for a docstring part that several functions share (a leaf module: it imports
nothing of fastbp, so every layer, kernels included, may use it)."""


def with_doc(**parts):
    """Decorator (below ``@njit`` on a kernel): fill the ``{name}`` fields of the function's
    docstring from `parts`, so that functions sharing a parameter share its one description."""
    def fill(func):
        func.__doc__ = func.__doc__.format(**parts)
        return func
    return fill
