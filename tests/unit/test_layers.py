"""The loader modules form layers: none calls (through ``__salt__``) a module that
calls it back, directly or around a longer loop."""

import re

from harness.loader import SALT_TREE

_CALL = re.compile(
    r'__salt__\[\s*"(\w+)\.|"(\w+)\.\w+" (?:not )?in __salt__|__salt__\.get\("(\w+)\.'
)


def _calls():
    graph = {}
    for path in sorted((SALT_TREE / "_modules").glob("*.py")):
        text = path.read_text()
        name = re.search(r'__virtualname__ = "(\w+)"', text)
        name = name.group(1) if name else path.stem
        graph[name] = {next(filter(None, m)) for m in _CALL.findall(text)} - {name}
    return graph


def _loop_from(graph, start):
    """A call path from ``start`` back to itself, or None."""
    paths = [[start]]
    for _ in range(len(graph) + 1):
        longer = []
        for path in paths:
            for callee in graph.get(path[-1], ()):
                if callee == start:
                    return [*path, start]
                if callee in graph and callee not in path:
                    longer.append([*path, callee])
        paths = longer
    return None


def test_no_module_calls_back_into_one_that_calls_it():
    graph = _calls()
    assert "certsync_status" in graph and "certsync" in graph["certsync_status"]
    loops = [loop for name in graph if (loop := _loop_from(graph, name))]
    assert loops == [], " ; ".join(" -> ".join(loop) for loop in loops)


def test_a_loop_is_found_however_long():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert _loop_from(graph, "a") == ["a", "b", "c", "a"]
    assert _loop_from(graph, "d") is None
