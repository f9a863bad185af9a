"""certsync_haproxy against Debian's real HAProxy 2.6 on loopback: a new pair goes in
through the admin socket (set/commit/show ssl cert) and is served on the wire with no
reload, a connection opened before it still answering; a refused step leaves no
transaction open and the pair that served still serving."""

import http.client

import pytest
from salt.exceptions import CommandExecutionError

from harness.haproxy import HOST, HAProxy, combined, tls_context
from harness.loader import UTILS, load_loader_module

haproxy_mod = load_loader_module("modules", "certsync_haproxy")

pytestmark = pytest.mark.functional


@pytest.fixture
def configure_loader_modules():
    return {haproxy_mod: {"__salt__": {}, "__utils__": UTILS, "__opts__": {"test": False}}}


@pytest.fixture
def haproxy(tmp_path, ca):
    server = HAProxy(tmp_path, ca.leaf(HOST))
    yield server
    server.stop()


def _keep_alive(port):
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=tls_context())
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"ok"
    return conn


def test_a_new_pair_is_served_with_no_reload_and_open_connections_kept(haproxy, ca, tmp_path):
    new = ca.leaf(HOST)
    before = haproxy_mod.show(haproxy.crt, haproxy.socket)
    opened = _keep_alive(haproxy.port)
    done = haproxy_mod.update(haproxy.crt, combined(tmp_path / "new.pem", new), haproxy.socket)
    assert done == {
        "changed": True,
        "crt": haproxy.crt,
        "sha1_fingerprint": UTILS["certsync_pem.sha1_fingerprint"](new.cert),
        "previous": before["sha1_fingerprint"],
    }
    assert haproxy.served_sha256() == new.fingerprint
    opened.request("GET", "/")  # the connection opened before: same process, still answering
    assert opened.getresponse().read() == b"ok"
    assert haproxy.proc.poll() is None
    shown = haproxy_mod.show(haproxy.crt, haproxy.socket)
    assert shown["status"] == "Used" and shown["sans"] == [HOST]
    assert haproxy_mod.certificates(haproxy.socket) == {"files": [haproxy.crt], "transactions": []}
    again = haproxy_mod.update(haproxy.crt, str(tmp_path / "new.pem"), haproxy.socket)
    assert again["changed"] is False


def test_a_dry_run_sends_nothing(haproxy, ca, tmp_path):
    served = haproxy.served_sha256()
    new = combined(tmp_path / "new.pem", ca.leaf(HOST))
    assert haproxy_mod.update(haproxy.crt, new, haproxy.socket, test=True)["changed"] is True
    assert haproxy.served_sha256() == served


def test_a_crt_the_configuration_does_not_load_is_refused_and_no_transaction_stays(
    haproxy, ca, tmp_path
):
    served = haproxy.served_sha256()
    other = str(tmp_path / "other.pem")
    new = combined(tmp_path / "new.pem", ca.leaf(HOST))
    with pytest.raises(CommandExecutionError, match=r"HAProxy shows no certificate .*other\.pem"):
        haproxy_mod.update(other, new, haproxy.socket)
    assert haproxy_mod.certificates(haproxy.socket)["transactions"] == []
    assert haproxy.served_sha256() == served


def test_a_pair_that_does_not_match_never_reaches_the_socket(haproxy, ca, tmp_path):
    served = haproxy.served_sha256()
    one, other = ca.leaf(HOST), ca.leaf(HOST)
    mixed = tmp_path / "mixed.pem"
    mixed.write_bytes(one.fullchain_pem() + other.key_pem())
    mismatch = "the key does not match the certificate"
    with pytest.raises(CommandExecutionError, match=mismatch) as caught:
        haproxy_mod.update(haproxy.crt, str(mixed), haproxy.socket)
    assert "PRIVATE KEY" not in str(caught.value)
    chain_only = tmp_path / "chain.pem"
    chain_only.write_bytes(one.fullchain_pem())
    with pytest.raises(CommandExecutionError, match="lacks the certificate or the key"):
        haproxy_mod.update(haproxy.crt, str(chain_only), haproxy.socket)
    assert haproxy.served_sha256() == served
    assert haproxy_mod.certificates(haproxy.socket)["transactions"] == []
