"""Unit tests of maildns.audit's arguments and of certsync_dane's (the rollover): bad input is
refused before any lookup, and the TSIG secret is never shown."""

import pytest
from salt.exceptions import SaltInvocationError

from harness.loader import UTILS, certsync_mod, load_loader_module

maildns_mod = load_loader_module("modules", "maildns")
dane_mod = load_loader_module("modules", "certsync_dane")
REAL_RESOLVER = maildns_mod._resolver
DOMAIN, HOST = "example.test", "mail.example.test"


class NoDNS:
    """A resolver that fails the test if the audit gets as far as a lookup."""

    def resolve(self, *args, **kwargs):
        raise AssertionError(f"looked up {args} despite bad arguments")


@pytest.fixture
def configure_loader_modules(monkeypatch):
    monkeypatch.setattr(maildns_mod, "_resolver", lambda *args: NoDNS())
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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"domain": "exa mple.test"}, "domain 'exa mple.test' is not a valid DNS name"),
        ({"hostname": "../etc"}, "hostname '../etc' is not a valid DNS name"),
        ({"mx": {"a": 1}}, "mx must be a list"),
        ({"mx": ["mail.example.test", "bad_name!"]}, "mx 'bad_name!' is not a valid DNS name"),
        ({"addresses": "192.0.2.300"}, "addresses: '192.0.2.300' does not appear to be"),
        ({"dkim_selectors": ["ok", "no/slash"]}, "DKIM selector 'no/slash' is not a valid"),
        ({"dmarc_policy": "block"}, "dmarc_policy must be one of none, quarantine, reject"),
        ({"return_path": {"name": "b.example.test"}}, "return_path must be a mapping with"),
        (
            {"return_path": {"name": "b.example.test", "target": "x y"}},
            "return_path target 'x y' is not a valid DNS name",
        ),
        ({"tlsa_ports": "25,smtp"}, "tlsa_ports must be a list of ports, not '25,smtp'"),
        ({"tlsa_ports": [25, 70000], "certs": {}}, "tlsa_ports: [25, 70000] holds a port out"),
        ({"tlsa_ports": [25]}, "tlsa_ports needs certs (deployed, candidate) or probe_address"),
        ({"spf_all": ["-all", "all"]}, "spf_all must list -all, ~all, ?all or +all"),
        ({"certs": ["cert.pem"]}, "certs must map labels (deployed, candidate) to files"),
    ],
)
def test_bad_arguments_are_refused_before_any_lookup(kwargs, message):
    args = {"domain": DOMAIN, "hostname": HOST, **kwargs}
    with pytest.raises(SaltInvocationError) as error:
        maildns_mod.audit(**args)
    assert message in str(error.value)


def test_comma_separated_strings_are_lists():
    assert maildns_mod._as_list("dkim, s1378202,", "dkim_selectors") == ["dkim", "s1378202"]
    assert maildns_mod._as_list(25, "tlsa_ports") == ["25"]
    assert maildns_mod._as_list(None, "mx") == []


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
    ("domain", "other", "aligned"),
    [
        ("example.com", "bounces.example.com", True),
        ("mail.example.com", "bounces.example.com", True),  # siblings share example.com
        ("example.co.uk", "bounces.example.co.uk", True),
        ("a.co.uk", "b.co.uk", False),  # co.uk is a public suffix, not an organisation
        ("example.com", "example.net", False),
        ("shop.github.io", "other.github.io", False),  # the PSL's private section
    ],
)
def test_relaxed_alignment_by_the_public_suffix_list(domain, other, aligned):
    assert maildns_mod._aligned(domain, other, "r") is aligned
    assert maildns_mod._aligned(domain, domain, "s") is True
    assert maildns_mod._aligned(domain, other, "s") is False


def test_organisational_domains():
    org = maildns_mod._org_domain
    assert org("mail.example.co.uk") == "example.co.uk"
    assert org("mail.wittenberger.us") == "wittenberger.us"
    assert org("co.uk") == "co.uk"


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
def test_every_dns_timeout_is_bounded(monkeypatch, timeout):
    """A lookup or an authoritative query never runs on an unbounded or garbage timeout."""
    import dns.resolver

    monkeypatch.setattr(maildns_mod, "_resolver", REAL_RESOLVER)  # its checks, no lookup
    monkeypatch.setattr(dns.resolver.Resolver, "resolve", NoDNS.resolve)
    with pytest.raises(SaltInvocationError, match="timeout must be"):
        dane_mod.tlsa_servers(HOST, DOMAIN, timeout=timeout)
    with pytest.raises(SaltInvocationError, match="timeout must be"):
        maildns_mod.tlsa(HOST, timeout=timeout)
    with pytest.raises(SaltInvocationError, match="timeout must be"):
        maildns_mod.audit(DOMAIN, hostname=HOST, timeout=timeout)


def test_a_policy_server_dripping_bytes_is_cut_off_at_the_total_timeout(tmp_path, ca):
    """One byte every 0.3 s keeps a per-read timeout waiting for ever: the whole fetch
    has one deadline."""
    import socket
    import ssl
    import threading
    import time

    from harness.pki import write_pair

    name = "mta-sts.example.test"
    cert, key = write_pair(tmp_path, ca.leaf(name, sans=[name]), "cert.pem", "key.pem")
    (tmp_path / "ca.pem").write_bytes(ca.root_pem())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    port = server.getsockname()[1]

    def drip():
        conn, _ = server.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(4096)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nversion: STSv1\r\n":
                try:
                    tls.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.3)

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    started = time.monotonic()
    text, why = maildns_mod._fetch_sts_policy(name, "127.0.0.1", port, str(tmp_path / "ca.pem"), 2)
    elapsed = time.monotonic() - started
    server.close()
    assert (text, why) == (None, f"HTTPS to 127.0.0.1:{port}: no whole response within 2 s")
    assert elapsed < 15, elapsed  # the 75 bytes would take 22 s


@pytest.mark.parametrize("content", [None, b"not a certificate\n"], ids=["missing", "not-pem"])
def test_a_bad_ca_file_is_a_failed_row_not_a_traceback(tmp_path, content):
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    text, why = maildns_mod._fetch_sts_policy("mta-sts.example.test", "127.0.0.1", 9, str(path), 2)
    assert text is None and why.startswith(f"ca_file {path}: not a readable PEM bundle")


@pytest.mark.parametrize(
    "text", ["\x1b]0;t\x07\x1b[2J\x1b[32mPASS", "a\x9bb", "x\u202ey", "\x7f\x00\u200b", "ok\nPASS"]
)
def test_what_a_zone_holds_reaches_rows_escaped(text):
    row = maildns_mod._row("DKIM s1", "a key", [text], False, f"bad key: {text}")
    for shown in (row["found"][0], row["why"]):
        assert shown.isprintable(), repr(shown)
        assert "\\" in shown  # the control character is shown as its escape
