"""Debian's HAProxy on loopback for the tests and the benchmarks: one process
(master-worker, as Debian's unit runs it, when asked) serving a ``crt`` file on a
free port, its admin socket at ``level admin`` beside it."""

import hashlib
import shutil
import signal
import socket
import ssl
import subprocess
import time

from harness.mailcow_stack import free_port

HOST = "mail.example.test"
START_TIMEOUT = 20  # seconds HAProxy may take to open its socket and its port
CONFIG = """\
global
    stats socket {root}/admin.sock mode 600 level admin expose-fd listeners
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend mail
    bind 127.0.0.1:{port} ssl crt {crt}
    http-request return status 200 content-type text/plain string ok
"""


def combined(path, issued):
    """Write ``issued`` as HAProxy's ``crt`` takes it (chain, then key), 0600."""
    path.write_bytes(issued.fullchain_pem() + issued.key_pem())
    path.chmod(0o600)
    return str(path)


def tls_context():
    """A client context that takes any certificate: the tests compare fingerprints."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


class HAProxy:
    """HAProxy serving ``root/mail.pem`` (``issued``) on a loopback port."""

    def __init__(self, root, issued, master_worker=False):
        binary = shutil.which("haproxy")
        if not binary:
            raise RuntimeError("Debian's haproxy is not installed (scripts/test-deps.sh)")
        self.root, self.port = root, free_port()
        self.crt = combined(root / "mail.pem", issued)
        self.socket = str(root / "admin.sock")
        config = root / "haproxy.cfg"
        config.write_text(CONFIG.format(root=root, port=self.port, crt=self.crt))
        argv = [binary, *(["-W"] if master_worker else []), "-db", "-f", str(config)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.served_sha256():
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"haproxy did not serve within {START_TIMEOUT} s")
            time.sleep(0.1)

    def served_sha256(self):
        """The SHA-256 fingerprint of the certificate a new handshake gets, or None."""
        try:
            raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            with tls_context().wrap_socket(raw, server_hostname=HOST) as tls:
                return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
        except OSError:
            return None

    def workers(self):
        """The master's children (master-worker): its workers, by pid."""
        children = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        with open(children, encoding="ascii") as handle:
            return sorted(handle.read().split())

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
