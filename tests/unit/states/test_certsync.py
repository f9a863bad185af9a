"""Unit tests of the certsync states over certsync_deploy: thin, as x509_v2's are."""

import os

import pytest
from support import cases

from harness.loader import certsync_state, deploy_functions, deploy_mod, salt_functions
from harness.pki import write_pair

HOST = cases.HOST


@pytest.fixture
def configure_loader_modules(loader_modules):
    functions = {**deploy_functions(), **salt_functions(deploy_mod, "certsync_deploy")}
    return {**loader_modules, certsync_state: {"__salt__": functions, "__opts__": {"test": False}}}


@pytest.fixture
def layout(tmp_path, ca):
    return cases.make_layout(tmp_path, ca, ca.leaf(HOST, key_kind="ec-p256"))


def test_deployed_is_the_modules_deploy_with_salts_test_flag(layout, good):
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    before = cases.snapshot(layout.root)
    certsync_state.__opts__["test"] = True
    planned = certsync_state.deployed(layout.dest, HOST, source=layout.source, test=False)
    assert planned["result"] is None, planned["comment"]  # Salt's flag, not the argument
    assert cases.snapshot(layout.root) == before
    certsync_state.__opts__["test"] = False
    ret = certsync_state.deployed(layout.dest, HOST, source=layout.source, __id__="x")
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["new"]["fingerprint"] == good.fingerprint
    with open(os.path.join(layout.dest, "cert.pem"), "rb") as handle:
        assert handle.read() == good.fullchain_pem()


def test_an_argument_the_deploy_does_not_take_fails_the_state(layout):
    ret = certsync_state.deployed(layout.dest, HOST, source=layout.source, sources="typo")
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"] == (
        "Nothing deployed: sources: not a setting of the mailcow consumer (its settings: "
        "mailcow_dir, services, reload_commands, mail_domains, sni)"
    )


def test_rolled_back_without_a_previous_pair_changes_nothing(layout):
    before = cases.snapshot(layout.root)
    ret = certsync_state.rolled_back(layout.dest, HOST)
    assert ret["result"] is False
    assert ret["comment"].startswith("Nothing rolled back: ")
    assert cases.snapshot(layout.root) == before
