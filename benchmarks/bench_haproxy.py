"""
What HTTPS clients see while HAProxy takes a new certificate, on Debian's real
HAProxy 2.6 on loopback (master-worker, as Debian's unit runs it): client
threads run complete sessions (connect, handshake with SNI, one request, close)
without pause around each change, and long sessions opened before it (kept
alive) are used again after it.

Each change is certsync's deploy of a ``service`` consumer
(``certsync_deploy.deploy``, in process: the pair validated and installed, the
``crt`` file written, the wire checked), two ways, each several times:

- ``runtime``: with ``haproxy_socket``, the pair goes in through the runtime
  API (set/commit ssl cert on the admin socket): no process changes;
- ``reload``: without it, the unit ``haproxy`` is reloaded by its
  ``reload_commands`` argv, HAProxy's seamless reload (SIGUSR2 to the master,
  as ``systemctl reload haproxy`` does): a new worker takes the listeners, the
  old one finishes its connections.

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
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness

from harness.haproxy import HOST, HAProxy, tls_context  # noqa: E402
from harness.loader import (  # noqa: E402
    certsync_mod,
    consumer_mod,
    deploy_functions,
    deploy_mod,
    load_loader_module,
    salt_functions,
    service_consumer_mod,
    source_mod,
    tlsprobe_mod,
)
from harness.pki import TestCA, write_pair  # noqa: E402

#: The modules the deploy reaches, given one minion's dunders.
LOADED = (certsync_mod, consumer_mod, deploy_mod, service_consumer_mod, source_mod)

BEFORE, AFTER = 2.0, 4.0  # seconds of sessions around each change
CLIENTS = 8
LONG_SESSIONS = 8


class Clients:
    """Threads running complete sessions until stopped; what each got, when."""

    def __init__(self, port):
        self.port, self.stop = port, threading.Event()
        self.results = []  # (time, ok, fingerprint or error)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _session(self):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=tls_context())
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
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=tls_context())
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


def run_all(argv, **_):
    """Salt's ``cmd.run_all`` as the deploy calls it (an argv, no shell), in process."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    return {"retcode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def deployer(root):
    """certsync_deploy.deploy in process, with the modules a minion would have."""
    functions = {
        **deploy_functions(),
        **salt_functions(tlsprobe_mod, "tlsprobe"),
        **salt_functions(load_loader_module("modules", "certsync_haproxy"), "certsync_haproxy"),
        "cmd.run_all": run_all,
    }
    for module in {*LOADED, tlsprobe_mod}:
        module.__salt__ = functions
        module.__opts__ = {"test": False, "cachedir": str(root / "cache")}
        module.__context__ = {}
    return deploy_mod.deploy


def change(way, haproxy, deploy, source, root):
    settings = {
        "consumer": "service",
        "files": [{"path": haproxy.crt, "contents": "combined"}],
        "endpoints": {"https": haproxy.port},
        "probe_address": "127.0.0.1",
        "verify_timeout": 10,
    }
    if way == "runtime":
        settings["haproxy_socket"] = haproxy.socket
    else:
        settings["units"] = ["haproxy"]
        settings["reload_commands"] = {"haproxy": ["kill", "-USR2", str(haproxy.proc.pid)]}
    ret = deploy(str(root / "pair"), HOST, source=str(source), **settings)
    if ret["result"] is not True:
        sys.exit(f"bench_haproxy: the deploy failed: {ret['comment']}")


def one(way, haproxy, deploy, ca, root):
    issued = ca.leaf(HOST)
    source = root / "source"
    write_pair(source, issued, "fullchain.pem", "privkey.pem")
    sessions = long_sessions(haproxy.port)
    workers = haproxy.workers()
    with Clients(haproxy.port) as clients:
        time.sleep(BEFORE)
        started = time.monotonic()
        change(way, haproxy, deploy, source, root)
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
    ca = TestCA()
    with tempfile.TemporaryDirectory(prefix="bench-haproxy-") as tmp:
        root = pathlib.Path(tmp)
        (root / "pair").mkdir()
        deploy = deployer(root)
        haproxy = HAProxy(root, ca.leaf(HOST), master_worker=True)
        try:
            for way in ("runtime", "reload"):
                runs = [one(way, haproxy, deploy, ca, root) for _ in range(args.changes)]
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
