"""Unit tests of certsync_deploy: how it finds the certsync.deployed state function."""

import shutil

import pytest
import salt.config
from salt.exceptions import CommandExecutionError

from harness.loader import SALT_TREE, UTILS, certsync_mod, load_loader_module, salt_functions

deploy_mod = load_loader_module("modules", "certsync_deploy")


@pytest.fixture
def opts(tmp_path):
    opts = salt.config.minion_config(None)
    opts["extension_modules"] = str(tmp_path / "extmods")
    return opts


@pytest.fixture
def configure_loader_modules(opts):
    functions = salt_functions(certsync_mod, "certsync")
    return {
        deploy_mod: {
            "__opts__": opts,
            "__salt__": functions,
            "__utils__": UTILS,
            "__context__": {},
        }
    }


def test_the_state_function_is_loaded_from_the_synced_states_alone(opts, tmp_path):
    synced = tmp_path / "extmods" / "states"
    synced.mkdir(parents=True)
    shutil.copy(SALT_TREE / "_states" / "certsync.py", synced / "certsync.py")
    state = deploy_mod._state_function(opts)
    assert state.__name__ == "deployed"
    assert state.__globals__["__file__"] == str(synced / "certsync.py")


def test_a_state_that_is_not_synced_is_named_with_the_fix(opts, tmp_path):
    synced = tmp_path / "extmods" / "states"
    with pytest.raises(CommandExecutionError) as error:
        deploy_mod.deployed("/opt/mailcow-dockerized/data/assets/ssl", hostname="mail.example.test")
    assert str(error.value) == (
        f"the certsync.deployed state is not available in {synced}: sync it "
        "(saltutil.sync_states) and see the minion's log for load errors"
    )
