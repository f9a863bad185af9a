"""
How long mailcow's reload path takes on this machine, certsync aside: the
mailcow module's own ``reload`` (``docker exec`` of ``postfix reload``,
``doveadm reload`` and ``nginx -s reload`` in their containers, at once,
through the Docker API) against the look-alike, ``--rounds`` times with the
endpoints idle and as often while the nine endpoints are probed every 0.1 s (as
a deploy's wire check and bench_bus's wait do). Each round also times an exec
of ``true`` in one container: the engine's share of any exec. Prints the
figures (p50, p95, max) of that exec, of the whole call, and from the call's
start to the last endpoint serving the new pair: a floor under every figure of
bench_bus's that ends on mailcow's endpoints.

Needs a Docker engine (scripts/test-deps.sh). Run:
.venv/salt3008/bin/python benchmarks/bench_mailcow_reloads.py --rounds 10
"""

import argparse
import pathlib
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness

from figures import figures  # noqa: E402

from harness.loader import mailcow_mod  # noqa: E402
from harness.mailcow_stack import HOST, NAMES, MailcowStack, build_image, docker_client  # noqa: E402
from harness.pki import TestCA, write_pair  # noqa: E402

PROBE_GAP = 0.1
SERVED_TIMEOUT = 30


class Prober:
    """Probes every endpoint every ``PROBE_GAP`` seconds in a thread until stopped."""

    def __init__(self, stack):
        self.stack, self.stop = stack, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(PROBE_GAP):
            self.stack.probe(timeout=5)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)


def served_after(stack, fingerprint, began):
    """Seconds from ``began`` until every endpoint served ``fingerprint``."""
    deadline, seen = time.monotonic() + SERVED_TIMEOUT, set()
    while time.monotonic() < deadline:
        stale = [name for name in stack.endpoints if name not in seen]
        for name, result in stack.probe(endpoints=stale).items():
            if result.get("fingerprint") == fingerprint:
                seen.add(name)
        if seen >= set(stack.endpoints):
            return time.monotonic() - began
        time.sleep(PROBE_GAP)
    raise RuntimeError(f"not served everywhere within {SERVED_TIMEOUT} s: {sorted(seen)}")


def one_round(stack, ca, nginx):
    """A new pair in the look-alike's dir, mailcow.reload, then the wire."""
    began = time.monotonic()
    nginx.exec_run(["true"])
    bare_exec = time.monotonic() - began
    renewed = ca.leaf(HOST, sans=NAMES, key_kind="ec-p384")
    for directory in (stack.ssl_dir, stack.ssl_dir / HOST):  # the top-level and per-name dirs
        write_pair(directory, renewed)
    began = time.monotonic()
    results = mailcow_mod.reload(path=str(stack.root))
    call = time.monotonic() - began
    if not all(r["ok"] for r in results.values()):
        raise RuntimeError(f"a reload failed: {results}")
    return {"true exec": bare_exec, "reload call": call, "served": None}, renewed, began


def measure(stack, ca, rounds, probed):
    rows = []
    nginx = stack.service_container("nginx-mailcow")
    for _ in range(rounds):
        if probed:
            with Prober(stack):
                row, renewed, began = one_round(stack, ca, nginx)
        else:
            row, renewed, began = one_round(stack, ca, nginx)
        row["served"] = served_after(stack, renewed.fingerprint, began)
        rows.append(row)
        time.sleep(1)  # the old processes of the last reload are gone
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    mailcow_mod.__context__, mailcow_mod.__opts__ = {}, {}
    ca = TestCA()
    with tempfile.TemporaryDirectory(prefix="certsync-bench-") as tmp:
        first = ca.leaf(HOST, sans=NAMES, key_kind="ec-p384")
        stack = MailcowStack(docker_client(), build_image(), pathlib.Path(tmp) / "mc", first)
        try:
            stack.start()
            for probed in (False, True):
                rows = measure(stack, ca, args.rounds, probed)
                print(f"endpoints {'probed every 0.1 s' if probed else 'idle'}:")
                for figure in rows[0]:
                    spent = figures(row[figure] * 1000 for row in rows)
                    print(f"  {figure:12} {spent}", flush=True)
        finally:
            stack.remove()


if __name__ == "__main__":
    main()
