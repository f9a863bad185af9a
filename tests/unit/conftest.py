"""Loader-mocked fixtures: the real execution module behind the state's __salt__."""

import pytest

from harness.loader import certsync_mod, certsync_state, salt_functions


@pytest.fixture
def loader_modules():
    """The dunders of a minion with the certsync module loaded."""
    salt_funcs = salt_functions(certsync_mod, "certsync")
    return {
        certsync_mod: {"__context__": {}, "__opts__": {"test": False}},
        certsync_state: {"__salt__": salt_funcs, "__opts__": {"test": False}},
    }
