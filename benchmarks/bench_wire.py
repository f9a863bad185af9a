"""
Time what a client sees, on a mailcow-like stack in Docker (real postfix,
dovecot and nginx on loopback), and print the figures (no pass/fail):

- probing all nine endpoints concurrently vs one by one, and for every name
  of ssl/<hostname>/ plus without SNI;
- from installing a renewed pair (top-level and ssl/<hostname>/, as on a real
  mailcow) to every endpoint serving it for every name (install, reload of
  the three services with postfix's SNI map rebuilt, polling the wire), over
  several renewals.

Needs a Docker engine (scripts/test-deps.sh). Run: scripts/bench.sh
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness

from figures import figures  # noqa: E402

from harness.loader import certsync_mod, mailcow_mod, tlsprobe_mod  # noqa: E402
from harness.mailcow_stack import HOST, NAMES, MailcowStack, build_image, docker_client  # noqa: E402
from harness.pki import TestCA, write_pair  # noqa: E402


def timed_ms(func):
    start = time.perf_counter()
    result = func()
    return (time.perf_counter() - start) * 1000, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--renewals", type=int, default=10)
    args = parser.parse_args()
    for module in (certsync_mod, mailcow_mod, tlsprobe_mod):
        module.__context__ = {}
    mailcow_mod.__opts__ = {}

    ca = TestCA()
    first = ca.leaf(HOST, sans=NAMES, key_kind="ec-p384")
    every = [*NAMES, ""]  # each name of ssl/<hostname>/, and no SNI (the top-level pair)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        stack = MailcowStack(docker_client(), build_image(), tmp / "mailcow", first).start()
        try:
            for label, workers in (("concurrent", None), ("one by one", 1)):
                samples = [
                    timed_ms(
                        lambda w=workers: tlsprobe_mod.probe(
                            HOST, stack.endpoints, "127.0.0.1", timeout=5, workers=w
                        )
                    )[0]
                    for _ in range(args.rounds)
                ]
                print(f"probe 9 endpoints, {label:<10}: {figures(samples)}")
            samples = [
                timed_ms(
                    lambda: tlsprobe_mod.probe(
                        HOST, stack.endpoints, "127.0.0.1", timeout=5, names=every
                    )
                )[0]
                for _ in range(args.rounds)
            ]
            print(f"probe 9 endpoints x {len(every)} names, concurrent: {figures(samples)}")

            steps = {"install": [], "reload": [], "until served": [], "total": []}
            polls = []
            key = first.key
            for number in range(args.renewals):
                renewed = ca.leaf(HOST, sans=NAMES, key=key)
                source = tmp / f"npm-{number}"
                fullchain, privkey = write_pair(source, renewed, "fullchain.pem", "privkey.pem")
                install_ms, _ = timed_ms(
                    lambda f=fullchain, k=privkey: [
                        certsync_mod.install(f, k, str(directory))
                        for directory in (stack.ssl_dir, stack.ssl_dir / HOST)
                    ]
                )
                reload_ms, reloaded = timed_ms(lambda: mailcow_mod.reload(path=str(stack.root)))
                assert all(r["ok"] for r in reloaded.values()), reloaded
                wait_ms, waited = timed_ms(
                    lambda r=renewed: tlsprobe_mod.wait_for(
                        HOST,
                        r.fingerprint,
                        stack.endpoints,
                        "127.0.0.1",
                        timeout=30,
                        interval=0.2,
                        names=every,
                    )
                )
                assert waited["ok"], waited
                polls.append(waited["rounds"])
                for name, value in zip(
                    steps,
                    (install_ms, reload_ms, wait_ms, install_ms + reload_ms + wait_ms),
                    strict=True,
                ):
                    steps[name].append(value)
            print(
                "renewal (top-level + ssl/<hostname>/; reload = postmap -F + postfix reload, "
                f"doveadm reload, nginx -s reload; until served = 9 endpoints x {len(every)} names)"
            )
            for name, samples in steps.items():
                print(f"renewal {name:<13}: {figures(samples)}")
            print(f"polls until served: median {statistics.median(polls)}, max {max(polls)}")
        finally:
            stack.remove()


if __name__ == "__main__":
    main()
