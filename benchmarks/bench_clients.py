"""
What mail clients see while a renewal is deployed, on a mailcow-like stack in
Docker (real postfix, dovecot and nginx on loopback): clients on each of the
nine endpoints, spread over a few processes, run complete sessions
(harness/mail_clients.py: greeting, STARTTLS where the protocol has it, the
handshake with SNI for the hostname and for another served name, one exchange)
with a short pause between them around each deploy. Long sessions opened before
the deploy are used again after it: one per endpoint idle before any login, and
on IMAP, POP3 and ManageSieve one logged in (as a mail user agent's is).

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
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness

from figures import figures  # noqa: E402

from harness.loader import certsync_mod, mailcow_mod, tlsprobe_mod  # noqa: E402
from harness.mail_clients import KINDS, LOGINS, Fleet, LongSession, failed_session  # noqa: E402
from harness.mailcow_stack import HOST, NAMES, MailcowStack, build_image, docker_client  # noqa: E402
from harness.pki import TestCA, write_pair  # noqa: E402

SERVICES = ["postfix-mailcow", "dovecot-mailcow", "nginx-mailcow"]
OTHER_NAME = next(name for name in NAMES if name != HOST)
#: Seconds of sessions around each deploy: after it, past the 6 s dovecot gives the
#: processes of its old configuration before it ends them (SERVICE_DIE_TIMEOUT_MSECS);
#: before it, enough for 2,000 sessions a deploy at a rate mailcow's pop3-login
#: (process_min_avail = 1) still serves pop3s at: 4 clients an endpoint, 0.2 s pause
BEFORE, AFTER = 6.0, 8.0
SESSION_TIMEOUT = 5
#: The failed sessions printed one by one (when, where, in which phase, what they got).
SHOWN_FAILURES = 20


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


def _open_long_sessions(stack):
    """Before a deploy, on each endpoint: a session left idle before any login, and on
    IMAP, POP3 and ManageSieve one logged in too. {(endpoint, kind): session or error}"""
    longs = {}
    for endpoint, port in stack.endpoints.items():
        kinds = ["idle", "logged in"] if KINDS[endpoint][1] in LOGINS else ["idle"]
        for kind in kinds:
            user = f"bench-{endpoint}" if kind == "logged in" else None
            try:
                longs[endpoint, kind] = LongSession(endpoint, port, HOST, user=user)
            except OSError as exc:
                longs[endpoint, kind] = exc
    return longs


def one_deploy(way, stack, ca, key, tmp, number, clients):
    """One deploy ``way`` with the ``clients`` (per endpoint, pause, processes) on."""
    renewed = ca.leaf(HOST, sans=NAMES, key=key)
    pair_dir = tmp / f"{way}-{number}"
    write_pair(pair_dir, renewed, "fullchain.pem", "privkey.pem")
    longs = _open_long_sessions(stack)
    per_endpoint, pause, processes = clients
    with Fleet(
        stack.endpoints, per_endpoint, (HOST, OTHER_NAME), pause, processes,
        timeout=SESSION_TIMEOUT,
    ) as fleet:  # fmt: skip
        time.sleep(BEFORE)
        started = time.monotonic()
        unverified = deploy(way, pair_dir, stack, renewed)
        done = time.monotonic()
        time.sleep(AFTER)
    rows = fleet.rows
    survived = {
        key: (long.use() if isinstance(long, LongSession) else f"not opened: {long}")
        for key, long in longs.items()
    }
    switched = {}
    for row in sorted(rows, key=lambda r: r["start"]):
        if row["fingerprint"] == renewed.fingerprint and row["endpoint"] not in switched:
            switched[row["endpoint"]] = row["start"] - started
    window = (started - BEFORE, done + AFTER)
    return {
        "rows": rows,
        "started": started,
        "deploy_s": done - started,
        "unverified": unverified,
        "gaps": _gaps(rows, *window),
        "switched": switched,
        "survived": survived,
    }


def report(way, runs):
    rows = [row for run in runs for row in run["rows"]]
    failed = [row for row in rows if row["outcome"] != "ok"]
    print(
        f"-- {way}: {len(runs)} deploys, {len(rows)} sessions ({len(rows) // len(runs)} per "
        f"deploy, fewest {min(len(run['rows']) for run in runs)}), {len(failed)} failed"
    )
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
    shown = [
        f"deploy {number}: " + failed_session(row, run["started"], "the deploy's start")
        for number, run in enumerate(runs)
        for row in run["rows"]
        if row["outcome"] != "ok"
    ]
    for line in shown[:SHOWN_FAILURES]:
        print(f"   {line}")
    per_endpoint = collections.Counter(row["endpoint"] for row in rows)
    for endpoint in sorted(per_endpoint):
        gaps = [run["gaps"].get(endpoint, BEFORE + AFTER) for run in runs]
        switch = [run["switched"][endpoint] for run in runs if endpoint in run["switched"]]
        switched = f"{min(switch):+.2f}..{max(switch):+.2f} s" if switch else "never"
        print(
            f"   {endpoint:<10} {per_endpoint[endpoint]:>6} sessions; longest gap "
            f"{max(gaps):.2f} s (median {sorted(gaps)[len(gaps) // 2]:.2f}); new cert "
            f"from the deploy's start: {switched}; long sessions kept "
            + ", ".join(_kept(runs, endpoint))
        )


def _kept(runs, endpoint):
    """'idle 10/10', 'logged in 10/10 (lost: ...)': the long sessions of ``endpoint``."""
    shown = []
    for kind in ("idle", "logged in"):
        outcomes = [
            run["survived"][endpoint, kind] for run in runs if (endpoint, kind) in run["survived"]
        ]
        if outcomes:
            lost = [outcome for outcome in outcomes if outcome is not None]
            shown.append(
                f"{kind} {len(outcomes) - len(lost)}/{len(outcomes)}"
                + (f" (lost: {lost[0]})" if lost else "")
            )
    return shown


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--deploys", type=int, default=10, help="deploys by certsync's reload")
    parser.add_argument("--others", type=int, default=3, help="deploys by each other way")
    parser.add_argument("--clients", type=int, default=4, help="clients per endpoint")
    parser.add_argument(
        "--processes", type=int, default=2, help="client processes the clients are spread over"
    )
    parser.add_argument("--ways", default="reload,restart,mailcow")
    parser.add_argument(
        "--shutdown-clients",
        choices=("yes", "no"),
        default="no",
        help="dovecot's shutdown_clients in mailcow's data/conf/dovecot/extra.conf: no (what "
        "the formula sets: a reload keeps logged-in sessions) or yes (dovecot's default: a "
        "reload ends them 6 s later)",
    )
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
        f"{args.clients} clients per endpoint in {args.processes} processes, {args.pause} s "
        f"between a client's "
        f"sessions, {BEFORE} s before each deploy until {AFTER} s after it; SNI {HOST} and "
        f"{OTHER_NAME} in turn; dovecot's shutdown_clients = {args.shutdown_clients}"
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        stack = MailcowStack(docker_client(), build_image(), tmp / "mailcow", first)
        extra = stack.dovecot_conf_dir / "extra.conf"
        extra.write_text(f"shutdown_clients = {args.shutdown_clients}\n")
        stack.start()
        try:
            clients = (args.clients, args.pause, args.processes)
            for way in args.ways.split(","):
                count = args.deploys if way == "reload" else args.others
                runs = [
                    one_deploy(way, stack, ca, first.key, tmp, number, clients)
                    for number in range(count)
                ]
                report(way, runs)
        finally:
            stack.remove()


if __name__ == "__main__":
    main()
