"""Sphinx configuration of certsync's documentation (MyST Markdown, autodoc).

certsync's loader modules are files under salt/_<kind>/, not a package: each one is
imported here as ``certsync_<kind>.<name>`` (``certsync_modules.certsync``,
``certsync_states.certsync``, ...) with the loader's dunders present and empty, as a
minion's loader would give them, so autodoc reads their docstrings."""

import importlib.util
import pathlib
import sys
import types

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The loader kinds a reference page is made for: salt/_<dir> -> certsync_<package>.
KINDS = {
    "_modules": "modules",
    "_states": "states",
    "_runners": "runners",
    "_beacons": "beacons",
    "_engines": "engines",
    "_output": "output",
}
DUNDERS = ("__salt__", "__opts__", "__utils__", "__pillar__", "__grains__", "__context__")

project = "certsync"
author = "the certsync developers"
copyright = "the certsync developers"
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
html_theme = "alabaster"
autodoc_default_options = {"members": True, "member-order": "bysource"}


def _load(kind, path):
    package = f"certsync_{KINDS[kind]}"
    if package not in sys.modules:
        sys.modules[package] = types.ModuleType(package)
        sys.modules[package].__path__ = []
    name = f"{package}.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    for dunder in DUNDERS:
        setattr(module, dunder, {})
    sys.modules[name] = module
    spec.loader.exec_module(module)


for _kind in KINDS:
    for _path in sorted((ROOT / "salt" / _kind).glob("*.py")):
        _load(_kind, _path)


def _without_title(app, what, name, obj, options, lines):
    """A module docstring's own title (a line and its ``===`` underline) is the page's
    heading already: autodoc may not put a section inside the page."""
    if what == "module" and len(lines) > 1 and set(lines[1].strip()) == {"="}:
        del lines[:2]


def setup(app):
    app.connect("autodoc-process-docstring", _without_title)
