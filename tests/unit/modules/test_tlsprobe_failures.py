"""Every greeting, protocol and TLS failure is an unsuccessful probe, never an exception:
servers on loopback that say goodbye, lie, or talk garbage."""

import socket
import threading

import pytest

from harness.loader import tlsprobe_mod

HOST = "mail.example.test"


@pytest.fixture
def configure_loader_modules():
    return {tlsprobe_mod: {"__context__": {}}}


class Talker:
    """Answer each connection with ``greeting`` (then ``after`` once the client speaks)."""

    def __init__(self, greeting, after=b""):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.greeting, self.after = greeting, after
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        for _ in range(2):  # bounded: each test connects twice (fetch, probe)
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    conn.sendall(self.greeting)
                    if self.after:
                        conn.recv(1024)
                        conn.sendall(self.after)
                except OSError:
                    pass

    def close(self):
        self.sock.close()
        self.thread.join(5)


@pytest.mark.parametrize(
    ("protocol", "greeting", "after", "error"),
    [
        ("imap", b"* BYE Shutting down\r\n", b"", "error"),
        ("imap", b"* OK [CAPABILITY IMAP4rev1] hi\r\n", b"a NO go away\r\n", "unexpected"),
        ("pop3", b"-ERR not now\r\n", b"", "error_proto"),
        ("pop3", b"+OK hi\r\n", b"-ERR no TLS\r\n", "STLS refused"),
        ("smtp", b"554 go away\r\n", b"", "SMTP"),
        ("smtp", b"\xff\xfe\x00garbage\r\n", b"", ""),
        ("sieve", b"x" * 5000 + b"\r\n", b"", ""),
        ("sieve", b'"IMPLEMENTATION" "x"\r\nBYE "bye"\r\n', b"", "greeting"),
        ("imaps", b"not tls at all\r\n", b"", ""),
        ("smtp", b"", b"", ""),
    ],
    ids=[
        "imap-bye",
        "imap-starttls-no",
        "pop3-err",
        "pop3-stls-err",
        "smtp-554",
        "smtp-binary",
        "sieve-long-line",
        "sieve-bye",
        "implicit-plain-text",
        "smtp-silent-close",
    ],
)
def test_a_hostile_or_leaving_server_is_a_failed_probe(protocol, greeting, after, error):
    server = Talker(greeting, after)
    try:
        ret = tlsprobe_mod.fetch(HOST, protocol, server.port, "127.0.0.1", timeout=1)
        probed = tlsprobe_mod.probe(HOST, {protocol: server.port}, "127.0.0.1", timeout=1)
    finally:
        server.close()
    assert ret["ok"] is False
    assert error in ret["error"]
    assert len(ret["error"]) <= 600
    assert probed[protocol]["ok"] is False
