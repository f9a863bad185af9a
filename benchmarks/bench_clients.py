"""
What mail clients see while a renewal is deployed, on a mailcow-like stack in
Docker (real postfix, dovecot and nginx on loopback): client threads on each of
the nine endpoints run complete sessions (benchmarks/clients.py: greeting,
STARTTLS where the protocol has it, the handshake with SNI for the hostname and
for another served name, one exchange) without pause around each deploy, and a
long session per endpoint opened before the deploy is used again after it.

Three ways to deploy, each several times:

- ``reload``: certsync's path: install the pair (top level and ssl/<hostname>/),
  ``mailcow.reload`` (postfix reload with its SNI map rebuilt, doveadm reload,
  nginx -s reload), then the deploy's own check on the wire (``tlsprobe.wait_for``);
- ``restart``: certsync's restart path, forced: install, ``mailcow.restart`` of
  the three services, the same check;
- ``mailcow``: mailcow's documented way for one's own certificate: copy the
  files, ``docker restart`` of postfix, dovecot and nginx.

Prints, per way: sessions, failed sessions by endpoint and kind, the longest
gap in service per endpoint (the longest time no session on it succeeded),
when each endpoint switched to the new certificate (its first session with it,
from the deploy's start), and the long sessions that survived.

Needs a Docker engine (scripts/test-deps.sh). Run: scripts/bench.sh, or
``.venv/salt3008/bin/python benchmarks/bench_clients.py --deploys 10``.
"""

import argparse
import collections
import itertools
import pathlib
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness

from clients import LongSession, session  # noqa: E402
from figures import figures  # noqa: E402

from harness.loader import certsync_mod, mailcow_mod, tlsprobe_mod  # noqa: E402
from harness.mailcow_stack import HOST, NAMES, MailcowStack, build_image, docker_client  # noqa: E402
from harness.pki import TestCA, write_pair  # noqa: E402

SERVICES = ["postfix-mailcow", "dovecot-mailcow", "nginx-mailcow"]
OTHER_NAME = next(name for name in NAMES if name != HOST)
BEFORE, AFTER = 1.5, 3.0  # seconds of sessions around each deploy
SESSION_TIMEOUT = 5


class Clients:
    """``per_endpoint`` threads per endpoint looping on complete sessions (bounded)."""

    def __init__(self, endpoints, per_endpoint, pause, limit=120):
        self.endpoints, self.pause, self.limit = endpoints, pause, limit
        self.rows, self.lock, self.stop = [], threading.Lock(), threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, args=(name, port, number), daemon=True)
            for name, port in endpoints.items()
            for number in range(per_endpoint)
        ]

    def _loop(self, endpoint, port, number):
        deadline = time.monotonic() + self.limit
        names = (HOST, OTHER_NAME) if number % 2 == 0 else (OTHER_NAME, HOST)
        for count in range(1_000_000):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            row = session(endpoint, port, names[count % 2], timeout=SESSION_TIMEOUT)
            with self.lock:
                self.rows.append(row)
            self.stop.wait(self.pause)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(SESSION_TIMEOUT + 5)


def _install(pair_dir, stack):
    fullchain, privkey = pair_dir / "fullchain.pem", pair_dir / "privkey.pem"
    for directory in (stack.ssl_dir, stack.ssl_dir / HOST):
        certsync_mod.install(str(fullchain), str(privkey), str(directory))


def _check(stack, renewed):
    """The deploy's own check on the wire: None when every endpoint serves ``renewed``
    for every name within 30 s, else what it saw instead (endpoint: error)."""
    waited = tlsprobe_mod.wait_for(
        HOST, renewed.fingerprint, stack.endpoints, "127.0.0.1", timeout=30, interval=0.2,
        names=[*NAMES, ""],
    )  # fmt: skip
    if waited["ok"]:
        return None
    return {
        key: row.get("error") or row.get("fingerprint", "")[:12]
        for key, row in waited["served"].items()
        if row.get("probed", True) and row.get("fingerprint") != renewed.fingerprint
    }


def deploy(way, pair_dir, stack, renewed):
    """One deploy the ``way`` given; returns when it is done (as its caller sees it),
    with what its check on the wire did not see (None: all served, or no check)."""
    _install(pair_dir, stack)
    if way == "reload":
        results = mailcow_mod.reload(path=str(stack.root))
    elif way == "restart":
        results = mailcow_mod.restart(path=str(stack.root))
    else:  # mailcow's docs: copy the files, then docker restart the three services
        for service in SERVICES:
            stack.containers[service].restart(timeout=10)
        results = {}
    assert all(r["ok"] for r in results.values()), results
    return _check(stack, renewed) if way != "mailcow" else None


def _gaps(rows, start, end):
    """The longest time without a successful session, per endpoint, in [start, end]."""
    gaps = {}
    by_endpoint = collections.defaultdict(list)
    for row in rows:
        if row["outcome"] == "ok":
            by_endpoint[row["endpoint"]].append(row["end"])
    for endpoint, ends in by_endpoint.items():
        stamps = [start, *sorted(t for t in ends if start <= t <= end), end]
        gaps[endpoint] = max(b - a for a, b in itertools.pairwise(stamps))
    return gaps


def one_deploy(way, stack, ca, key, tmp, number, per_endpoint, pause):
    renewed = ca.leaf(HOST, sans=NAMES, key=key)
    pair_dir = tmp / f"{way}-{number}"
    write_pair(pair_dir, renewed, "fullchain.pem", "privkey.pem")
    longs = {}
    for endpoint, port in stack.endpoints.items():
        try:
            longs[endpoint] = LongSession(endpoint, port, HOST)
        except OSError as exc:
            longs[endpoint] = exc
    with Clients(stack.endpoints, per_endpoint, pause) as clients:
        time.sleep(BEFORE)
        started = time.monotonic()
        unverified = deploy(way, pair_dir, stack, renewed)
        done = time.monotonic()
        time.sleep(AFTER)
    rows = clients.rows
    survived = {
        endpoint: (long.use() if isinstance(long, LongSession) else f"not opened: {long}")
        for endpoint, long in longs.items()
    }
    switched = {}
    for row in sorted(rows, key=lambda r: r["start"]):
        if row["fingerprint"] == renewed.fingerprint and row["endpoint"] not in switched:
            switched[row["endpoint"]] = row["start"] - started
    window = (started - BEFORE, done + AFTER)
    return {
        "rows": rows,
        "deploy_s": done - started,
        "unverified": unverified,
        "gaps": _gaps(rows, *window),
        "switched": switched,
        "survived": survived,
    }


def report(way, runs):
    rows = [row for run in runs for row in run["rows"]]
    failed = [row for row in rows if row["outcome"] != "ok"]
    print(f"-- {way}: {len(runs)} deploys, {len(rows)} sessions, {len(failed)} failed")
    print(f"   deploy (as its caller sees it): {figures([r['deploy_s'] * 1000 for r in runs])}")
    unverified = [run["unverified"] for run in runs if run["unverified"]]
    if unverified:
        print(
            f"   the deploy's own check did not see the new certificate everywhere within "
            f"30 s in {len(unverified)} of {len(runs)} deploys, e.g. {unverified[0]}"
        )
    kinds = collections.Counter((row["endpoint"], row["outcome"]) for row in failed)
    for (endpoint, outcome), count in sorted(kinds.items()):
        sample = next(
            r.get("error") for r in failed if (r["endpoint"], r["outcome"]) == (endpoint, outcome)
        )
        print(f"   failed {endpoint:<10} {outcome:<9} {count:>5}  e.g. {sample}")
    per_endpoint = collections.Counter(row["endpoint"] for row in rows)
    for endpoint in sorted(per_endpoint):
        gaps = [run["gaps"].get(endpoint, BEFORE + AFTER) for run in runs]
        switch = [run["switched"][endpoint] for run in runs if endpoint in run["switched"]]
        lost = [run["survived"][endpoint] for run in runs if run["survived"][endpoint] is not None]
        switched = f"{min(switch):+.2f}..{max(switch):+.2f} s" if switch else "never"
        print(
            f"   {endpoint:<10} {per_endpoint[endpoint]:>6} sessions; longest gap "
            f"{max(gaps):.2f} s (median {sorted(gaps)[len(gaps) // 2]:.2f}); new cert "
            f"from the deploy's start: {switched}; long sessions kept "
            f"{len(runs) - len(lost)}/{len(runs)}" + (f" (lost: {lost[0]})" if lost else "")
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--deploys", type=int, default=10, help="deploys by certsync's reload")
    parser.add_argument("--others", type=int, default=3, help="deploys by each other way")
    parser.add_argument("--clients", type=int, default=4, help="client threads per endpoint")
    parser.add_argument("--ways", default="reload,restart,mailcow")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.2,
        help="seconds a client waits between its sessions (0: back to back, which starves "
        "dovecot's imaps and pop3s listeners behind imap and pop3, deploy or not)",
    )
    args = parser.parse_args()
    for module in (certsync_mod, mailcow_mod, tlsprobe_mod):
        module.__context__ = {}
    mailcow_mod.__opts__ = {}
    ca = TestCA()
    first = ca.leaf(HOST, sans=NAMES, key_kind="ec-p384")
    print(
        f"{args.clients} client threads per endpoint, {args.pause} s between a client's "
        f"sessions, {BEFORE} s before each deploy until {AFTER} s after it; SNI {HOST} and "
        f"{OTHER_NAME} in turn"
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        stack = MailcowStack(docker_client(), build_image(), tmp / "mailcow", first).start()
        try:
            for way in args.ways.split(","):
                count = args.deploys if way == "reload" else args.others
                runs = [
                    one_deploy(way, stack, ca, first.key, tmp, number, args.clients, args.pause)
                    for number in range(count)
                ]
                report(way, runs)
        finally:
            stack.remove()


if __name__ == "__main__":
    main()
