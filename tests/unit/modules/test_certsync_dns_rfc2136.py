"""Unit tests of certsync_dns_rfc2136 (the RFC 2136 provider): its settings refused by
name, the TSIG secret read from the pillar and never shown, a failing server on
loopback."""

import pytest
from salt.exceptions import SaltInvocationError
from support.dnsproxy import ClosingServer

from harness.loader import UTILS, load_loader_module

rfc2136_mod = load_loader_module("modules", "certsync_dns_rfc2136")
DOMAIN, HOST = "example.test", "mail.example.test"
SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQ="  # noqa: S105 (a test TSIG secret)
UPDATE = {"server": "127.0.0.1", "zone": DOMAIN, "tsig_name": "certsync"}
ME = "mailcow"
#: The consumer's pillar: the secret is read from there, never from an argument.
PILLAR = {"certsync": {"consumers": {ME: {"dane": {"update": {"tsig_secret": SECRET}}}}}}


@pytest.fixture
def configure_loader_modules():
    return {
        rfc2136_mod: {
            "__salt__": {},
            "__utils__": UTILS,
            "__opts__": {"id": ME},
            "__pillar__": PILLAR,
        }
    }


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ("yes", "update must be a mapping"),
        ({**UPDATE, "server": "ns1.example.test"}, "must be an IP address"),
        ({**UPDATE, "tsig_secret": SECRET}, "tsig_secret is not taken as an arg"),
        ({**UPDATE, "tsig_secret": ""}, "tsig_secret is not taken as an argument"),
        ({**UPDATE, "tsig_name": ""}, "update settings lack tsig_name"),
        ({**UPDATE, "tsig_algorithm": "hmac-md5"}, "tsig_algorithm 'hmac-md5'"),
        ({**UPDATE, "zone": "-bad-"}, "update zone '-bad-' is not a valid DNS name"),
        ({**UPDATE, "port": 99999}, "update port 99999 is out of range"),
        ({**UPDATE, "extra": 1}, "unknown update settings: extra"),
    ],
)
def test_settings_are_checked_and_never_show_the_secret(update, message):
    with pytest.raises(SaltInvocationError, match=message) as caught:
        rfc2136_mod.checked(update)
    assert SECRET not in str(caught.value)


def test_checked_settings_show_no_secret():
    assert rfc2136_mod.checked(UPDATE) == {
        "provider": "rfc2136",
        "server": "127.0.0.1",
        "port": 53,
        "zone": DOMAIN,
        "tsig_name": "certsync",
        "tsig_algorithm": "hmac-sha256",
        "timeout": 5,
    }
    assert rfc2136_mod.zone({**UPDATE, "port": 5353}) == {"zone": DOMAIN, "auth_port": 5353}


@pytest.mark.parametrize(
    ("pillar", "message"),
    [
        ({}, "no TSIG secret in this minion's pillar at certsync:consumer_defaults:dane"),
        (
            {"certsync": {"consumers": {ME: {"dane": {"update": {"tsig_secret": ""}}}}}},
            f"no TSIG secret in this minion's pillar at certsync:consumers:{ME}:dane:update",
        ),
        (
            {"certsync": {"consumers": {ME: {"dane": {"update": {"tsig_secret": "no b64!"}}}}}},
            f"certsync:consumers:{ME}:dane:update:tsig_secret is not base64",
        ),
        (
            {"certsync": {"consumers": {ME: {"dane": True}}, "consumer_defaults": PILLAR}},
            f"no TSIG secret in this minion's pillar at certsync:consumers:{ME}:dane",
        ),
    ],
)
def test_the_tsig_secret_comes_from_the_pillar_and_is_never_shown(monkeypatch, pillar, message):
    monkeypatch.setattr(rfc2136_mod, "__pillar__", pillar)
    with pytest.raises(SaltInvocationError, match=message) as caught:
        rfc2136_mod._settings(UPDATE)
    assert "no b64!" not in str(caught.value)


DEFAULT_DANE = {"dane": {"update": {"tsig_secret": SECRET}}}


@pytest.mark.parametrize(
    "pillar",
    [
        PILLAR,
        {"certsync": {"consumer_defaults": DEFAULT_DANE}},
        # an own entry without dane takes consumer_defaults' dane, as map.jinja merges
        {"certsync": {"consumers": {ME: {"sni": True}}, "consumer_defaults": DEFAULT_DANE}},
    ],
)
def test_the_key_is_made_with_the_pillars_secret(monkeypatch, pillar):
    monkeypatch.setattr(rfc2136_mod, "__pillar__", pillar)
    settings = rfc2136_mod._settings(UPDATE)
    assert settings["key"].secret == b"secret-secret-secret"
    assert str(settings["key"].name) == "certsync."


def test_an_update_for_a_name_outside_its_zone_is_refused():
    with pytest.raises(SaltInvocationError, match=r"is not in the zone example\.org"):
        rfc2136_mod.change(HOST, {**UPDATE, "zone": "example.org"}, add=["3 1 1 " + "ab" * 32])
    with pytest.raises(SaltInvocationError, match="is not TLSA record data"):
        rfc2136_mod.change(HOST, UPDATE, add=["3 1 1 zz"])


@pytest.fixture
def closing_server():
    server = ClosingServer()
    yield server
    server.close()


def test_a_server_closing_the_update_connection_is_that_servers_failure(closing_server):
    update = {**UPDATE, "port": closing_server.port, "timeout": 5}
    with pytest.raises(Exception) as caught:
        rfc2136_mod.change(HOST, update, add=["3 1 1 " + "ab" * 32])
    assert type(caught.value).__name__ == "CommandExecutionError", caught.value
    assert f"at 127.0.0.1:{closing_server.port} failed" in str(caught.value)
    assert SECRET not in str(caught.value)
