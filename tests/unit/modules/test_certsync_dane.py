"""Unit tests of certsync_dane (the TLSA rollover): its settings refused by name, the
TSIG secret read from the pillar and never shown, failing servers on loopback."""

import pytest
from salt.exceptions import SaltInvocationError

from harness.loader import UTILS, certsync_mod, load_loader_module

maildns_mod = load_loader_module("modules", "maildns")
dane_mod = load_loader_module("modules", "certsync_dane")
DOMAIN, HOST = "example.test", "mail.example.test"


@pytest.fixture
def configure_loader_modules():
    salt = {
        "certsync.is_dns_name": certsync_mod.is_dns_name,
        **{f"maildns.{name}": getattr(maildns_mod, name) for name in ("zone_servers", "tlsa")},
    }
    dunders = {
        "__salt__": salt,
        "__context__": {},
        "__utils__": UTILS,
        "__opts__": {"id": ME},
        "__pillar__": PILLAR,
    }
    return {maildns_mod: dunders, dane_mod: dict(dunders)}


SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQ="  # noqa: S105 (a test TSIG secret)
UPDATE = {"server": "127.0.0.1", "zone": DOMAIN, "tsig_name": "certsync"}
ME = "mailcow"
#: The consumer's pillar: the secret is read from there, never from an argument.
PILLAR = {"certsync": {"consumers": {ME: {"dane": {"update": {"tsig_secret": SECRET}}}}}}


@pytest.mark.parametrize(
    ("dane", "message"),
    [
        ({"bogus": 1}, "unknown dane settings: bogus"),
        ({"port": "x"}, "dane port must be a number"),
        ({"port": 0}, "dane port 0 is out of range"),
        ({"max_wait": "soon"}, "dane max_wait 'soon' is not seconds"),
        ({"max_wait": float("nan")}, "dane max_wait must be between 0 and 86400"),
        ({"update": "yes"}, "update must be a mapping"),
        ({"update": {**UPDATE, "server": "ns1.example.test"}}, "must be an IP address"),
        ({"update": {**UPDATE, "tsig_secret": SECRET}}, "tsig_secret is not taken as an arg"),
        ({"update": {**UPDATE, "tsig_secret": ""}}, "tsig_secret is not taken as an argument"),
        ({"update": {**UPDATE, "tsig_name": ""}}, "update settings lack tsig_name"),
        ({"update": {**UPDATE, "tsig_algorithm": "hmac-md5"}}, "tsig_algorithm 'hmac-md5'"),
        ({"update": {**UPDATE, "zone": "-bad-"}}, "update zone '-bad-' is not a valid DNS name"),
        ({"update": {**UPDATE, "port": 99999}}, "update port 99999 is out of range"),
        ({"update": {**UPDATE, "extra": 1}}, "unknown update settings: extra"),
    ],
)
def test_dane_settings_are_checked_and_never_show_the_secret(dane, message):
    with pytest.raises(SaltInvocationError, match=message) as caught:
        dane_mod._dane_options(dane)
    assert SECRET not in str(caught.value)


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
    monkeypatch.setattr(dane_mod, "__pillar__", pillar)
    with pytest.raises(SaltInvocationError, match=message) as caught:
        dane_mod._update_settings(UPDATE)
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
    monkeypatch.setattr(dane_mod, "__pillar__", pillar)
    settings = dane_mod._update_settings(UPDATE)
    assert settings["key"].secret == b"secret-secret-secret"
    assert str(settings["key"].name) == "certsync."


def test_an_update_for_a_name_outside_its_zone_is_refused():
    with pytest.raises(SaltInvocationError, match=r"is not in the zone example\.org"):
        dane_mod.tlsa_update(HOST, {**UPDATE, "zone": "example.org"}, add=["3 1 1 " + "ab" * 32])
    with pytest.raises(SaltInvocationError, match="is not TLSA record data"):
        dane_mod.tlsa_update(HOST, UPDATE, add=["3 1 1 zz"])


@pytest.mark.parametrize(
    ("dane", "expected"),
    [
        (True, {"port": 25, "nameservers": None, "dns_port": 53}),
        (
            {"nameservers": ["127.0.0.1"], "dns_port": 5353, "max_wait": 60},
            {"port": 25, "nameservers": ["127.0.0.1"], "dns_port": 5353},
        ),
    ],
)
def test_dane_lookup_has_the_deploys_defaults(dane, expected):
    assert dane_mod.dane_lookup(dane) == expected


@pytest.mark.parametrize(
    ("dane", "message"),
    [
        ({"colour": "blue"}, "unknown dane settings: colour"),
        ({"dns_port": 70000}, "dane dns_port"),
        ("yes", "dane must be true or a mapping"),
    ],
)
def test_dane_lookup_names_a_bad_setting(dane, message):
    with pytest.raises(SaltInvocationError, match=message):
        dane_mod.dane_lookup(dane)


class _ClosingServer:
    """A DNS server on loopback that reads one TCP query and closes without an answer;
    over UDP it answers every query truncated (TC), so clients retry over TCP."""

    def __init__(self):
        import socket
        import threading

        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        for sock in (self.tcp, self.udp):
            sock.settimeout(5)
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._tcp, self._udp)]
        for thread in self.threads:
            thread.start()

    def _tcp(self):
        for _ in range(3):  # bounded: a few clients at most
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                conn.recv(65535)  # read the query, then close: the client sees EOF

    def _udp(self):
        import dns.flags
        import dns.message

        for _ in range(3):
            try:
                wire, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            reply = dns.message.make_response(dns.message.from_wire(wire))
            reply.flags |= dns.flags.TC
            self.udp.sendto(reply.to_wire(), peer)

    def close(self):
        self.tcp.close()
        self.udp.close()


@pytest.fixture
def closing_server():
    server = _ClosingServer()
    yield server
    server.close()


def test_a_server_closing_the_update_connection_is_that_servers_failure(closing_server):
    update = {**UPDATE, "port": closing_server.port, "timeout": 5}
    with pytest.raises(Exception) as caught:
        dane_mod.tlsa_update(HOST, update, add=["3 1 1 " + "ab" * 32])
    assert type(caught.value).__name__ == "CommandExecutionError", caught.value
    assert f"at 127.0.0.1:{closing_server.port} failed" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_truncated_answer_then_a_closed_connection_is_that_servers_failure(closing_server):
    import dns.name

    answer = dane_mod._ask_authoritative(
        dns.name.from_text(f"_25._tcp.{HOST}"), "127.0.0.1", closing_server.port, 5
    )
    assert answer["error"].startswith(f"no answer from 127.0.0.1:{closing_server.port}: ")


@pytest.mark.parametrize(
    "timeout", ["nan", float("nan"), float("inf"), "-inf", 1e9, 0, -1, "abc", "²", "٣", True, None]
)
def test_the_zones_servers_are_asked_on_a_bounded_timeout(monkeypatch, timeout):
    import dns.resolver

    def no_lookup(*args, **kwargs):
        raise AssertionError(f"looked up {args} despite a bad timeout")

    monkeypatch.setattr(dns.resolver.Resolver, "resolve", no_lookup)
    with pytest.raises(SaltInvocationError, match="timeout must be"):
        dane_mod.tlsa_servers(HOST, DOMAIN, timeout=timeout)
