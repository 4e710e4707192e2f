"""Sphinx configuration of fastbp's documentation (``sphinx-build -W -b html docs docs/_build``).

Guides and decision records are Markdown (MyST); the API reference is generated from the
numpydoc docstrings by autodoc. Numba dispatchers (``@njit`` functions) are documented as
functions: autodoc reads the signature and docstring of the wrapped Python function.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Importing fastbp must not touch the user's environment while the docs build.
os.environ.setdefault("FASTBP_NO_ENV", "1")

project = "fastbp"
author = "the fastbp developers"
copyright = "2026, the fastbp developers"  # noqa: A001 (Sphinx's name)

import fastbp  # noqa: E402

release = version = fastbp.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinxarg.ext",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "**/__pycache__"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
# Keep "--option" as typed (the CLI reference and code-like text): no en dashes.
smartquotes = False

autodoc_member_order = "bysource"
autodoc_typehints = "none"          # numpydoc sections already give the types
autodoc_default_options = {"members": True, "show-inheritance": False}
autosummary_generate = False
numpydoc_show_class_members = False  # members are listed by autodoc itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "furo"
html_title = f"fastbp {release}"
html_static_path: list[str] = []

# sphinx-argparse's domain does not implement MyST's "any" cross-reference lookup; MyST warns
# about that on every unresolved Markdown link it tries against all domains.
suppress_warnings = ["myst.domains"]


def _skip_generated_members(app, what, name, obj, skip, options):
    """scikit-learn generates ``set_<method>_request`` methods on every estimator (metadata
    routing); their docstrings refer to scikit-learn's own glossary, so leave them out."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_generated_members)
