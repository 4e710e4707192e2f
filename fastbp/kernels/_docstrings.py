"""One text for a docstring part that several functions share. A leaf module at the bottom
layer (it imports nothing of fastbp): the kernels use it, and every layer above may."""


def with_doc(**parts):
    """Decorator (below ``@njit`` on a kernel): fill the ``{name}`` fields of the function's
    docstring from `parts`, so that functions sharing a parameter share its one description."""
    def fill(func):
        func.__doc__ = func.__doc__.format(**parts)
        return func
    return fill
