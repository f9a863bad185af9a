"""
The whole certsync pipeline on this host, with its embedded default:

- a salt-master with certsync's reactor and runner (file_roots: this repo's salt/);
- the minion ``npm`` holding NPM's letsencrypt tree (live/npm-5 -> archive/);
- the minion ``mailcow`` with a mailcow-like stack in Docker (real postfix,
  dovecot and nginx serving TLS on loopback ports);
- one ``state.apply certsync`` per role, then a renewal on the NPM side,
  with the timeline of what crosses the Salt bus until every endpoint serves
  the new certificate, then ``salt-run certsync.status``.

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
sys.path.insert(0, str(REPO / "tests"))

from support.daemons import SaltDaemons  # noqa: E402
from support.fleet import (  # noqa: E402
    HOST,
    BusRecorder,
    renew,
    stack_settings,
    wait_until,
    write_pillar,
)
from support.mailcow_stack import MailcowStack, build_image, docker_client  # noqa: E402
from support.pki import TestCA, issue, write_npm_tree  # noqa: E402

START = time.monotonic()


def say(text):
    print(f"[{time.monotonic() - START:7.2f}s] {text}", flush=True)


def _job_line(tag, data):
    if tag.endswith("/new"):
        return f"state.apply certsync on {', '.join(data.get('minions', []))}"
    line = f"{data.get('id')} finished state.apply (success: {data.get('success')})"
    returned = data.get("return")
    if isinstance(returned, dict):
        failed = [s["comment"].splitlines()[0] for s in returned.values() if s["result"] is False]
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
            and data.get("fun") == "state.apply"
            and (tag.endswith("/new") or data.get("id"))
        ):
            print(f"           +{stamp:6.2f}s bus: {_job_line(tag, data)}")
    return len(bus.events)


def start_fleet(work, salt, live_dir, ca):
    """The NPM tree, the mailcow-like stack, the master and both minions."""
    say("NPM holds a certificate for mail.example.test in live/npm-5 (EC P-384)")
    first = ca.leaf(HOST, sans=[HOST, "autodiscover.example.test"], key_kind="ec-p384")
    write_npm_tree(live_dir, 5, first)
    say("starting the mailcow-like stack (postfix, dovecot, nginx), serving a self-signed pair")
    snakeoil = issue(HOST, sans=[HOST], key_kind="rsa-2048")
    stack = MailcowStack(docker_client(), build_image(), work / "mailcow-dockerized", snakeoil)
    stack.start()
    say(f"endpoints on 127.0.0.1: {stack.endpoints}")
    # The formula's own schedule (every 30 minutes, splay 5): the bus does the work.
    write_pillar(work / "pillar", "npm", {"mailcow": stack_settings(stack)}, live_dir, False)
    salt.write_master(work / "pillar", {"npm": ["mailcow"]})
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


def renewal_timeline(bus, stack, renewed, since):
    """Print what crosses the bus and the wire until every endpoint serves ``renewed``."""
    seen, served = len(bus.events), {}
    for _ in range(240):
        seen = show_timeline(bus, seen, since)
        now = stack.served()
        for name, fingerprint in sorted(now.items()):
            if fingerprint == renewed.fingerprint and served.get(name) != fingerprint:
                print(f"           +{time.monotonic() - since:6.2f}s wire: {name} serves it")
        served = now
        if set(now.values()) == {renewed.fingerprint}:
            show_timeline(bus, seen, since)
            return len(now)
        time.sleep(0.25)
    sys.exit("demo: the renewal was not served within 60 s")


def main(work):
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ca = TestCA("demo")
    live_dir = work / "npm-host" / "letsencrypt" / "live"
    salt, stack = SaltDaemons(work), None
    try:
        stack, first = start_fleet(work, salt, live_dir, ca)
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

        say("NPM renews npm-5 (same key, new certificate); nobody calls anything")
        renewed = ca.leaf(HOST, sans=[HOST, "autodiscover.example.test"], key=first.key)
        since = time.monotonic()
        renew(live_dir, renewed, 2)
        count = renewal_timeline(bus, stack, renewed, since)
        say(f"the renewal is served on all {count} endpoints after {time.monotonic() - since:.1f}s")
        code, status = salt.run("salt-run", "certsync.status")
        say(f"salt-run certsync.status (exit code {code}):")
        print(json.dumps(status, indent=2))
        bus.stop()
    finally:
        salt.stop()
        if stack:
            stack.remove()
    say(f"done; logs under {work}")


if __name__ == "__main__":
    os.umask(0o022)
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else REPO / ".cache" / "demo").resolve())
