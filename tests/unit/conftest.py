"""Loader-mocked fixtures: the real execution module behind the state's __salt__."""

import pytest

from harness.loader import UTILS, UTILS_USERS, certsync_mod, certsync_state, salt_functions


@pytest.fixture(autouse=True)
def loader_utils(setup_loader_mock):
    """salt://_utils in ``__utils__``, as a minion's loader has it: the loader mock
    leaves ``__utils__`` empty unless a test's configure_loader_modules sets it."""
    for module in UTILS_USERS:
        if not module.__utils__:
            module.__utils__.update(UTILS)  # the mock's own dict, gone after the test


@pytest.fixture
def loader_modules():
    """The dunders of a minion with the certsync module loaded."""
    salt_funcs = salt_functions(certsync_mod, "certsync")
    return {
        certsync_mod: {"__context__": {}, "__opts__": {"test": False}},
        certsync_state: {"__salt__": salt_funcs, "__opts__": {"test": False}},
    }
