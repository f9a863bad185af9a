"""Loader-mocked fixtures: the real execution modules behind the deploy's __salt__."""

import pytest

from harness.loader import (
    caddy_source_mod,
    certsync_mod,
    deploy_functions,
    deploy_mod,
    npm_source_mod,
    source_mod,
)


@pytest.fixture
def loader_modules():
    """The dunders of a minion with the certsync, certsync_source and certsync_deploy
    modules loaded."""
    return {
        certsync_mod: {"__context__": {}, "__opts__": {"test": False}},
        source_mod: {"__salt__": deploy_functions()},
        npm_source_mod: {"__salt__": deploy_functions()},
        caddy_source_mod: {"__salt__": deploy_functions(), "__context__": {}},
        deploy_mod: {"__salt__": deploy_functions(), "__opts__": {"test": False}},
    }
