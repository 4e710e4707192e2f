"""Writing a file so that a reader never sees it half-written."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *,
                 mode: int | None = None) -> Path:
    """Write `path` through ``write(fh)`` on a temporary file in the same folder, synced to
    disk and then renamed over `path`: readers see the old file or the new one, never a
    part, and a failed write leaves `path` as it was (the temporary file is removed).

    Parameters
    ----------
    path : pathlib.Path
    write : callable
        Called once with the temporary file, opened for binary writing.
    mode : int, optional
        Permission bits for the file (``mkstemp`` creates it 0600, private).

    Returns
    -------
    pathlib.Path
        `path`.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
