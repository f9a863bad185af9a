"""certsync_haproxy's guards (loader mocked): what may go into a runtime API command,
what of HAProxy's answer may be shown, and a socket that answers too slowly or too much
(a hostile peer on a socket of this test's own; the real HAProxy is
tests/functional/test_haproxy_runtime.py's)."""

import contextlib
import socket
import threading
import time

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from harness.loader import UTILS, load_loader_module

haproxy_mod = load_loader_module("modules", "certsync_haproxy")


@pytest.fixture
def configure_loader_modules():
    return {haproxy_mod: {"__salt__": {}, "__utils__": UTILS}}


@pytest.mark.parametrize(
    "crt",
    ["relative.pem", "/etc/haproxy/a b.pem", "/etc/haproxy/x.pem\nshow info", "/x\x00", 5, None],
)
def test_a_crt_that_could_change_the_command_is_refused(crt):
    with pytest.raises(SaltInvocationError, match="crt must be an absolute path without spaces"):
        haproxy_mod.show(crt, "/run/haproxy/admin.sock")


def test_an_answer_is_shown_without_any_pem_block_on_one_line():
    answer = (
        "unable to load\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n"
        "Can't update /x.pem!\n-----BEGIN CERTIFICATE-----\nMIIB"
    )
    shown = haproxy_mod._shown(answer)
    assert "MIIE" not in shown and "MIIB" not in shown and "\n" not in shown
    assert shown.startswith("unable to load / [PEM] / Can't update /x.pem!")


class Peer:
    """A UNIX socket that answers every connection with ``behaviour``."""

    def __init__(self, path, behaviour):
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(4)
        self.behaviour, self.done = behaviour, threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.server.accept()
        with conn:
            conn.recv(65536)
            # the module hanging up mid-answer is what is tested
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.behaviour(conn, self.done)

    def close(self):
        self.done.set()
        self.server.close()


def _drip(conn, done):
    while not done.wait(0.2):  # one byte at a time, never an end
        conn.sendall(b"x")


def _flood(conn, done):
    chunk = b"y" * 65536
    for _ in range(8):
        conn.sendall(chunk)


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [(_drip, "no answer in time"), (_flood, "an answer longer than 262144 bytes")],
)
def test_a_peer_that_drips_or_floods_is_cut_off(tmp_path, behaviour, message):
    peer = Peer(tmp_path / "admin.sock", behaviour)
    started = time.monotonic()
    try:
        with pytest.raises(CommandExecutionError, match=message):
            haproxy_mod.certificates(str(tmp_path / "admin.sock"), timeout=1)
    finally:
        peer.close()
    assert time.monotonic() - started < 10


def test_no_socket_is_named(tmp_path):
    with pytest.raises(CommandExecutionError, match=r"admin\.sock: HAProxy's admin socket: "):
        haproxy_mod.certificates(str(tmp_path / "admin.sock"))
