"""
The whole certsync pipeline on this host, with its embedded default:

- a salt-master with certsync's reactor and runner (file_roots: this repo's salt/);
- the minion ``npm`` holding NPM's letsencrypt tree, made by the real certbot
  with NPM's ini and command lines against pebble (Let's Encrypt's ACME test
  server) on loopback;
- the minion ``mailcow`` with a mailcow-like stack in Docker (real postfix,
  dovecot and nginx serving TLS on loopback ports), with DANE on: its zone
  on Knot DNS (loopback) publishes ``_25._tcp`` TLSA and takes RFC 2136
  updates signed with a TSIG key;
- one ``state.apply certsync`` per role, then NPM's hourly renewal (certbot
  renew: the key is kept, the TLSA record holds), then a re-issue with
  edited names (a new key: the TLSA record rolled over through RFC 2136),
  each with the timeline of the Salt bus, the zone and the wire until every
  endpoint serves it, then ``salt-run certsync.status``.

Everything lives under the work dir (argument 1, default .cache/demo) and
only loopback is used. The daemons and containers stop at the end.
"""

import json
import os
import pathlib
import shutil
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness

from harness.acme import NpmCertbot, Pebble  # noqa: E402
from harness.daemons import SaltDaemons  # noqa: E402
from harness.fleet import (  # noqa: E402
    HOST,
    BusRecorder,
    stack_settings,
    wait_until,
    write_pillar,
)
from harness.knot import UpdatableDNS  # noqa: E402
from harness.mailcow_stack import NAMES, MailcowStack, build_image, docker_client  # noqa: E402
from harness.pki import TestCA, issue  # noqa: E402

TLSA_NAME = f"_25._tcp.{HOST}"
TTL = 2

START = time.monotonic()


def say(text):
    print(f"[{time.monotonic() - START:7.2f}s] {text}", flush=True)


#: The jobs the timeline shows: the roles' runs, and what the reactor sends on a renewal.
JOBS = ("state.apply", "certsync_mine.publish_source", "certsync_deploy.deployed")


def _job_line(tag, data):
    fun = data.get("fun")
    if tag.endswith("/new"):
        mods = next((arg for arg in data.get("arg") or [] if isinstance(arg, str)), "")
        return f"{' '.join(filter(None, [fun, mods]))} on {', '.join(data.get('minions', []))}"
    line = f"{data.get('id')} finished {fun} (success: {data.get('success')})"
    returned = data.get("return")
    if isinstance(returned, dict):
        failed = [
            s["comment"].splitlines()[0]
            for s in returned.values()
            if isinstance(s, dict) and s.get("result") is False and s.get("comment")
        ]
        line += "".join(f"; {comment}" for comment in failed)
    elif returned and not data.get("success"):
        line += f"; {str(returned)[:200]}"
    return line


def show_timeline(bus, seen, since):
    """Print the certsync-related events that arrived since the last call."""
    for event in bus.events[seen:]:
        tag, data = event["tag"], event["data"]
        stamp = time.monotonic() - since
        if "certsync" in tag:
            extra = (data.get("data") or data).get("fingerprint", "")
            print(f"           +{stamp:6.2f}s bus: {tag} {extra[:16]}")
        elif (
            tag.startswith("salt/job/")
            and data.get("fun") in JOBS
            and (tag.endswith("/new") or data.get("id"))
        ):
            print(f"           +{stamp:6.2f}s bus: {_job_line(tag, data)}")
    return len(bus.events)


def start_fleet(work, salt, certbot, knot):
    """The NPM tree, the zone, the mailcow-like stack, the master and both minions."""
    say("NPM requests mail.example.test: certbot certonly (NPM's command line) against pebble")
    certbot.issue(5, NAMES)
    first = certbot.current(5)
    say(f"NPM holds {first.fingerprint[:16]}... in live/npm-5 (EC P-384, a new key)")
    say(
        "starting the mailcow-like stack (postfix, dovecot, nginx; acme-mailcow created "
        "without SKIP_LETS_ENCRYPT=y), serving a self-signed pair"
    )
    snakeoil = issue(HOST, sans=[HOST], key_kind="rsa-2048")
    stack = MailcowStack(
        docker_client(), build_image(), work / "mailcow-dockerized", snakeoil, acme=True
    )
    stack.start()
    say(f"endpoints on 127.0.0.1: {stack.endpoints}")
    record = f"3 1 1 {first.spki_sha256}"
    knot.start([f"_25._tcp.mail IN TLSA {record}"], ttl=TTL)
    say(f"Knot serves example.test on 127.0.0.1:{knot.port}: {TLSA_NAME} TLSA {record[:22]}...")
    # The formula's own schedule (every 30 minutes, splay 5): the bus does the work.
    settings = {**stack_settings(stack), "dane": knot.pillar_dane(max_wait=60)}
    write_pillar(work / "pillar", "npm", {"mailcow": settings}, certbot.live_dir, False)
    salt.write_master(work / "pillar")
    say("starting salt-master and the minions npm and mailcow")
    salt.start_master()
    for minion_id in ("npm", "mailcow"):
        salt.start_minion(minion_id)
    wait_until(
        lambda: (
            (salt.run("salt", "*", "test.ping", check=False)[1] or {}).keys() >= {"npm", "mailcow"}
        ),
        90,
        interval=1,
        what="both minions",
    )
    salt.run("salt-run", "saltutil.sync_all")
    salt.run("salt", "*", "saltutil.sync_all")
    return stack, first


def show_zone(knot, records, since):
    """Print the TLSA records when they change."""
    now = knot.tlsa(TLSA_NAME)
    if now != records:
        shown = ", ".join(f"{r[:22]}..." for r in sorted(now)) or "none"
        print(f"           +{time.monotonic() - since:6.2f}s zone: {TLSA_NAME} TLSA {shown}")
    return now


def renewal_timeline(bus, stack, knot, renewed, since):
    """Print what crosses the bus, the zone and the wire until every endpoint serves
    ``renewed`` for every name mailcow serves (and the zone holds only its record);
    times from ``since`` (certbot's start)."""
    seen, done, records = len(bus.events), set(), knot.tlsa(TLSA_NAME)
    every = [*NAMES, ""]  # each name of ssl/<hostname>/, and no SNI (the top-level pair)
    for _ in range(480):
        seen = show_timeline(bus, seen, since)
        now = stack.served_names(every)
        for endpoint in stack.endpoints:
            probes = [fp for key, fp in now.items() if key.split("/")[0] == endpoint]
            if endpoint not in done and set(probes) == {renewed.fingerprint}:
                done.add(endpoint)
                stamp = time.monotonic() - since
                print(f"           +{stamp:6.2f}s wire: {endpoint} serves it for every name")
        records = show_zone(knot, records, since)  # after the wire: a record goes after its pair
        if set(now.values()) == {renewed.fingerprint} and records == {
            f"3 1 1 {renewed.spki_sha256}"
        }:
            show_timeline(bus, seen, since)
            return len(stack.endpoints)
        time.sleep(0.25)
    sys.exit("demo: the renewal was not served, or its TLSA record not alone, within 120 s")


def main(work):
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pebble = Pebble(work / "pebble", TestCA("demo pebble listener")).start()
    certbot = NpmCertbot(work / "npm-host", pebble)
    knot = UpdatableDNS(work / "knot")
    salt, stack = SaltDaemons(work), None
    try:
        stack, first = start_fleet(work, salt, certbot, knot)
        bus = BusRecorder(salt.opts).start()
        say("salt npm state.apply certsync; salt mailcow state.apply certsync")
        salt.run("salt", "npm", "state.apply", "certsync")
        salt.run("salt", "mailcow", "state.apply", "certsync")
        wait_until(
            lambda: set(stack.served().values()) == {first.fingerprint},
            120,
            interval=1,
            what="the first certificate to be served",
        )
        say(f"every endpoint serves {first.fingerprint[:16]}... (the NPM certificate)")

        reuse = certbot.renewal_conf(5).read_text().count("reuse_key = True")
        say(f"the npm state set reuse_key = True in renewal/npm-5.conf ({reuse} line)")

        say("NPM renews npm-5: certbot renew --force-renewal (NPM's command line); nobody else")
        since = time.monotonic()
        certbot.renew(5)
        renewed = certbot.current(5)
        say(f"certbot done after {time.monotonic() - since:.1f}s: {renewed.fingerprint[:16]}...")
        same = renewed.spki_sha256 == first.spki_sha256
        say(f"key kept: {same} (the TLSA 3 1 1 record still matches; no DNS change)")
        count = renewal_timeline(bus, stack, knot, renewed, since)
        say(f"the renewal is served on all {count} endpoints after {time.monotonic() - since:.1f}s")

        say("names edited in NPM's UI: certbot certonly for npm-5, so a NEW key")
        since = time.monotonic()
        certbot.issue(5, [*NAMES, "webmail.example.test"])
        rekeyed = certbot.current(5)
        took = time.monotonic() - since
        say(f"certbot done after {took:.1f}s: new key {rekeyed.spki_sha256[:16]}...")
        count = renewal_timeline(bus, stack, knot, rekeyed, since)
        say(
            f"rolled over: served on all {count} endpoints, only the new TLSA record left, "
            f"after {time.monotonic() - since:.1f}s (the zone's TTL is {TTL} s)"
        )
        code, status = salt.run("salt-run", "certsync.status")
        say(f"salt-run certsync.status (exit code {code}):")
        print(json.dumps(status, indent=2))
        bus.stop()
    finally:
        salt.stop()
        if stack:
            stack.remove()
        knot.stop()
        pebble.stop()
    say(f"done; logs under {work}")


if __name__ == "__main__":
    os.umask(0o022)
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else REPO / ".cache" / "demo").resolve())
