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
import contextlib
import pathlib
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness

from figures import figures  # noqa: E402

from harness.fleet import wait_until  # noqa: E402
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
    """Seconds from ``began`` (a Unix time) until every endpoint served ``fingerprint``."""
    seen = {}
    wait_until(
        lambda: stack.note_served(fingerprint, seen),
        SERVED_TIMEOUT,
        interval=PROBE_GAP,
        what="the new pair on every endpoint",
    )
    return max(seen.values()) - began


def one_round(stack, ca, nginx):
    """An exec of ``true``; a new pair in the look-alike's dirs, mailcow.reload, then
    the wire. Seconds each took."""
    began = time.monotonic()
    nginx.exec_run(["true"])
    bare_exec = time.monotonic() - began
    renewed = ca.leaf(HOST, sans=NAMES, key_kind="ec-p384")
    for directory in (stack.ssl_dir, stack.ssl_dir / HOST):  # the top-level and per-name dirs
        write_pair(directory, renewed)
    began = time.time()
    results = mailcow_mod.reload(path=str(stack.root))
    call = time.time() - began
    if not all(r["ok"] for r in results.values()):
        raise RuntimeError(f"a reload failed: {results}")
    served = served_after(stack, renewed.fingerprint, began)
    return {"true exec": bare_exec, "reload call": call, "served": served}


def measure(stack, ca, rounds, probed):
    rows = []
    nginx = stack.service_container("nginx-mailcow")
    for _ in range(rounds):
        with Prober(stack) if probed else contextlib.nullcontext():
            rows.append(one_round(stack, ca, nginx))
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
