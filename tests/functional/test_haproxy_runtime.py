"""certsync_haproxy against Debian's real HAProxy 2.6 on loopback: a new pair goes in
through the admin socket (set/commit/show ssl cert) and is served on the wire with no
reload, a connection opened before it still answering; a refused step leaves no
transaction open and the pair that served still serving."""

import hashlib
import http.client
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest
from salt.exceptions import CommandExecutionError

from harness.loader import UTILS, load_loader_module
from harness.mailcow_stack import free_port

haproxy_mod = load_loader_module("modules", "certsync_haproxy")
HOST = "mail.example.test"
START_TIMEOUT = 20  # seconds HAProxy may take to open its socket and its port

pytestmark = pytest.mark.functional

CONFIG = """\
global
    stats socket {socket} mode 600 level admin
    pidfile {pidfile}
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
frontend mail
    bind 127.0.0.1:{port} ssl crt {crt}
    http-request return status 200 content-type text/plain string ok
"""


@pytest.fixture
def configure_loader_modules():
    return {haproxy_mod: {"__salt__": {}, "__utils__": UTILS, "__opts__": {"test": False}}}


def _combined(path, issued):
    path.write_bytes(issued.fullchain_pem() + issued.key_pem())
    path.chmod(0o600)
    return str(path)


class HAProxy:
    """One haproxy process serving ``crt`` on a loopback port, its admin socket in ``root``."""

    def __init__(self, root, issued):
        binary = shutil.which("haproxy")
        assert binary, "Debian's haproxy is not installed (scripts/test-deps.sh)"
        self.crt = _combined(root / "mail.pem", issued)
        self.socket, self.port = str(root / "admin.sock"), free_port()
        config = root / "haproxy.cfg"
        config.write_text(
            CONFIG.format(
                socket=self.socket, pidfile=root / "haproxy.pid", port=self.port, crt=self.crt
            )
        )
        self.proc = subprocess.Popen([binary, "-db", "-f", str(config)])
        deadline = time.monotonic() + START_TIMEOUT
        while not self.served_sha256():
            assert self.proc.poll() is None, "haproxy exited"
            assert time.monotonic() < deadline, "haproxy did not serve in time"
            time.sleep(0.1)

    def served_sha256(self):
        """The SHA-256 fingerprint of the certificate a new handshake gets, or None."""
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        try:
            raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            with context.wrap_socket(raw, server_hostname=HOST) as tls:
                return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
        except OSError:
            return None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def haproxy(tmp_path, ca):
    server = HAProxy(tmp_path, ca.leaf(HOST))
    yield server
    server.stop()


def _keep_alive(port):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"ok"
    return conn


def test_a_new_pair_is_served_with_no_reload_and_open_connections_kept(haproxy, ca, tmp_path):
    new = ca.leaf(HOST)
    before = haproxy_mod.show(haproxy.crt, haproxy.socket)
    opened = _keep_alive(haproxy.port)
    done = haproxy_mod.update(haproxy.crt, _combined(tmp_path / "new.pem", new), haproxy.socket)
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
    new = _combined(tmp_path / "new.pem", ca.leaf(HOST))
    assert haproxy_mod.update(haproxy.crt, new, haproxy.socket, test=True)["changed"] is True
    assert haproxy.served_sha256() == served


def test_a_crt_the_configuration_does_not_load_is_refused_and_no_transaction_stays(
    haproxy, ca, tmp_path
):
    served = haproxy.served_sha256()
    other = str(tmp_path / "other.pem")
    new = _combined(tmp_path / "new.pem", ca.leaf(HOST))
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
