"""Sphinx configuration of the ebmppl site (``make docs``): built offline, warnings are errors.

Each build starts (``_ext/ebmppl_docs.py``) by copying the notebooks of the
top-level ``tutorials/`` folder into ``docs/tutorials/`` and writing the pages
of every module into ``docs/api/modules/`` (both gitignored). The notebooks are
rendered with the outputs stored in them: nothing is executed.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

import ebmppl  # noqa: E402

project = "ebmppl"
author = "the ebmppl authors"
copyright = "the ebmppl authors"
version = release = ebmppl.__version__

extensions = [
    "myst_nb",  # Markdown pages (MyST) and notebooks; it sets up myst_parser itself
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served from the site's _static/, not from a CDN
    "ebmppl_docs",  # tutorials copied in, module pages, references by identity
]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
nitpicky = True

# Types of other packages (no intersphinx: the build is offline) and of the standard library,
# as annotations and docstrings name them. Our own names are not ignored: they must resolve.
_EXTERNAL = ("jax", "numpy", "numpyro", "torch", "pyro", "flowjax", "optax", "os", "pathlib",
             "nn", "constraints")  # the last two: `torch.nn`, `torch.distributions.constraints` as imported
nitpick_ignore_regex = [
    (r"py:class", rf"({'|'.join(_EXTERNAL)})\..+"),
    (r"py:class", r"Distribution|TorchDistribution"),  # the hosts' classes, as the Potentials' annotations name them
]

# -- MyST and notebooks --------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3  # `[text](page.md#a-heading)`: the anchor is checked
nb_execution_mode = "off"  # the tutorials are rendered with their stored outputs
nb_ipywidgets_js = {}  # no widget scripts from a CDN ...
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]  # ... so their text

# -- autodoc: Google-style docstrings, types in the parameter lists --------------------------------------
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
autodoc_inherit_docstrings = False  # the hosts' kernel methods keep their docs at home
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# -- HTML, offline ----------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"ebmppl {release}"
