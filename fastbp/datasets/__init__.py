"""Datasets for fastbp: MNIST and Fashion-MNIST with the book's ``load_mnist`` API.

See :mod:`fastbp.datasets.mnist` for where files are looked up and how
downloads are verified.
"""

from .download import DownloadError, download_file
from .idx import parse_idx, read_idx
from .mnist import (
    DATASETS,
    DatasetNotFoundError,
    DatasetSpec,
    cache_dir,
    load_mnist,
    load_split,
    search_dirs,
)

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "DatasetSpec",
    "DownloadError",
    "cache_dir",
    "download_file",
    "load_mnist",
    "load_split",
    "parse_idx",
    "read_idx",
    "search_dirs",
]
