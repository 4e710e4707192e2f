"""The book's own code (``../shared/book-reference``, MIT) as a test reference.

``book("common.multi_layer_net")`` imports a module of the book's repository; a test that
needs it is skipped with the reason when the folder is absent (CI sets it up; see .ci/run).
"""
import importlib
import os
import sys

import pytest

from conftest import MISSING_BOOK

ROOT = os.environ.get("FASTBP_BOOK_REFERENCE", os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "book-reference"))


def book(module):
    """The book's `module` (e.g. ``"common.optimizer"``), or skip the calling test."""
    if not os.path.isdir(os.path.join(ROOT, "common")):
        pytest.skip(f"{MISSING_BOOK} the book's code is not at {os.path.abspath(ROOT)} "
                    "(set FASTBP_BOOK_REFERENCE)")
    root = os.path.abspath(ROOT)
    if root not in sys.path:
        sys.path.append(root)
    return importlib.import_module(module)
