"""
The whole certsync pipeline on this host, with its embedded default:

- a salt-master with certsync's reactor and runner (file_roots: this repo's salt/);
- the minion ``npm`` holding NPM's letsencrypt tree, made by the real certbot
  with NPM's ini and command lines against pebble (Let's Encrypt's ACME test
  server) on loopback;
- the minion ``mailcow`` with a mailcow-like stack in Docker (real postfix,
  dovecot and nginx serving TLS on loopback ports), with DANE on: its zone
  on Knot DNS (loopback) publishes ``_25._tcp`` TLSA, managed through
  Cloudflare's API (a v4 API stand-in writing through to Knot; Cloudflare's
  official library on the minion, the API token in its pillar), or with
  ``--dns rfc2136`` by updates signed with a TSIG key;
- one ``state.apply certsync`` per role, then NPM's hourly renewal (certbot
  renew: the key is kept, the TLSA record holds), then a re-issue with
  edited names (a new key: the TLSA record rolled over through the API),
  each with the timeline of the Salt bus, the zone and the wire until every
  endpoint serves it, then ``salt-run certsync.status``.

With ``--source caddy`` the source is Caddy instead (Debian's caddy against
pebble, the minion ``caddy``, pillar ``certsync:source:kind: caddy``): its
re-issue keeps the key (Caddy 2.6), a new site directory makes a new one.

With ``--consumer service`` the consumer is the ``service`` kind instead: the
minion ``mx`` on a host with systemd as PID 1 (a container) where Debian's
postfix, dovecot, nginx and HAProxy 2.6 run as units, reloaded through Salt's
service module (HAProxy through its runtime API, not reloaded). The master
listens on this host's address on Docker's bridge, which the container reaches;
its zone is not in this run (Knot and the API stand-in listen on loopback).

Everything lives under the work dir (default .cache/demo) and only loopback
is used (with ``--consumer service``, also Docker's bridge to the container).
The daemons and containers stop at the end.
"""

import argparse
import json
import os
import pathlib
import shutil
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness

from harness.acme import NpmCertbot, Pebble  # noqa: E402
from harness.caddy import Caddy  # noqa: E402
from harness.cloudflare_api import CloudflareApi  # noqa: E402
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
from harness.pki import TestCA, issue, write_pair  # noqa: E402
from harness.systemd_host import (  # noqa: E402
    ENDPOINTS,
    SystemdHost,
    bridge_gateway,
    mail_consumer,
)

TLSA_NAME = f"_25._tcp.{HOST}"
TTL = 2
#: The demo's Cloudflare API token: the stand-in's, made up here (never a real one).
DEMO_TOKEN = "certsync-demo-" + "0" * 26

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
        if fun == "certsync_deploy.deployed" and not failed:  # what it reloaded or restarted
            done = [s.get("comment", "").splitlines()[0] for s in returned.values()]
            line += "".join(f"; {c.split('; ', 1)[1]}" for c in done if "; " in c)
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


class NpmSide:
    """NPM's certbot tree as the source (the embedded default)."""

    minion = "npm"

    def __init__(self, work, pebble):
        self.certbot = NpmCertbot(work / "npm-host", pebble)

    def issue(self):
        say("NPM requests mail.example.test: certbot certonly (NPM's command line) against pebble")
        self.certbot.issue(5, NAMES)
        first = self.certbot.current(5)
        say(f"NPM holds {first.fingerprint[:16]}... in live/npm-5 (EC P-384, a new key)")
        return first

    def write_pillar(self, pillar_dir, consumers):
        write_pillar(pillar_dir, self.minion, consumers, self.certbot.live_dir, False)

    def key_kept(self, salt):
        reuse = self.certbot.renewal_conf(5).read_text().count("reuse_key = True")
        say(f"the npm state set reuse_key = True in renewal/npm-5.conf ({reuse} line)")

    def renew(self):
        say("NPM renews npm-5: certbot renew --force-renewal (NPM's command line); nobody else")
        self.certbot.renew(5)
        return self.certbot.current(5)

    def rekey(self):
        say("names edited in NPM's UI: certbot certonly for npm-5, so a NEW key")
        self.certbot.issue(5, [*NAMES, "webmail.example.test"])
        return self.certbot.current(5)

    def stop(self):
        pass


class CaddySide:
    """Caddy's storage as the source: ``--source caddy``."""

    minion = "caddy"

    def __init__(self, work, pebble):
        self.caddy = Caddy(work / "caddy-host", pebble, HOST)

    def issue(self):
        say("Caddy starts with a site for mail.example.test and obtains it from pebble")
        self.caddy.start()
        first = self.caddy.current()
        say(
            f"Caddy holds {first.fingerprint[:16]}... in {self.caddy.site_dir.name}/ of its storage"
        )
        return first

    def write_pillar(self, pillar_dir, consumers):
        source = {"kind": "caddy", "storage": str(self.caddy.storage)}
        write_pillar(pillar_dir, self.minion, consumers, None, False, **source)

    def key_kept(self, salt):
        where = ("kind=caddy", f"storage={self.caddy.storage}")
        _, renewal = salt.run("salt", "caddy", "certsync_source.renewal", HOST, *where)
        said = (renewal or {}).get("caddy", {})
        say(
            f"certsync_source.renewal: {said.get('why')} (keeps the key: "
            f"{said.get('next_renewal_keeps_key')})"
        )

    def renew(self):
        say("Caddy re-issues: its stored certificate removed, caddy reload --force; nobody else")
        self.caddy.reissue()
        return self.caddy.current()

    def rekey(self):
        say("Caddy's site directory removed and Caddy restarted, so a NEW key")
        self.caddy.new_key()
        return self.caddy.current()

    def stop(self):
        self.caddy.stop()


SIDES = {"npm": NpmSide, "caddy": CaddySide}


class MailcowConsumer:
    """The mailcow-like stack as the consumer (the embedded default), with DANE."""

    minion = "mailcow"
    #: each name of ssl/<hostname>/, and no SNI (the top-level pair)
    names = (*NAMES, "")
    dane = True

    def __init__(self, work):
        self.work = work
        self.stack = None

    def start(self):
        """Start it serving a self-signed pair; its pillar settings."""
        say(
            "starting the mailcow-like stack (postfix, dovecot, nginx; acme-mailcow created "
            "without SKIP_LETS_ENCRYPT=y), serving a self-signed pair"
        )
        snakeoil = issue(HOST, sans=[HOST], key_kind="rsa-2048")
        self.stack = MailcowStack(
            docker_client(), build_image(), self.work / "mailcow-dockerized", snakeoil, acme=True
        )
        self.stack.start()
        say(f"endpoints on 127.0.0.1: {self.stack.endpoints}")
        return stack_settings(self.stack)

    def master_address(self):
        return "127.0.0.1"

    def start_minion(self, salt):
        salt.start_minion(self.minion)

    @property
    def endpoints(self):
        return self.stack.endpoints

    def served(self, names):
        return self.stack.served_names(names)

    def stop(self):
        if self.stack:
            self.stack.remove()


class ServiceConsumer:
    """A plain host's units as the consumer: ``--consumer service``."""

    minion = "mx"
    names = (HOST,)
    dane = False
    endpoints = ENDPOINTS

    def __init__(self, work):
        self.work = work / "systemd-host"
        self.client = docker_client()
        self.host = SystemdHost(self.client, self.work)

    def start(self):
        say(
            "starting a host with systemd as PID 1 (a container): postfix, dovecot, nginx and "
            "HAProxy 2.6 as units, serving a self-signed pair"
        )
        self.host.start()
        write_pair(self.work / "old", issue(HOST, sans=[HOST]), "fullchain.pem", "privkey.pem")
        self.host.set_up_mail(self.work / "old")
        say(f"endpoints on {self.host.address}: {ENDPOINTS}")
        return mail_consumer()

    def master_address(self):
        """This host's address on Docker's bridge, which the container reaches."""
        return bridge_gateway(self.client)

    def start_minion(self, salt):
        self.host.start_minion(self.minion, salt.interface, salt.ports)

    def served(self, names):
        return {
            f"{endpoint}/{name}": fingerprint
            for name in names
            for endpoint, fingerprint in self.host.served(name).items()
        }

    def stop(self):
        self.host.remove()


CONSUMERS = {"mailcow": MailcowConsumer, "service": ServiceConsumer}


def start_zone(knot, record, dns):
    """Knot serving the zone with ``record``; the consumer's ``dane`` pillar for ``dns``
    (cloudflare: the API stand-in holding the record too; rfc2136: Knot's TSIG key)."""
    knot.start([f"_25._tcp.mail IN TLSA {record}"], ttl=TTL)
    say(f"Knot serves example.test on 127.0.0.1:{knot.port}: {TLSA_NAME} TLSA {record[:22]}...")
    if dns == "rfc2136":
        return None, knot.pillar_dane(max_wait=60)
    cloudflare = CloudflareApi(knot, auto_ttl=TTL).start()
    cloudflare.token(DEMO_TOKEN)
    usage, selector, mtype, cert = record.split()
    data = {"usage": int(usage), "selector": int(selector), "matching_type": int(mtype)}
    cloudflare.seed(TLSA_NAME, {**data, "certificate": cert}, write_through=False)
    say(f"Cloudflare's API (stand-in) at {cloudflare.base_url} holds the zone's records")
    dane = cloudflare.dane(max_wait=60)
    dane["update"]["api_token"] = DEMO_TOKEN
    return cloudflare, dane


def start_fleet(work, salt, side, consumer, knot, dns):
    """The source, the zone (with DANE), the consumer, the master and both minions."""
    first = side.issue()
    settings = consumer.start()
    cloudflare = None
    if consumer.dane:
        cloudflare, dane = start_zone(knot, f"3 1 1 {first.spki_sha256}", dns)
        settings["dane"] = dane
    # The formula's own schedule (every 30 minutes, splay 5): the bus does the work.
    side.write_pillar(work / "pillar", {consumer.minion: settings})
    salt.write_master(work / "pillar", consumer.master_address())
    say(f"starting salt-master and the minions {side.minion} and {consumer.minion}")
    salt.start_master()
    salt.start_minion(side.minion)
    consumer.start_minion(salt)
    wait_until(
        lambda: salt.pinged() >= {side.minion, consumer.minion},
        90,
        interval=1,
        what="both minions",
    )
    salt.run("salt-run", "saltutil.sync_all")
    salt.run("salt", "*", "saltutil.sync_all")
    return first, cloudflare


def show_zone(knot, records, since):
    """Print the TLSA records when they change."""
    now = knot.tlsa(TLSA_NAME)
    if now != records:
        shown = ", ".join(f"{r[:22]}..." for r in sorted(now)) or "none"
        print(f"           +{time.monotonic() - since:6.2f}s zone: {TLSA_NAME} TLSA {shown}")
    return now


def renewal_timeline(bus, consumer, knot, renewed, since):
    """Print what crosses the bus, the zone and the wire until every endpoint serves
    ``renewed`` for every name the consumer serves (and, with DANE, the zone holds
    only its record); times from ``since`` (the source's renewal)."""
    seen, done = len(bus.events), set()
    records = knot.tlsa(TLSA_NAME) if consumer.dane else set()
    wanted = {f"3 1 1 {renewed.spki_sha256}"} if consumer.dane else set()
    for _ in range(480):
        seen = show_timeline(bus, seen, since)
        now = consumer.served(consumer.names)
        for endpoint in consumer.endpoints:
            probes = [fp for key, fp in now.items() if key.split("/")[0] == endpoint]
            if endpoint not in done and set(probes) == {renewed.fingerprint}:
                done.add(endpoint)
                stamp = time.monotonic() - since
                print(f"           +{stamp:6.2f}s wire: {endpoint} serves it for every name")
        if consumer.dane:  # after the wire: a record goes after its pair
            records = show_zone(knot, records, since)
        if set(now.values()) == {renewed.fingerprint} and records == wanted:
            show_timeline(bus, seen, since)
            return len(consumer.endpoints)
        time.sleep(0.25)
    sys.exit("demo: the renewal was not served, or its TLSA record not alone, within 120 s")


def renewals(bus, side, consumer, knot, first, cloudflare):
    """A renewal, then a new key, each with its timeline until it is served."""
    since = time.monotonic()
    renewed = side.renew()
    say(f"{side.minion} done after {time.monotonic() - since:.1f}s: {renewed.fingerprint[:16]}...")
    if consumer.dane:
        same = renewed.spki_sha256 == first.spki_sha256
        say(f"key kept: {same} (the TLSA 3 1 1 record still matches; no DNS change)")
    count = renewal_timeline(bus, consumer, knot, renewed, since)
    say(f"the renewal is served on all {count} endpoints after {time.monotonic() - since:.1f}s")

    since = time.monotonic()
    rekeyed = side.rekey()
    took = time.monotonic() - since
    say(f"{side.minion} done after {took:.1f}s: new key {rekeyed.spki_sha256[:16]}...")
    count = renewal_timeline(bus, consumer, knot, rekeyed, since)
    if consumer.dane:
        through = "Cloudflare's API" if cloudflare else "RFC 2136"
        say(
            f"rolled over through {through}: served on all {count} endpoints, only the new "
            f"TLSA record left, after {time.monotonic() - since:.1f}s (the zone's TTL is "
            f"{TTL} s)"
        )
    else:
        say(f"the new key is served on all {count} endpoints after {time.monotonic() - since:.1f}s")
    if cloudflare:
        calls = [f"{method} {path.split('/')[-1]}" for method, path, _ in cloudflare.requests]
        say(f"Cloudflare API calls: {len(calls)} ({', '.join(calls)})")


def main(work, source, dns, consumer_kind):
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pebble = Pebble(work / "pebble", TestCA("demo pebble listener")).start()
    side = SIDES[source](work, pebble)
    consumer = CONSUMERS[consumer_kind](work)
    knot = UpdatableDNS(work / "knot")
    salt, cloudflare = SaltDaemons(work), None
    try:
        first, cloudflare = start_fleet(work, salt, side, consumer, knot, dns)
        bus = BusRecorder(salt.opts).start()
        mx = consumer.minion
        say(f"salt {side.minion} state.apply certsync; salt {mx} state.apply certsync")
        salt.run("salt", side.minion, "state.apply", "certsync")
        salt.run("salt", mx, "state.apply", "certsync")
        # the formula wrote the certsync_watch engine into the source minion's
        # configuration; a salt-minion service is restarted by the formula itself
        say(f"{side.minion} restarted: its certsync_watch engine starts (inotify)")
        salt.restart_minion(side.minion)
        wait_until(
            lambda: set(consumer.served(consumer.names).values()) == {first.fingerprint},
            120,
            interval=1,
            what="the first certificate to be served",
        )
        say(f"every endpoint serves {first.fingerprint[:16]}... (the {source} certificate)")
        if consumer.dane:  # certsync asks the source to keep the key for DANE alone
            side.key_kept(salt)

        renewals(bus, side, consumer, knot, first, cloudflare)
        code, status = salt.run("salt-run", "certsync.status")
        say(f"salt-run certsync.status (exit code {code}):")
        print(json.dumps(status, indent=2))
        bus.stop()
    finally:
        salt.stop()
        consumer.stop()
        side.stop()
        if cloudflare:
            cloudflare.stop()
        knot.stop()
        pebble.stop()
    say(f"done; logs under {work}")


if __name__ == "__main__":
    os.umask(0o022)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("work", nargs="?", default=REPO / ".cache" / "demo", type=pathlib.Path)
    parser.add_argument("--source", choices=sorted(SIDES), default="npm", help="the source kind")
    parser.add_argument(
        "--dns",
        choices=["cloudflare", "rfc2136"],
        default="cloudflare",
        help="how the TLSA records are published (dane:update:provider)",
    )
    parser.add_argument(
        "--consumer",
        choices=sorted(CONSUMERS),
        default="mailcow",
        help="the consumer kind: the mailcow-like stack, or units on a systemd host",
    )
    args = parser.parse_args()
    main(args.work.resolve(), args.source, args.dns, args.consumer)
