"""
What HTTPS clients see while HAProxy takes a new certificate, on Debian's real
HAProxy 2.6 on loopback (master-worker, as Debian's unit runs it): client
threads run complete sessions (connect, handshake with SNI, one request, close)
without pause around each change, and long sessions opened before it (kept
alive) are used again after it.

Two ways, each several times:

- ``runtime``: ``certsync_haproxy.update`` (set/commit ssl cert on the admin
  socket): no process changes;
- ``reload``: the ``crt`` file replaced, then HAProxy's seamless reload
  (SIGUSR2 to the master, as ``systemctl reload haproxy`` does): a new worker
  takes the listeners, the old one finishes its connections.

Prints, per way: sessions, failed sessions (and the first errors), the long
sessions that still answered after the change, when new handshakes got the new
certificate (from the change's start), and whether the worker process changed.

Needs Debian's haproxy (scripts/test-deps.sh). Run: scripts/bench.sh, or
``.venv/salt3008/bin/python benchmarks/bench_haproxy.py --changes 5``.
"""

import argparse
import collections
import hashlib
import http.client
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness

from harness.loader import UTILS, load_loader_module  # noqa: E402
from harness.mailcow_stack import free_port  # noqa: E402
from harness.pki import TestCA  # noqa: E402

HOST = "mail.example.test"
BEFORE, AFTER = 2.0, 4.0  # seconds of sessions around each change
CLIENTS = 8
LONG_SESSIONS = 8
START_TIMEOUT = 20
CONFIG = """\
global
    master-worker
    stats socket {root}/admin.sock mode 600 level admin expose-fd listeners
    pidfile {root}/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend mail
    bind 127.0.0.1:{port} ssl crt {root}/mail.pem
    http-request return status 200 content-type text/plain string ok
"""


def _context():
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def served(port):
    """The SHA-256 of the certificate a new handshake gets, or None."""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with _context().wrap_socket(raw, server_hostname=HOST) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
    except OSError:
        return None


class Clients:
    """Threads running complete sessions until stopped; what each got, when."""

    def __init__(self, port):
        self.port, self.stop = port, threading.Event()
        self.results = []  # (time, ok, fingerprint or error)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _session(self):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=_context())
        try:
            conn.connect()
            fingerprint = hashlib.sha256(conn.sock.getpeercert(binary_form=True)).hexdigest()
            conn.request("GET", "/", headers={"Host": HOST})
            ok = conn.getresponse().read() == b"ok"
            return ok, fingerprint if ok else "wrong answer"
        finally:
            conn.close()

    def _run(self):
        while not self.stop.is_set():
            try:
                ok, got = self._session()
            except (OSError, http.client.HTTPException) as exc:
                ok, got = False, f"{type(exc).__name__}: {exc}"
            self.results.append((time.monotonic(), ok, got))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def long_sessions(port):
    sessions = []
    for _ in range(LONG_SESSIONS):
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=_context())
        conn.request("GET", "/", headers={"Host": HOST})
        conn.getresponse().read()
        sessions.append(conn)
    return sessions


def still_answering(sessions):
    kept = 0
    for conn in sessions:
        try:
            conn.request("GET", "/", headers={"Host": HOST})
            kept += conn.getresponse().read() == b"ok"
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
    return kept


class HAProxy:
    def __init__(self, root, issued):
        self.root, self.port = root, free_port()
        (root / "mail.pem").write_bytes(issued.fullchain_pem() + issued.key_pem())
        (root / "haproxy.cfg").write_text(CONFIG.format(root=root, port=self.port))
        binary = shutil.which("haproxy")
        if not binary:
            sys.exit("Debian's haproxy is not installed (scripts/test-deps.sh)")
        self.proc = subprocess.Popen(
            [binary, "-W", "-db", "-f", str(root / "haproxy.cfg")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not served(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                sys.exit("haproxy did not start")
            time.sleep(0.1)

    def workers(self):
        """The master's children: its workers, by pid."""
        children = pathlib.Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return sorted(children.read_text().split())

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def change(way, haproxy, module, new_pem):
    crt = str(haproxy.root / "mail.pem")
    if way == "runtime":
        module.update(crt, new_pem, str(haproxy.root / "admin.sock"))
        (haproxy.root / "mail.pem").write_bytes(pathlib.Path(new_pem).read_bytes())
    else:
        (haproxy.root / "mail.pem").write_bytes(pathlib.Path(new_pem).read_bytes())
        haproxy.proc.send_signal(signal.SIGUSR2)


def one(way, haproxy, module, ca, root):
    issued = ca.leaf(HOST)
    new_pem = root / "new.pem"
    new_pem.write_bytes(issued.fullchain_pem() + issued.key_pem())
    sessions = long_sessions(haproxy.port)
    workers = haproxy.workers()
    with Clients(haproxy.port) as clients:
        time.sleep(BEFORE)
        started = time.monotonic()
        change(way, haproxy, module, str(new_pem))
        time.sleep(AFTER)
    switched = [t - started for t, ok, got in clients.results if ok and got == issued.fingerprint]
    failed = [got for _, ok, got in clients.results if not ok]
    return {
        "sessions": len(clients.results),
        "failed": failed,
        "kept": still_answering(sessions),
        "switched": min(switched) if switched else None,
        "worker_changed": haproxy.workers() != workers,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=3, help="changes per way")
    args = parser.parse_args()
    module = load_loader_module("modules", "certsync_haproxy")
    module.__utils__ = UTILS
    ca = TestCA()
    with tempfile.TemporaryDirectory(prefix="bench-haproxy-") as tmp:
        root = pathlib.Path(tmp)
        haproxy = HAProxy(root, ca.leaf(HOST))
        try:
            for way in ("runtime", "reload"):
                runs = [one(way, haproxy, module, ca, root) for _ in range(args.changes)]
                errors = collections.Counter(e for run in runs for e in run["failed"])
                switched = [run["switched"] for run in runs if run["switched"] is not None]
                print(
                    f"{way:8} changes {len(runs)}  sessions {sum(r['sessions'] for r in runs)}  "
                    f"failed {sum(len(r['failed']) for r in runs)}  long sessions kept "
                    f"{sum(r['kept'] for r in runs)}/{LONG_SESSIONS * len(runs)}  new certificate "
                    f"served after {max(switched) if switched else float('nan'):.3f} s at most  "
                    f"worker changed {sum(r['worker_changed'] for r in runs)}/{len(runs)}"
                )
                for error, count in errors.most_common(5):
                    print(f"           {count} x {error[:150]}")
        finally:
            haproxy.stop()


if __name__ == "__main__":
    main()
