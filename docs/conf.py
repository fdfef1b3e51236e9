"""Sphinx configuration of hddgeo's documentation.

Built offline (no intersphinx, nothing fetched) with warnings as errors by ``.ci/run``::

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html

The notebooks in ``notebooks/`` are copied into ``docs/notebooks/`` and executed at build time on their
quick settings (``HDDGEO_NOTEBOOK_QUICK=1``, digits), so the pages show their figures.
"""
import os
import shutil
import sys
from pathlib import Path

import sphinx.ext.autosummary as _autosummary

import hddgeo  # the installed package (.ci/setup installs the checkout in editable mode)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

project = "hddgeo"
author = "the hddgeo developers"
copyright = "2026, the hddgeo developers"
version = release = hddgeo.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served from the site itself: formulas render with no network
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]
# rst first: autosummary writes its generated pages with the first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "design_notes"]
root_doc = "index"

# -- the API reference: autosummary pages for the exported names (api.md lists them)
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False

# autosummary's one-line summaries end at the first ". "; the docstrings cite "paper Eq. 17", "Fig. 4"
_autosummary.WELL_KNOWN_ABBREVIATIONS = tuple(_autosummary.WELL_KNOWN_ABBREVIATIONS) + ("Eq.", "Eqs.", "Fig.", "Sec.")

# -- MyST and the notebooks
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = os.environ.get("HDDGEO_DOCS_EXECUTE", "force")  # "off" for a text-only build
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
# every notebook runs on its quick settings (seconds, digits); its kernel is this interpreter
os.environ["HDDGEO_NOTEBOOK_QUICK"] = "1"
os.environ.setdefault("HDDGEO_NOTEBOOK_DATASET", "digits")
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"

_NB_SRC, _NB_DST = ROOT / "notebooks", HERE / "notebooks"
_NB_DST.mkdir(exist_ok=True)
for _nb in sorted(_NB_SRC.glob("*.ipynb")):
    if not (_NB_DST / _nb.name).exists() or (_NB_DST / _nb.name).read_bytes() != _nb.read_bytes():
        shutil.copyfile(_nb, _NB_DST / _nb.name)

# -- HTML
html_theme = "furo"
html_title = f"hddgeo {release}"
html_static_path = ["_static"]
html_css_files = ["wide.css"]
html_show_sourcelink = False
nitpicky = False
