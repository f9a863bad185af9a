"""Fixtures shared by every test level."""

import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SALT_TREE = REPO / "salt"
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))  # the harness

from support.salt_call import salt_call  # noqa: E402, F401  (fixture)

from harness.acme import NpmCertbot, Pebble  # noqa: E402
from harness.loader import UTILS, UTILS_USERS  # noqa: E402
from harness.pki import TestCA  # noqa: E402


def pytest_configure(config):
    """Hand Salt's deferred start-up log handler over to pytest's logging.

    Salt holds log records in a temporary handler until its own logging is set
    up, and flushes them to stderr at exit, after pytest closed it.
    """
    import salt._logging.impl

    salt._logging.impl.shutdown_temp_handler()


@pytest.fixture(scope="session")
def salt_factories_config():
    """Run the daemons and CLIs installed in this venv, not generated copies.

    saltfactories otherwise writes launcher scripts to a shared temp dir and
    reuses them, so one Salt release's test run could execute another's code.
    """
    return {"scripts_dir": pathlib.Path(sys.executable).parent}


@pytest.fixture(scope="session")
def ca():
    return TestCA()


@pytest.fixture(scope="session")
def good(ca):
    """A valid leaf for mail.example.test, EC P-384 like the real one."""
    return ca.leaf(
        "mail.example.test",
        sans=["mail.example.test", "autodiscover.example.test"],
        key_kind="ec-p384",
    )


@pytest.fixture(scope="session")
def pebble(tmp_path_factory):
    """Let's Encrypt's ACME test server on loopback, its listener certified by a test CA."""
    server = Pebble(tmp_path_factory.mktemp("pebble"), TestCA("pebble listener")).start()
    yield server
    server.stop()


@pytest.fixture
def npm_certbot(tmp_path, pebble):
    """NPM's certbot (its ini and command lines) with a fresh letsencrypt tree."""
    return NpmCertbot(tmp_path / "npm", pebble)


@pytest.fixture(autouse=True)
def loader_utils(setup_loader_mock):
    """salt://_utils in ``__utils__``, as a minion's loader has it: a test's loader
    mock (configure_loader_modules) leaves ``__utils__`` empty unless told otherwise."""
    for module in UTILS_USERS:
        if not module.__utils__:
            module.__utils__.update(UTILS)  # the mock's own dict, gone after the test
