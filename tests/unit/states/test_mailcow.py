"""Unit tests of the mailcow states (loader mocked, the real mailcow module behind)."""

from unittest.mock import patch

import pytest
from salt.exceptions import CommandExecutionError

from harness.loader import mailcow_mod, mailcow_state


@pytest.fixture
def configure_loader_modules():
    return {
        mailcow_mod: {"__context__": {}, "__opts__": {}, "__salt__": {}},
        mailcow_state: {
            "__salt__": {"mailcow.conf_set": mailcow_mod.conf_set},
            "__opts__": {"test": False},
        },
    }


def test_conf_state_test_mode_and_booleans(checkout):
    before = (checkout / "mailcow.conf").read_text()
    with patch.dict(mailcow_state.__opts__, {"test": True}):
        ret = mailcow_state.conf_set(str(checkout), {"SKIP_LETS_ENCRYPT": True})
    assert ret["result"] is None
    assert ret["changes"] == {"SKIP_LETS_ENCRYPT": {"old": "n", "new": "y"}}
    assert (checkout / "mailcow.conf").read_text() == before
    ret = mailcow_state.conf_set(str(checkout), {"SKIP_LETS_ENCRYPT": True})
    assert ret["result"] is True
    assert "docker compose up -d" in ret["comment"]


def _reloads(results=None, error=None):
    calls = []

    def reload(services, path):
        calls.append((services, path))
        if error:
            raise error
        return results

    return calls, reload


def test_reloaded_alone_does_nothing_and_a_watch_reloads(checkout):
    calls, reload = _reloads({"dovecot-mailcow": {"ok": True, "output": ""}})
    with patch.dict(mailcow_state.__salt__, {"mailcow.reload": reload}):
        alone = mailcow_state.reloaded(str(checkout), ["dovecot-mailcow"])
        assert (alone["result"], alone["changes"], calls) == (True, {}, [])
        with patch.dict(mailcow_state.__opts__, {"test": True}):
            planned = mailcow_state.mod_watch(
                str(checkout), sfun="reloaded", services=["dovecot-mailcow"]
            )
        assert (planned["result"], planned["comment"], calls) == (
            None,
            "Would reload dovecot-mailcow",
            [],
        )
        done = mailcow_state.mod_watch(str(checkout), sfun="reloaded", services=["dovecot-mailcow"])
    assert done["result"] is True
    assert done["changes"] == {"reloaded": ["dovecot-mailcow"]}
    assert calls == [(["dovecot-mailcow"], str(checkout))]


@pytest.mark.parametrize(
    ("results", "error", "said"),
    [
        ({"dovecot-mailcow": {"ok": False, "error": "exit 89"}}, None, "dovecot-mailcow: exit 89"),
        (None, CommandExecutionError("no dovecot-mailcow container"), "no dovecot-mailcow"),
    ],
)
def test_a_failed_watch_reload_is_named(checkout, results, error, said):
    _, reload = _reloads(results, error)
    with patch.dict(mailcow_state.__salt__, {"mailcow.reload": reload}):
        ret = mailcow_state.mod_watch(str(checkout), sfun="reloaded", services=["dovecot-mailcow"])
    assert ret["result"] is False
    assert said in ret["comment"]
