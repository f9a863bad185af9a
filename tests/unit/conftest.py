"""Loader-mocked fixtures: the real execution modules behind the deploy's __salt__, and
a mailcow checkout with its mailcow.conf."""

import os

import pytest

from harness.loader import (
    MINION_OPTS,
    caddy_source_mod,
    certsync_mod,
    consumer_mod,
    deploy_functions,
    deploy_mod,
    mailcow_consumer_mod,
    npm_source_mod,
    service_consumer_mod,
    source_mod,
)


@pytest.fixture
def loader_modules(tmp_path_factory):
    """The dunders of a minion with the certsync, certsync_source and certsync_deploy
    modules loaded (the deploy's cachedir, where its minion lock is, a test's own)."""
    cachedir = str(tmp_path_factory.mktemp("cache"))
    return {
        certsync_mod: {"__context__": {}, "__opts__": {"test": False}},
        source_mod: {"__salt__": deploy_functions()},
        npm_source_mod: {"__salt__": deploy_functions()},
        consumer_mod: {"__salt__": deploy_functions(), "__opts__": dict(MINION_OPTS)},
        mailcow_consumer_mod: {"__salt__": deploy_functions()},
        service_consumer_mod: {"__salt__": deploy_functions()},
        caddy_source_mod: {"__salt__": deploy_functions(), "__context__": {}},
        deploy_mod: {
            "__salt__": deploy_functions(),
            "__opts__": {"test": False, "cachedir": cachedir},
        },
    }


#: The mailcow.conf of ``checkout``: a hostname, mailcow's ACME on, SNI commented out.
MAILCOW_CONF = (
    "# mailcow.conf\nMAILCOW_HOSTNAME=mail.example.test\nSKIP_LETS_ENCRYPT=n\n# ENABLE_SSL_SNI=y\n"
)


@pytest.fixture
def checkout(tmp_path):
    """A mailcow checkout: its mailcow.conf (0600) and nothing else."""
    (tmp_path / "mailcow.conf").write_text(MAILCOW_CONF)
    os.chmod(tmp_path / "mailcow.conf", 0o600)
    return tmp_path
