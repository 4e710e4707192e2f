"""Strict reader for the IDX format used by MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), one big-endian uint32 per dimension, then the data in C order.
The reader checks every part of that, because a silently short array would
show up much later as a wrong accuracy instead of as an error here.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["parse_idx", "read_idx"]

# IDX type codes and the big-endian numpy dtypes they stand for.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes, name: str = "<bytes>", *, ndim: int | None = None) -> np.ndarray:
    """Parse the bytes of an (already decompressed) IDX file.

    Parameters
    ----------
    data : bytes
        The whole file content.
    name : str, optional
        File name used in error messages.
    ndim : int, optional
        Expected number of dimensions (3 for images, 1 for labels).

    Returns
    -------
    numpy.ndarray
        Array of the declared shape, in native byte order. It owns its memory
        (not a read-only view of ``data``).

    Raises
    ------
    ValueError
        On a bad magic number, an unknown type code, an unexpected number of
        dimensions, or a data length that does not match the header.
    """
    if len(data) < 4:
        raise ValueError(f"{name}: not an IDX file: {len(data)} bytes, shorter than the 4-byte magic number")
    zero0, zero1, code, nd = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES:
        raise ValueError(
            f"{name}: not an IDX file: bad magic number 0x{data[:4].hex()} "
            "(expected 0x0000 followed by a type code such as 0x08 and the number of dimensions)"
        )
    if nd == 0:
        raise ValueError(f"{name}: IDX header declares 0 dimensions")
    if ndim is not None and nd != ndim:
        raise ValueError(f"{name}: expected an IDX file with {ndim} dimension(s), found {nd}")
    header = 4 + 4 * nd
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header: {len(data)} bytes, the header alone needs {header}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=nd, offset=4))
    dtype = _IDX_DTYPES[code]
    # Python ints: a forged header with huge dimensions must not overflow into a match.
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{name}: IDX file {what}: header declares shape {shape} ({expected} bytes in all), "
            f"file has {len(data)} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    # Copy into native byte order: frombuffer views are read-only and would
    # keep the whole compressed-file buffer alive.
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not.

    Compression is detected from the content (gzip magic bytes), not from the
    file name, so ``train-images-idx3-ubyte`` and its ``.gz`` both work.

    Parameters
    ----------
    path : str or os.PathLike
        File to read.
    ndim : int, optional
        Expected number of dimensions.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    ValueError
        If the gzip stream is truncated or corrupt, or the IDX content is
        invalid (see :func:`parse_idx`). The message names the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            # EOFError: stream cut short; BadGzipFile (an OSError) / zlib.error: corrupt data.
            raise ValueError(f"{path}: corrupt or truncated gzip file ({exc}); delete it and fetch it again") from exc
    return parse_idx(raw, str(path), ndim=ndim)
