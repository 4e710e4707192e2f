"""Verified, atomic file download with a progress bar.

Only the standard library is used (``urllib``), so the loader works without
extra dependencies. A download goes to a temporary file beside its target and
is renamed into place only after its length and checksum are verified: an
interrupted or corrupted transfer never leaves a half-written file where the
loader would later find it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["DownloadError", "download_file"]

_CHUNK = 1 << 16


class DownloadError(OSError):
    """A download failed: network or HTTP error, short body, or checksum mismatch."""


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    checksum: tuple[str, str],
    timeout: float = 30.0,
    progress: bool | None = None,
) -> Path:
    """Download ``url`` to ``dest``, verify it, and move it into place atomically.

    Parameters
    ----------
    url : str
        Address to fetch (``http``, ``https`` or ``file``).
    dest : str or os.PathLike
        Final path. Its folder is created if needed.
    checksum : (str, str)
        ``(algorithm, hexdigest)``, e.g. ``("sha256", "440f...")``; the
        algorithm is any name :func:`hashlib.new` accepts.
    timeout : float, optional
        Socket timeout in seconds for connecting and for each read.
    progress : bool or None, optional
        Show a tqdm progress bar. ``None`` (default) shows it only when
        standard error is a terminal.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    DownloadError
        On any network or HTTP error, a body shorter than its
        ``Content-Length``, or a checksum mismatch. Nothing is left at
        ``dest`` or beside it in that case.
    """
    algorithm, expected = checksum
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.new(algorithm)
    # Same folder as dest so that os.replace is an atomic rename, never a copy.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - URL is ours or the user's mirror
            except urllib.error.HTTPError as exc:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise DownloadError(f"{url}: {reason}") from exc
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                received = 0
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    disable=None if progress is None else not progress,
                    leave=False,
                ) as bar:
                    while True:
                        try:
                            chunk = response.read(_CHUNK)
                        except (OSError, ValueError) as exc:  # includes IncompleteRead, timeouts, resets
                            raise DownloadError(f"{url}: transfer failed after {received} bytes ({exc})") from exc
                        if not chunk:
                            break
                        out.write(chunk)
                        hasher.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            # http.client returns a short body without raising when the
            # server closes early, so the length is checked here.
            if total is not None and received != total:
                raise DownloadError(f"{url}: truncated body, received {received} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        digest = hasher.hexdigest()
        if digest.lower() != expected.lower():
            raise DownloadError(
                f"{url}: {algorithm.upper()} mismatch (expected {expected}, got {digest}); "
                "the mirror served a different or damaged file"
            )
        os.replace(tmp, dest)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a partial file behind.
        tmp.unlink(missing_ok=True)
        raise
    return dest
