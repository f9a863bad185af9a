"""Every public function of certsync's execution modules and runner is one an operator
can call from the CLI, and its docstring shows how (a CLI Example, as Salt's own
modules do); every state function shows an SLS using it; what is only a helper is
private."""

import inspect

import pytest

from harness.loader import SALT_TREE, load_loader_module


def _files(kind):
    return [(kind, path.stem) for path in sorted((SALT_TREE / f"_{kind}").glob("*.py"))]


MODULES = _files("modules") + _files("runners")
STATES = _files("states")


def _public(module):
    return {
        name: func
        for name, func in vars(module).items()
        if inspect.isfunction(func)
        and not name.startswith("_")
        and func.__module__ == module.__name__
    }


@pytest.mark.parametrize(("kind", "name"), MODULES, ids=[f"{k}/{n}" for k, n in MODULES])
def test_every_public_function_has_a_cli_example(kind, name):
    module = load_loader_module(kind, name)
    functions = _public(module)
    assert functions, f"{kind}/{name}: no public function found"
    lacking = sorted(f for f, fn in functions.items() if "CLI Example" not in (fn.__doc__ or ""))
    assert lacking == [], f"{kind}/{name}: no CLI Example in {', '.join(lacking)}"


@pytest.mark.parametrize(("kind", "name"), STATES, ids=[f"{k}/{n}" for k, n in STATES])
def test_every_state_function_shows_an_sls_using_it(kind, name):
    module = load_loader_module(kind, name)
    functions = _public(module)
    functions.pop("mod_watch", None)  # Salt's hook for a watch requisite, in no SLS
    assert functions, f"{kind}/{name}: no public function found"
    lacking = sorted(
        f for f, fn in functions.items() if ".. code-block:: yaml" not in (fn.__doc__ or "")
    )
    assert lacking == [], f"{kind}/{name}: no SLS example in {', '.join(lacking)}"


#: The loader kinds the docs site has a reference page for: salt/_<kind>/<name>.py has
#: docs/reference/<kind>-<name>.md (docs/conf.py imports it as certsync_<kind>.<name>).
REFERENCED = ("modules", "states", "runners", "beacons", "engines", "output")


@pytest.mark.parametrize("kind", REFERENCED)
def test_every_loader_module_has_its_reference_page_in_the_docs(kind):
    pages = SALT_TREE.parent / "docs" / "reference"
    lacking = []
    for _, name in _files(kind):
        page = pages / f"{kind}-{name}.md"
        if f".. automodule:: certsync_{kind}.{name}\n" not in (
            page.read_text() if page.exists() else ""
        ):
            lacking.append(str(page.relative_to(SALT_TREE.parent)))
    assert lacking == [], f"no reference page (automodule) for: {', '.join(lacking)}"
