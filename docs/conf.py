"""Sphinx configuration: autodoc/autosummary from docstrings, MyST pages.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(``pip install -e ".[docs]"``). No notebook is executed; docstring examples
run as doctests under pytest (``--doctest-modules``), not here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Document the checkout this file belongs to, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jaxfit

project = "jaxfit"
author = "jaxfit authors"
copyright = "jaxfit authors"
release = jaxfit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# Markdown (MyST): `$...$` math, `:::` fences, and anchors for `#`/`##`/`###`
# headings so that `page.md#section` links resolve.
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# API reference: one generated page per public name (docs/api/generated is
# written at build time and ignored by git).
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"

# Docstrings are Google style (Args:/Returns:/Example:).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = False  # Attributes: as attribute entries
# Attribute types are in the text; annotations would name private modules.
napoleon_attr_annotations = False

# Cross-links to the libraries jaxfit builds on. Off by default so that the
# build needs no network (and cannot fail on an unreachable inventory); set
# JAXFIT_DOCS_INTERSPHINX=1 to enable.
intersphinx_mapping = {}
if os.environ.get("JAXFIT_DOCS_INTERSPHINX"):
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "jax": ("https://docs.jax.dev/en/latest", None),
        "optax": ("https://optax.readthedocs.io/en/latest", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "scipy": ("https://docs.scipy.org/doc/scipy", None),
    }

html_title = f"jaxfit {release}"
try:  # the theme of the JAX ecosystem (installed by the `docs` extra)
    import sphinx_book_theme  # noqa: F401

    html_theme = "sphinx_book_theme"
    html_theme_options = {"show_toc_level": 2, "navigation_with_keys": False}
except ImportError:  # still builds, warning-free, with Sphinx's default theme
    html_theme = "alabaster"


def _join_wrapped_argument_names(app, what, name, obj, options, lines):
    """Joins an ``Args:`` entry whose names wrap after a comma.

    Google style wants an entry's names on one line (``a, b, c: text``);
    some docstrings wrap a long list of shared names (``a, b,`` then
    ``c: text`` indented below), which napoleon cannot parse. Runs before
    napoleon (priority 400 < its 500) and edits ``lines`` in place.
    """
    del app, what, name, obj, options
    section = None  # indentation of the current Args: header
    entry = None  # indentation of its entries
    i = 0
    while i < len(lines):
        text = lines[i].strip()
        indent = len(lines[i]) - len(lines[i].lstrip())
        if text in ("Args:", "Arguments:", "Parameters:"):
            section, entry = indent, None
        elif section is not None and text:
            if indent <= section:
                section = None
            else:
                entry = indent if entry is None else entry
                wrapped = text.endswith(",") and ":" not in text
                if indent == entry and wrapped and i + 1 < len(lines):
                    lines[i] = f"{lines[i].rstrip()} {lines[i + 1].strip()}"
                    del lines[i + 1]
                    continue
        i += 1


def setup(app):
    app.connect("autodoc-process-docstring", _join_wrapped_argument_names, 400)
