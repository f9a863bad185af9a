"""
Renewal-to-served latency over the Salt bus, and how it grows with the number
of consumers: a real salt-master, the NPM minion and 1, 4 or 8 consumer
minions (the first with a mailcow-like stack in Docker, checked on the wire;
the others deploy files only). NPM's side is the real certbot with NPM's ini
and command lines against pebble on loopback (the source state makes it keep
the key). For each size, N renewals (NPM's ``certbot renew --force-renewal``),
each timed from the moment certbot has moved NPM's live/ links (certbot
returned) until every consumer has it and the stack serves it on all nine
endpoints. Prints p50/p95/max, and certbot's own run time apart.

Needs a Docker engine, certbot and pebble (scripts/test-deps.sh). Run: scripts/bench.sh
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from figures import figures  # noqa: E402
from support.acme import NpmCertbot, Pebble  # noqa: E402
from support.daemons import SaltDaemons  # noqa: E402
from support.fleet import (  # noqa: E402
    HOST,
    file_only_settings,
    stack_settings,
    wait_until,
    write_pillar,
)
from support.mailcow_stack import NAMES, MailcowStack, build_image, docker_client  # noqa: E402
from support.pki import TestCA, issue, write_pair  # noqa: E402


def deployed_fingerprint(ssl_dir):
    try:
        cert = x509.load_pem_x509_certificate((ssl_dir / "cert.pem").read_bytes())
    except (OSError, ValueError):
        return None
    return cert.fingerprint(hashes.SHA256()).hex()


def measure(size, renewals, image, work, certbot_times):
    pebble = Pebble(work / "pebble", TestCA("bench pebble listener")).start()
    certbot = NpmCertbot(work / "npm", pebble)
    certbot.issue(5, NAMES)
    first, live_dir = certbot.current(5), certbot.live_dir
    snakeoil = issue(HOST, sans=[HOST], key_kind="rsa-2048")
    stack = MailcowStack(docker_client(), image, work / "mailcow-0", snakeoil).start()
    consumers, ssl_dirs = {"mailcow-0": stack_settings(stack)}, []
    for number in range(1, size):
        checkout = work / f"mailcow-{number}"
        write_pair(checkout / "data" / "assets" / "ssl", snakeoil)
        (checkout / "mailcow.conf").write_text("SKIP_LETS_ENCRYPT=n\n")
        consumers[f"mailcow-{number}"] = file_only_settings(checkout)
        ssl_dirs.append(checkout / "data" / "assets" / "ssl")
    write_pillar(work / "pillar", "npm", consumers, live_dir, False)
    salt = SaltDaemons(work / "salt")
    salt.write_master(work / "pillar", {"npm": sorted(consumers)})
    try:
        salt.start_master()
        for minion_id in ["npm", *consumers]:
            salt.start_minion(minion_id)
        everyone = {"npm", *consumers}
        wait_until(
            lambda: (salt.run("salt", "*", "test.ping", check=False)[1] or {}).keys() >= everyone,
            120,
            interval=1,
            what="every minion",
        )
        salt.run("salt-run", "saltutil.sync_all")
        salt.run("salt", "*", "saltutil.sync_all")
        salt.run("salt", "-L", ",".join(consumers), "state.apply", "certsync")
        salt.run("salt", "npm", "state.apply", "certsync")

        def everywhere(fingerprint):
            return all(deployed_fingerprint(d) == fingerprint for d in ssl_dirs) and set(
                stack.served().values()
            ) == {fingerprint}

        wait_until(lambda: everywhere(first.fingerprint), 180, interval=0.5, what="the first cert")
        samples = []
        for _ in range(renewals):
            began = time.monotonic()
            certbot.renew(5)
            start = time.monotonic()
            certbot_times.append(start - began)
            renewed = certbot.current(5)
            wait_until(
                lambda r=renewed: everywhere(r.fingerprint),
                120,
                interval=0.1,
                what="the renewal everywhere",
            )
            samples.append(time.monotonic() - start)
        return samples
    finally:
        salt.stop()
        stack.remove()
        pebble.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--renewals", type=int, default=10)
    parser.add_argument("--sizes", default="1,4,8")
    args = parser.parse_args()
    image = build_image()
    print(f"{'consumers':>9}  {'renewals':>8}  {'p50 s':>7}  {'p95 s':>7}  {'max s':>7}")
    certbot_times = []
    for size in (int(n) for n in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="certsync-bench-") as tmp:
            samples = sorted(measure(size, args.renewals, image, pathlib.Path(tmp), certbot_times))
        p95 = samples[int(0.95 * (len(samples) - 1))]
        print(
            f"{size:>9}  {len(samples):>8}  {statistics.median(samples):>7.2f}  {p95:>7.2f}"
            f"  {samples[-1]:>7.2f}",
            flush=True,
        )

    spent = figures(t * 1000 for t in certbot_times)
    print(f"certbot renew itself (not in the figures above): {spent}")


if __name__ == "__main__":
    main()
