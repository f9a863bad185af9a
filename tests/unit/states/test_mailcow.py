"""Unit tests of the mailcow states (loader mocked, the real mailcow module behind)."""

from unittest.mock import patch

import pytest

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
