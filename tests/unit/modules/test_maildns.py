"""Unit tests of maildns: the audit's arguments refused before any lookup, alignment,
bounded timeouts and fetches, what a zone holds escaped in rows."""

import pytest
import yaml
from salt.exceptions import SaltInvocationError

from harness.loader import SALT_TREE, UTILS, certsync_mod, load_loader_module

maildns_mod = load_loader_module("modules", "maildns")
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
    }
    return {maildns_mod: {"__salt__": salt, "__context__": {}, "__utils__": UTILS}}


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
    "timeout", ["nan", float("nan"), float("inf"), "-inf", 1e9, 0, -1, "abc", "²", "٣", True, None]
)
def test_every_dns_timeout_is_bounded(monkeypatch, timeout):
    """A lookup or an authoritative query never runs on an unbounded or garbage timeout."""
    import dns.resolver

    monkeypatch.setattr(maildns_mod, "_resolver", REAL_RESOLVER)  # its checks, no lookup
    monkeypatch.setattr(dns.resolver.Resolver, "resolve", NoDNS.resolve)
    with pytest.raises(SaltInvocationError, match="timeout must be"):
        maildns_mod.tlsa(HOST, timeout=timeout)
    with pytest.raises(SaltInvocationError, match="timeout must be"):
        maildns_mod.audit(DOMAIN, hostname=HOST, timeout=timeout)


def _policy_server(tmp_path, ca, answer):
    """A TLS server on loopback for mta-sts.example.test that takes one connection,
    reads the request and hands the TLS socket to ``answer``; its port and the CA file
    that verifies it."""
    import socket
    import ssl
    import threading

    from harness.pki import write_pair

    name = "mta-sts.example.test"
    cert, key = write_pair(tmp_path, ca.leaf(name, sans=[name]), "cert.pem", "key.pem")
    (tmp_path / "ca.pem").write_bytes(ca.root_pem())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def serve():
        try:
            conn, _ = server.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(4096)
                answer(tls)
        except OSError:
            pass
        finally:
            server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], str(tmp_path / "ca.pem")


def test_a_policy_server_dripping_bytes_is_cut_off_at_the_total_timeout(tmp_path, ca):
    """One byte every 0.3 s keeps a per-read timeout waiting for ever: the whole fetch
    has one deadline."""
    import time

    def drip(tls):
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nversion: STSv1\r\n":
            tls.sendall(bytes([byte]))
            time.sleep(0.3)

    port, cafile = _policy_server(tmp_path, ca, drip)
    started = time.monotonic()
    text, why = maildns_mod._fetch_sts_policy("mta-sts.example.test", "127.0.0.1", port, cafile, 2)
    elapsed = time.monotonic() - started
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


POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.test\r\nmax_age: 86400\r\n"


@pytest.mark.parametrize(
    ("headers", "body", "why"),
    [
        (b"Content-Type: text/plainjunk\r\n", POLICY,
         "Content-Type 'text/plainjunk', not text/plain"),
        (b"Content-Type: text/html\r\n", POLICY, "Content-Type 'text/html', not text/plain"),
        (b"Content-Type: text/plain\r\nContent-Length: 400\r\n", POLICY,
         f"the body ended after {len(POLICY)} of the 400 bytes its Content-Length announced"),
        (b"Content-Type: text/plain; charset=utf-8\r\n", POLICY, None),
        (b"Content-Type: Text/Plain\r\nContent-Length: %d\r\n" % len(POLICY), POLICY, None),
    ],
)  # fmt: skip
def test_a_policy_is_text_plain_whole_and_complete(tmp_path, ca, headers, body, why):
    response = b"HTTP/1.1 200 OK\r\n" + headers + b"Connection: close\r\n\r\n" + body
    port, cafile = _policy_server(tmp_path, ca, lambda tls: tls.sendall(response))
    name = "mta-sts.example.test"
    text, found = maildns_mod._fetch_sts_policy(name, "127.0.0.1", port, cafile, 5)
    if why is None:
        assert (text, found) == (POLICY.decode(), None)
    else:
        assert text is None and found.startswith(why), found


#: The audit's options dns.sls fills in itself, from other settings than certsync:dns:
#: the deployed certificate, the consumer's probe address and HTTPS port, whether the
#: source keeps its key. ``timeout`` stays the module's: one audit, one bound.
FILLED_BY_DNS_SLS = {"certs", "probe_address", "probe_ports", "key_kept", "timeout"}


def test_every_audit_option_is_a_dns_setting_of_the_formula_and_back():
    """A new check's option is a certsync:dns key the settings check accepts (it lists
    defaults.yaml's), and every certsync:dns key but the zone itself reaches the audit."""
    defaults = yaml.safe_load((SALT_TREE / "certsync" / "defaults.yaml").read_text())
    dns = set(defaults["certsync"]["dns"])
    options = set(maildns_mod.OPTIONS)
    assert options - FILLED_BY_DNS_SLS - dns == set(), "audit options missing in defaults.yaml"
    assert dns - {"domain"} - options == set(), "certsync:dns keys the audit does not take"
