"""Loader-mocked fixtures: the real execution module behind the state's __salt__."""

import pytest
from support.loader import certsync_mod, certsync_state

EXPORTED = (
    "find_source",
    "validate",
    "compare",
    "deployed_info",
    "install",
    "rollback",
    "sni_dirs",
)


@pytest.fixture
def loader_modules():
    """The dunders of a minion with the certsync module loaded."""
    salt_funcs = {f"certsync.{name}": getattr(certsync_mod, name) for name in EXPORTED}
    return {
        certsync_mod: {"__context__": {}, "__opts__": {"test": False}},
        certsync_state: {"__salt__": salt_funcs, "__opts__": {"test": False}},
    }
