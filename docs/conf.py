"""Sphinx configuration of the dask_polar documentation.

Build (warnings are errors, as in CI)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Before reading the sources, this file runs two small generators that write into
``docs/_generated/`` (kept out of git): ``render_figures.py`` draws the theory page's figures
with the library's own plotting functions, and ``render_benchmarks.py`` turns
``benchmarks/results/*.json`` into tables (a note when there are no results yet).
"""

from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
GENERATED = HERE / "_generated"

# the package itself (also when it is not installed) and the generators next to this file
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import dask_polar  # noqa: E402
import render_benchmarks  # noqa: E402
import render_figures  # noqa: E402

# -- project -----------------------------------------------------------------------------------

project = "dask_polar"
author = "dask_polar developers"
copyright = "dask_polar developers"
release = dask_polar.__version__
version = ".".join(release.split(".")[:2])

# -- general -----------------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
# _generated holds include files, not documents of their own
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# the package's docstrings write `name` for a cross-reference (numpydoc's convention)
default_role = "py:obj"
# nothing may need the network at build time (CI has none): no intersphinx
nitpicky = False

# -- autodoc and numpydoc ----------------------------------------------------------------------

autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
# the numpydoc sections carry the types; the signatures stay readable without them
autodoc_typehints = "none"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
# autosummary only draws overview tables here; the entries are written out by autodoc
autosummary_generate = False

numpydoc_show_class_members = False  # autodoc's :members: documents them once
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- HTML --------------------------------------------------------------------------------------

try:
    import pydata_sphinx_theme  # noqa: F401

    html_theme = "pydata_sphinx_theme"
    html_theme_options = {
        "navigation_with_keys": False,
        "show_toc_level": 2,
        "secondary_sidebar_items": ["page-toc"],
    }
except ImportError:  # Sphinx's built-in theme: the docs still build without the extra
    html_theme = "alabaster"
    html_theme_options = {}
html_title = f"dask_polar {release}"
html_static_path: list[str] = []
html_show_sourcelink = False


# -- generated content -------------------------------------------------------------------------


def _generate(app) -> None:
    """Write the figures and benchmark tables the pages include."""
    GENERATED.mkdir(exist_ok=True)
    render_figures.render(GENERATED, logger=_logger())
    render_benchmarks.render(ROOT / "benchmarks" / "results", GENERATED / "benchmarks_tables.rst")


def _logger():
    from sphinx.util import logging

    return logging.getLogger("dask_polar.docs")


def _resolve_short_name(app, env, node, contnode):
    """Link `name` references that Python's rules do not find, if exactly one object matches.

    Docstrings say `PolarCode` or `last_job()` wherever they are; Sphinx looks such a name up
    in the current module and class only. This looks for a unique object whose full name ends
    in ``.name`` (a module-level one first); ambiguous or unknown names stay plain code.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if target.endswith("()"):
        target = target[:-2]
    if not target:
        return None
    domain = env.get_domain("py")
    matches = domain.find_obj(
        env, node.get("py:module"), node.get("py:class"), target, node.get("reftype"), 1
    )
    # one object may be registered twice (its canonical name is an alias); a module-level
    # object wins over a method or attribute of the same short name
    matches = [(name, entry) for name, entry in matches if not entry.aliased]
    if len(matches) > 1:
        matches = [m for m in matches if m[1].objtype not in ("method", "attribute", "property")]
    if len(matches) != 1:
        return None
    from sphinx.util.nodes import make_refnode

    name, entry = matches[0]
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, name)


def setup(app) -> dict:
    app.connect("builder-inited", _generate)
    app.connect("missing-reference", _resolve_short_name)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
