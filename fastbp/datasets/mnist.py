"""MNIST and Fashion-MNIST loaders with the book's ``load_mnist`` interface.

Files are looked up, one by one, in this order:

1. ``data_dir`` passed by the caller,
2. the folder in the ``FASTBP_DATA_DIR`` environment variable,
3. the user cache folder (:func:`cache_dir`),
4. the system folder of Debian's ``dataset-fashion-mnist`` package
   (``/usr/share/datasets/<dataset>/``),

each of them holding one sub-folder per dataset (``mnist/``,
``fashion-mnist/``). A file is accepted whether gzip-compressed or not. If it
is nowhere, it is downloaded into the cache from the publisher's mirrors (or
``FASTBP_MIRROR``) and verified against the published checksum. Local files
are *not* checksum-verified, because Debian recompressed its copies: they are
accepted when their IDX structure is valid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .download import DownloadError, download_file
from .idx import read_idx

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "DatasetSpec",
    "cache_dir",
    "load_mnist",
    "load_split",
    "search_dirs",
]

SPLITS = ("train", "test")
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_EXPECTED_COUNT = {"train": 60000, "test": 10000}

#: Folders a distribution package may install datasets into; one sub-folder
#: per dataset. A module constant so tests can point it elsewhere.
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset is published and how its files are verified.

    Attributes
    ----------
    name : str
        Sub-folder name and ``dataset=`` value.
    mirrors : tuple of str
        Base URLs tried in order; a file's URL is ``base + file name``.
    checksums : dict
        File name -> ``(algorithm, hexdigest)`` as published.
    """

    name: str
    mirrors: tuple[str, ...]
    checksums: dict[str, tuple[str, str]]


#: The supported datasets. The checksums are the publishers' own: SHA-256 for
#: MNIST, MD5 for Fashion-MNIST (Zalando publishes only MD5).
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        checksums={
            "train-images-idx3-ubyte.gz": ("sha256", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),  # noqa: E501
            "train-labels-idx1-ubyte.gz": ("sha256", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),  # noqa: E501
            "t10k-images-idx3-ubyte.gz": ("sha256", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            "t10k-labels-idx1-ubyte.gz": ("sha256", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        },
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
        checksums={
            "train-images-idx3-ubyte.gz": ("md5", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            "train-labels-idx1-ubyte.gz": ("md5", "25c81989df183df01b3e8a0aad5dffbe"),
            "t10k-images-idx3-ubyte.gz": ("md5", "bef4ecab320f06d8554ea6380940ec79"),
            "t10k-labels-idx1-ubyte.gz": ("md5", "bb300cfdad3c16e7a12a480ee83cd310"),
        },
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is in none of the searched folders and could not be downloaded."""


def cache_dir() -> Path:
    """Return the user cache folder for downloaded datasets.

    ``FASTBP_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/fastbp``, else
    ``~/.cache/fastbp``. Datasets go into one sub-folder each.
    """
    env = os.environ.get("FASTBP_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fastbp"


def _spec(dataset: str) -> DatasetSpec:
    if not isinstance(dataset, str):
        raise TypeError(f"dataset must be a str, got {type(dataset).__name__}; use one of {sorted(DATASETS)}")
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; use one of {sorted(DATASETS)}") from None


def search_dirs(dataset: str = "mnist", data_dir: str | os.PathLike | None = None) -> list[Path]:
    """List the local folders searched for ``dataset``'s files, in order.

    Parameters
    ----------
    dataset : {"mnist", "fashion-mnist"}
    data_dir : str or os.PathLike, optional
        A folder holding one sub-folder per dataset. A folder that is itself
        named like the dataset (``.../fashion-mnist``) is searched directly too.

    Returns
    -------
    list of pathlib.Path
        The cache folder is the third entry unless ``data_dir`` or
        ``FASTBP_DATA_DIR`` are missing.
    """
    spec = _spec(dataset)
    dirs: list[Path] = []
    roots = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    env = os.environ.get("FASTBP_DATA_DIR")
    if env:
        roots.append(Path(env).expanduser())
    for root in roots:
        dirs.append(root / spec.name)
        if root.name == spec.name:
            dirs.append(root)
    dirs.append(cache_dir() / spec.name)
    dirs.extend(d / spec.name for d in SYSTEM_DIRS)
    return dirs


def _mirrors(spec: DatasetSpec) -> tuple[str, ...]:
    env = os.environ.get("FASTBP_MIRROR")
    if env:
        # One mirror for both datasets is possible with a {dataset} placeholder.
        return (env.replace("{dataset}", spec.name),)
    return spec.mirrors


def _find_file(spec: DatasetSpec, fname: str, data_dir, download: bool, progress) -> Path:
    dirs = search_dirs(spec.name, data_dir)
    for d in dirs:
        for candidate in (d / fname, d / fname.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    where = ", ".join(str(d) for d in dirs)
    files = ", ".join(f for pair in _FILES.values() for f in pair)
    hint = (
        f"Put the four files ({files}) in {cache_dir() / spec.name}, "
        f"or in <D>/{spec.name}/ and pass data_dir=<D> (CLI: --data-dir D) or set FASTBP_DATA_DIR=<D>."
    )
    if not download:
        raise DatasetNotFoundError(f"{spec.name} file {fname} not found and download=False.\nSearched: {where}\n{hint}")
    dest = cache_dir() / spec.name / fname
    errors = []
    for base in _mirrors(spec):
        url = base if base.endswith("/") else base + "/"
        try:
            return download_file(url + fname, dest, checksum=spec.checksums[fname], progress=progress)
        except DownloadError as exc:
            errors.append(str(exc))
    reasons = "\n  ".join(errors)
    raise DatasetNotFoundError(
        f"{spec.name} file {fname} not found locally and the download failed "
        f"({errors[-1] if errors else 'no mirror'}).\n"
        f"Searched: {where}\nDownload errors:\n  {reasons}\n{hint}"
    )


def _check_bool(name: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def load_split(
    split: str,
    *,
    dataset: str = "mnist",
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split (``"train"`` or ``"test"``) of MNIST or Fashion-MNIST.

    Use this when only one split is needed or available, e.g. the MNIST test
    split when the training images are missing.

    Parameters
    ----------
    split : {"train", "test"}
    dataset : {"mnist", "fashion-mnist"}, optional
    normalize : bool, optional
        ``True``: float32 images in [0, 1]. ``False``: the raw uint8 pixels.
    flatten : bool, optional
        ``True``: images of shape (N, 784). ``False``: (N, 1, 28, 28).
    one_hot_label : bool, optional
        ``True``: float32 one-hot labels of shape (N, 10). ``False``: int64
        labels of shape (N,).
    data_dir : str or os.PathLike, optional
        Folder holding ``mnist/`` and/or ``fashion-mnist/``; searched first.
    download : bool, optional
        Download missing files into the cache (default ``True``).
    progress : bool or None, optional
        Download progress bar; ``None`` shows it only on a terminal.

    Returns
    -------
    x : numpy.ndarray
    t : numpy.ndarray

    Raises
    ------
    ValueError
        Unknown ``split`` or ``dataset``; an invalid, truncated or mismatched
        file (the message names it).
    DatasetNotFoundError
        A file is missing and could not be downloaded; the message says where
        to put it.
    """
    spec = _spec(dataset)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    for name, value in (("normalize", normalize), ("flatten", flatten), ("one_hot_label", one_hot_label),
                        ("download", download)):
        _check_bool(name, value)
    img_name, lbl_name = _FILES[split]
    img_path = _find_file(spec, img_name, data_dir, download, progress)
    lbl_path = _find_file(spec, lbl_name, data_dir, download, progress)
    images = read_idx(img_path, ndim=3)
    labels = read_idx(lbl_path, ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise ValueError(f"{img_path}, {lbl_path}: expected unsigned-byte IDX data, "
                         f"found {images.dtype}/{labels.dtype}")
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{img_path}: expected 28x28 images, found {images.shape[1]}x{images.shape[2]}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{img_path} holds {images.shape[0]} images but {lbl_path} holds {labels.shape[0]} labels")
    if images.shape[0] != _EXPECTED_COUNT[split]:
        # Both datasets have fixed sizes; a different count means a wrong file.
        raise ValueError(f"{img_path}: expected {_EXPECTED_COUNT[split]} {split} images, found {images.shape[0]}")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{lbl_path}: labels must be 0..9, found {int(labels.max())}")

    if normalize:
        x = images.astype(np.float32)
        x /= np.float32(255.0)
    else:
        x = images
    x = x.reshape(-1, 784) if flatten else x.reshape(-1, 1, 28, 28)
    if one_hot_label:
        t = np.zeros((labels.shape[0], 10), dtype=np.float32)
        t[np.arange(labels.shape[0]), labels] = 1.0
    else:
        t = labels.astype(np.int64)
    return x, t


def load_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    dataset: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load MNIST or Fashion-MNIST like the book's ``dataset.mnist.load_mnist``.

    Parameters
    ----------
    normalize, flatten, one_hot_label : bool, optional
        As in the book; see :func:`load_split`.
    dataset : {"mnist", "fashion-mnist"}, optional
    data_dir, download, progress : optional
        Where files are looked for first, whether missing files are downloaded, and the
        download progress bar: as in :func:`load_split`.

    Returns
    -------
    (x_train, t_train), (x_test, t_test)

    See Also
    --------
    load_split : one split only.

    Examples
    --------
    >>> (x_train, t_train), (x_test, t_test) = load_mnist(dataset="fashion-mnist")  # doctest: +SKIP
    >>> x_train.shape, x_train.dtype
    ((60000, 784), dtype('float32'))
    """
    kw = dict(dataset=dataset, normalize=normalize, flatten=flatten, one_hot_label=one_hot_label,
              data_dir=data_dir, download=download, progress=progress)
    return load_split("train", **kw), load_split("test", **kw)
