"""The loader modules form layers, read from the source as the loader would call it:
every ``__salt__``/``__utils__`` name a module writes, plain or built as an f-string
(``f"certsync_source_{kind}.locate"`` reaches every ``certsync_source_<kind>``), and
the names held in variables first (``function = "certsync_deploy.deploy"``). No module
reaches one that reaches it back, directly or around a longer loop; the utils reach
nothing (a minion gives them neither ``__salt__`` nor ``__utils__``); the states,
beacons, engines, runners and outputters sit on top (nothing calls them)."""

import ast
import re

import pytest

from harness.loader import SALT_TREE

#: The loader kinds, by their directory under salt/; modules are named bare, the others
#: "<dir>:<name>" (a state and a module may share a name).
KINDS = ("_modules", "_utils", "_states", "_beacons", "_engines", "_runners", "_output")
#: A name the loader resolves: "module.function", or an f-string's "prefix_{}" family.
_NAME = re.compile(r"(\w*)(\{\})?(\w*)(?:\.\w*(?:\{\})?)?")


def _virtualname(tree, path):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__virtualname__" for t in node.targets
        ):
            return node.value.value
    return path.stem


def _subscripted(tree):
    """{id of a string node: "__salt__" or "__utils__"} for the strings written straight
    into ``__salt__[...]``/``__utils__[...]`` or tested with ``in``: those reach only
    that dunder's names (a util and a module may share a name)."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            found[id(node.slice)] = node.value.id
        elif isinstance(node, ast.Compare) and isinstance(node.comparators[-1], ast.Name):
            found[id(node.left)] = node.comparators[-1].id
    return found


def _literals(tree):
    """Every string the code writes, an f-string with ``{}`` for what it fills in, and
    the dunder it is written into (None: held in a variable first); docstrings left
    out."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    into = _subscripted(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
            )
            yield text, into.get(id(node))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.value, into.get(id(node))


def _targets(literal, names):
    """The loader names ``literal`` reaches: ``certsync.info`` one, ``certsync_dns_{}``
    and the prefix ``certsync_dns_`` every ``certsync_dns_<x>``; a literal that is no
    loader name reaches none."""
    if re.fullmatch(r"[a-z]\w*_", literal):  # a family by its prefix: f.startswith("x_")
        return {name for name in names if name.startswith(literal)}
    match = _NAME.fullmatch(literal)
    if not match or ("." not in literal and not match.group(2)):
        return set()
    head, hole, tail = match.groups()
    if not hole:
        return {head} & names
    if not head:  # f"{module}.{function}": the module is a variable, found where it is built
        return set()
    family = re.compile(re.escape(head) + r"\w+" + re.escape(tail))
    return {name for name in names if family.fullmatch(name)}


def graph(root=SALT_TREE):
    """Every loader module under ``root`` and the names it reaches."""
    parsed = {}
    for kind in KINDS:
        for path in sorted((root / kind).glob("*.py")):
            tree = ast.parse(path.read_text())
            name = _virtualname(tree, path)
            parsed[name if kind == "_modules" else f"{kind[1:]}:{name}"] = (kind, tree)

    def named(kind):
        return {name.split(":")[-1] for name, (k, _) in parsed.items() if k == kind}

    modules, utils, runners = named("_modules"), named("_utils"), named("_runners")
    edges = {}
    for name, (kind, tree) in parsed.items():
        text = ast.unparse(tree)
        reached = set()
        for literal, into in _literals(tree):
            salt, utils_ = into in (None, "__salt__"), into in (None, "__utils__")
            if salt and "__salt__" in text and kind == "_runners":  # a runner's: the runners
                reached |= {f"runners:{r}" for r in _targets(literal, runners)}
            elif salt and "__salt__" in text:
                reached |= _targets(literal, modules)
            if utils_ and "__utils__" in text:
                reached |= {f"utils:{u}" for u in _targets(literal, utils)}
        edges[name] = reached - {name}
    return edges


def _loop_from(edges, start):
    """A call path from ``start`` back to itself, or None."""
    paths = [[start]]
    for _ in range(len(edges) + 1):
        longer = []
        for path in paths:
            for callee in edges.get(path[-1], ()):
                if callee == start:
                    return [*path, start]
                if callee in edges and callee not in path:
                    longer.append([*path, callee])
        paths = longer
    return None


def loops(edges):
    return [loop for name in edges if (loop := _loop_from(edges, name))]


def test_the_graph_holds_every_kind_of_edge():
    edges = graph()
    assert {"certsync_source_npm", "certsync_source_caddy"} <= edges["certsync_source"]
    assert {"certsync_dns_rfc2136", "certsync_dns_cloudflare"} <= edges["certsync_dane"]
    assert "certsync_dns_cloudflare" in edges["certsync_settings"]  # by prefix
    assert "certsync_deploy" in edges["states:certsync"]
    assert "certsync_source" in edges["beacons:certsync"]
    assert "certsync_source" in edges["engines:certsync_watch"]
    assert "utils:certsync_pem" in edges["certsync"]
    assert "utils:certsync_certbot" in edges["certsync_source_npm"]


def test_no_module_calls_back_into_one_that_calls_it():
    found = loops(graph())
    assert found == [], " ; ".join(" -> ".join(loop) for loop in found)


def test_utils_reach_nothing_and_nothing_reaches_the_top_layer():
    edges = graph()
    assert {name: e for name, e in edges.items() if name.startswith("utils:") and e} == {}
    top = {name for name in edges if ":" in name and not name.startswith(("utils:", "runners:"))}
    assert {name for name, e in edges.items() if e & top} == set()


def _tree(tmp_path, files):
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


REGISTRY = """
__virtualname__ = "certsync_source"


def locate(kind, hostname):
    return __salt__[f"certsync_source_{kind}.locate"](hostname)
"""


@pytest.mark.parametrize(
    "provider",
    [
        'def locate(hostname):\n    return __salt__["certsync_source.locate"]("npm", hostname)\n',
        'FUNCTION = "certsync_source.locate"\n\n\ndef locate(hostname):\n'
        "    return __salt__[FUNCTION](hostname)\n",
        'def locate(hostname):\n    if "certsync_source.locate" in __salt__:\n        return 1\n',
    ],
    ids=["written", "through_a_variable", "asked_for"],
)
def test_a_throwaway_loop_through_f_string_dispatch_fails(tmp_path, provider):
    root = _tree(
        tmp_path,
        {
            "_modules/certsync_source.py": REGISTRY,
            "_modules/certsync_source_npm.py": provider,
        },
    )
    assert loops(graph(root))[0] == ["certsync_source", "certsync_source_npm", "certsync_source"]


def test_a_util_that_calls_a_module_is_seen(tmp_path):
    root = _tree(
        tmp_path,
        {
            "_modules/certsync.py": 'def info():\n    return __utils__["certsync_pem.now"]()\n',
            "_utils/certsync_pem.py": 'def now():\n    return __salt__["certsync.info"]()\n',
        },
    )
    edges = graph(root)
    assert edges["utils:certsync_pem"] == {"certsync"}
    assert loops(edges)[0] == ["certsync", "utils:certsync_pem", "certsync"]


def test_a_docstring_naming_a_module_is_no_edge(tmp_path):
    root = _tree(
        tmp_path,
        {
            "_modules/a.py": 'def f():\n    """Calls b.g."""\n    return __salt__["c.h"]()\n',
            "_modules/b.py": 'def g():\n    return __salt__["a.f"]()\n',
            "_modules/c.py": "def h():\n    return 1\n",
        },
    )
    assert graph(root)["a"] == {"c"}
