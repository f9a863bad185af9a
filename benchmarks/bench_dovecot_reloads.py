"""
Dovecot reloaded over and over under its clients: does a reload alone ever fail
a session? The look-alike's dovecot (mailcow's login settings, the formula's
``shutdown_clients = no``) gets ``doveadm reload`` every ``--gap`` seconds,
``--reloads`` times, while ``--clients`` clients per endpoint run complete
sessions on IMAP, POP3 (STARTTLS and implicit TLS) and ManageSieve
(harness/mail_clients.py). ``--busy N`` keeps N busy loops running, for a
machine whose cores are taken. Prints the sessions, the failed ones each with
its time against the nearest reload, its phase and what it got.

Needs a Docker engine (scripts/test-deps.sh). Run:
.venv/salt3008/bin/python benchmarks/bench_dovecot_reloads.py --reloads 60 --gap 0.7
"""

import argparse
import collections
import multiprocessing
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness

from harness.mail_clients import Fleet, failed_session  # noqa: E402
from harness.mailcow_stack import HOST, NAMES, MailcowStack, build_image, docker_client  # noqa: E402
from harness.pki import TestCA  # noqa: E402

DOVECOT_ENDPOINTS = ("imap", "imaps", "pop3", "pop3s", "sieve")
SHOWN_FAILURES = 40


def _busy(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--reloads", type=int, default=60)
    parser.add_argument("--gap", type=float, default=0.7, help="seconds between reloads")
    parser.add_argument("--clients", type=int, default=4, help="clients per endpoint")
    parser.add_argument("--busy", type=int, default=0, help="busy loops beside it")
    args = parser.parse_args()
    ca = TestCA()
    window = args.reloads * args.gap + 5
    with tempfile.TemporaryDirectory() as tmp:
        stack = MailcowStack(
            docker_client(), build_image(), pathlib.Path(tmp) / "mailcow", ca.leaf(HOST, sans=NAMES)
        )
        (stack.dovecot_conf_dir / "extra.conf").write_text("shutdown_clients = no\n")
        stack.start()
        burners = [
            multiprocessing.get_context("spawn").Process(target=_busy, args=(window,))
            for _ in range(args.busy)
        ]
        try:
            endpoints = {k: v for k, v in stack.endpoints.items() if k in DOVECOT_ENDPOINTS}
            reloads = []
            with Fleet(endpoints, args.clients, NAMES[:2], 0.2, 2, limit=window + 60) as fleet:
                for burner in burners:
                    burner.start()
                time.sleep(2)
                for _ in range(args.reloads):
                    reloads.append(time.monotonic())
                    result = stack.exec("dovecot-mailcow", "doveadm", "reload")
                    if result.exit_code != 0:
                        sys.exit(f"doveadm reload: {result.output.decode()[:300]}")
                    time.sleep(args.gap)
                time.sleep(3)
        finally:
            for burner in burners:
                burner.join(window + 10)
            stack.remove()
    failed = [row for row in fleet.rows if row["outcome"] != "ok"]
    print(
        f"{args.reloads} dovecot reloads {args.gap} s apart, {args.clients} clients per "
        f"endpoint, {args.busy} busy loops: {len(fleet.rows)} sessions, {len(failed)} failed"
    )
    for row in failed[:SHOWN_FAILURES]:
        nearest = min(reloads, key=lambda when: abs(when - row["start"]))
        print(f"  {failed_session(row, nearest, 'the nearest reload')}")
    kinds = collections.Counter((r["endpoint"], r.get("phase"), r["outcome"]) for r in failed)
    for (endpoint, phase, outcome), count in sorted(kinds.items()):
        print(f"  failed {endpoint:<6} {phase:<13} {outcome:<9} {count:>5}")


if __name__ == "__main__":
    main()
