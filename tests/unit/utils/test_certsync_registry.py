"""certsync_registry: a family's kinds found by their module files, none loaded."""

import pytest

from harness.loader import UTILS, consumer_mod

kinds = UTILS["certsync_registry.kinds"]


@pytest.fixture
def configure_loader_modules(loader_modules):
    return loader_modules


def test_kinds_are_the_module_files_of_the_custom_module_dirs(tmp_path):
    extmods, own = tmp_path / "extmods", tmp_path / "own"
    (extmods / "modules").mkdir(parents=True)
    own.mkdir()
    for path in (
        extmods / "modules" / "certsync_consumer_mailcow.py",
        extmods / "modules" / "certsync_consumer_service.pyc",
        own / "certsync_consumer_noted.py",
        own / "certsync_consumer_.py",  # the prefix alone: no kind
        own / "certsync_consumer_notes.txt",
        own / "certsync_dns_rfc2136.py",
    ):
        path.write_text("")
    opts = {"extension_modules": str(extmods), "module_dirs": [str(own), str(tmp_path / "gone")]}
    assert kinds(opts, "certsync_consumer_") == ["mailcow", "noted", "service"]
    assert kinds(opts, "certsync_dns_") == ["rfc2136"]
    assert kinds({}, "certsync_dns_") == []
    functions = {"certsync_consumer_service.settings": None, "certsync_consumer_x.settings": None}
    assert UTILS["certsync_registry.loaded"](opts, functions, "certsync_consumer_", "settings") == [
        "service"
    ]


class _Functions(dict):
    """A minion's ``__salt__`` that fails when iterated: iterating the loader's makes it
    import every execution module it has."""

    def __iter__(self):
        raise AssertionError("__salt__ was iterated")


def test_the_consumer_kinds_are_listed_without_loading_every_module(monkeypatch):
    functions = _Functions(consumer_mod.__salt__)
    monkeypatch.setattr(consumer_mod, "__salt__", functions)
    assert consumer_mod.kinds() == ["mailcow", "service"]
