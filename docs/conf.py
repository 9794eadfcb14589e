"""Sphinx configuration of mtrl_fast's documentation site: ``pip install ".[docs]"``, then
``sphinx-build -W -b html docs docs/_build/html``."""

import mtrl_fast

project = "mtrl_fast"
author = "the mtrl_fast developers"
release = version = mtrl_fast.__version__

extensions = ["myst_parser", "numpydoc", "sphinx.ext.autodoc", "sphinx.ext.autosummary"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3  # the pages link to each other's sections by GitHub's anchors

autosummary_generate = True
autodoc_typehints = "none"  # the numpydoc sections say the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

html_theme = "pydata_sphinx_theme"
html_title = f"mtrl_fast {version}"
html_theme_options = {"navigation_with_keys": False}
