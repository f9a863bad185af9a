"""The consumer kinds behind one interface (certsync_consumer, loader mocked): the
kinds a minion has are the modules that loaded, a third kind is one module of its own
(no edit anywhere else), and a kind or a setting that is not there is named."""

import textwrap

import pytest

from harness.loader import (
    certsync_mod,
    consumer_mod,
    deploy_mod,
    load_loader_module,
    salt_functions,
)
from harness.pki import write_pair

HOST = "mail.example.test"

#: A throwaway kind: the pair's directory is all it reads; its "reload" notes a line.
THIRD_KIND = '''
"""A consumer kind of a test's own: a service that reads the pair in place."""

__virtualname__ = "certsync_consumer_noted"


def settings():
    return ["note"]


def dest(hostname, given, route="default"):
    return given["dir"]


def prepare(dest, hostname, endpoints, given):
    return {"services": ["noted"], "endpoints": endpoints, "backoff": dest, **given}


def layout(dest, fullchain, hostname, prepared):
    notes = ["noted the layout"]
    return {"dirs": [dest], "names": [], "files": {}, "originals": {}, "notes": notes}


def unservable(dest, hostname, given):
    return []


def checks(hostname, validation, test, prepared):
    return []


def preflight(prepared):
    return None


def drift(dest, prepared):
    return []


def reload(dest, prepared):
    with open(prepared["note"], "a", encoding="utf-8") as handle:
        handle.write(open(dest + "/cert.pem", encoding="ascii").read()[:27] + "\\n")
    return {"noted": {"ok": True, "output": "noted"}}


def restart(services, dest, prepared):
    return {}


def stale(protocols, prepared):
    return []


def uncovered(dest, hostname, prepared):
    return {"uncovered": {}, "dropped": {}}
'''


@pytest.fixture
def configure_loader_modules(loader_modules):
    return loader_modules


@pytest.fixture
def third_kind(tmp_path, monkeypatch):
    """The third kind's module file, loaded as the loader loads a synced module."""
    path = tmp_path / "_modules" / "certsync_consumer_noted.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(THIRD_KIND))
    monkeypatch.setattr("harness.loader.SALT_TREE", tmp_path)
    module = load_loader_module("modules", "certsync_consumer_noted")
    for loaded in (consumer_mod, deploy_mod):
        for name, function in salt_functions(module, "certsync_consumer_noted").items():
            monkeypatch.setitem(loaded.__salt__, name, function)
    # the minion reads its custom modules from this directory too (module_dirs)
    dirs = [*consumer_mod.__opts__["module_dirs"], str(path.parent)]
    monkeypatch.setitem(consumer_mod.__opts__, "module_dirs", dirs)
    return module


def test_the_kinds_are_the_modules_that_loaded(third_kind):
    assert consumer_mod.kinds() == ["mailcow", "noted", "service"]
    assert consumer_mod.settings("noted") == ["note"]
    assert consumer_mod.kind() == "mailcow"


def test_a_third_kind_deploys_with_no_edit_outside_its_module(third_kind, tmp_path, ca):
    dest, note = tmp_path / "pair", tmp_path / "notes"
    dest.mkdir()
    issued = ca.leaf(HOST)
    source = write_pair(tmp_path / "src", issued, "fullchain.pem", "privkey.pem")[0]
    ret = deploy_mod.deploy(
        str(dest), HOST, source=str(tmp_path / "src"), consumer="noted", note=str(note)
    )
    assert ret["result"] is True, ret["comment"]
    assert "reloaded noted" in ret["comment"] and "noted the layout" in ret["comment"]
    assert note.read_text() == "-----BEGIN CERTIFICATE-----\n"
    assert certsync_mod.deployed_info(str(dest))["fingerprint"] == issued.fingerprint
    assert source  # the source pair stays where it was


def test_an_unknown_kind_or_setting_is_named_and_nothing_changes(tmp_path, ca):
    dest = tmp_path / "pair"
    dest.mkdir()
    write_pair(tmp_path / "src", ca.leaf(HOST), "fullchain.pem", "privkey.pem")
    ret = deploy_mod.deploy(str(dest), HOST, source=str(tmp_path / "src"), consumer="haproxy")
    assert ret["result"] is False
    assert ret["comment"] == (
        "Nothing deployed: unknown consumer kind 'haproxy': no certsync_consumer_haproxy module "
        "on this minion (its kinds: mailcow, service; saltutil.sync_modules, and see the "
        "minion's log for load errors)"
    )
    ret = deploy_mod.deploy(
        str(dest), HOST, source=str(tmp_path / "src"), consumer="service", services=["x"]
    )
    assert ret["comment"] == (
        "Nothing deployed: services: not a setting of the service consumer (its settings: "
        "dir, files, units, reload_commands, haproxy_socket)"
    )
    assert list(dest.iterdir()) == []
