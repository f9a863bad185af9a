"""
Two certificates to one mailcow over the Salt bus (routes), with real daemons: a
master with the reactor, the NPM minion whose real certbot holds two lineages
(``npm-5`` for mailcow's hostname, ``npm-6`` for a second mail domain), and the
mailcow minion serving real TLS from the look-alike's containers. The hostname's
certificate is the pillar's single-certificate keys (the route ``default``,
pillar as before routes); the second is ``certsync:certificates:b``, served from
mailcow's per-name dir ``ssl/mail.b.example.test/`` by SNI.
"""

import json
import pathlib

import pytest
from saltfactories.utils import random_string

from harness.acme import NpmCertbot
from harness.fleet import (
    MINION_CONFIG,
    BusRecorder,
    certsync_returns,
    deployed_fingerprint,
    master_config,
    stack_settings,
    wait_until,
    write_pillar,
)
from harness.mailcow_stack import HOST, NAMES, MailcowStack
from harness.pki import issue

# Docker-heavy (the mailcow look-alike): run on one Salt release, as scripts/test.sh says
pytestmark = pytest.mark.one_release

CONVERGE_TIMEOUT = 180
#: The second mail domain's host name and its NPM lineage.
B_HOST = "mail.b.example.test"
B_ID = 6
MAIL = ["smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "sieve"]


@pytest.fixture(scope="module")
def fleet(salt_factories, tmp_path_factory, docker_engine, mailcow_image, ca, pebble):
    root = pathlib.Path(tmp_path_factory.mktemp("routes"))
    certbot = NpmCertbot(root / "npm", pebble)
    certbot.issue(5, list(NAMES))
    certbot.issue(B_ID, [B_HOST])
    snakeoil = issue(HOST, sans=[HOST], key_kind="rsa-2048")
    stack = MailcowStack(docker_engine, mailcow_image, root / "mailcow", snakeoil)
    stack.start()
    ids = {role: random_string(f"{role}-") for role in ("npm", "mailcow")}
    pillar_dir = root / "pillar"
    # the formula's own schedule (30 min): the test's state.apply calls never meet a
    # scheduled run (Salt refuses a second state.apply while one runs)
    write_pillar(
        pillar_dir,
        ids["npm"],
        {ids["mailcow"]: stack_settings(stack)},
        certbot.live_dir,
        schedule=False,
    )
    pillar = json.loads((pillar_dir / "certsync.sls").read_text())
    pillar["certsync"]["certificates"] = {
        "b": {
            "hostname": B_HOST,
            "source": {"dir": f"npm-{B_ID}"},
            "consumers": {ids["mailcow"]: {}},
        }
    }
    (pillar_dir / "certsync.sls").write_text(json.dumps(pillar))
    master = salt_factories.salt_master_daemon(
        random_string("master-"), overrides=master_config(pillar_dir)
    )
    minions = {
        role: master.salt_minion_daemon(minion_id, overrides=MINION_CONFIG)
        for role, minion_id in ids.items()
    }

    def salt(minion, *args):
        return master.salt_cli(timeout=180).run(*args, minion_tgt=minion)

    with master.started():
        bus = BusRecorder(master.config).start()
        for minion in minions.values():
            minion.start()
        master.salt_run_cli().run("saltutil.sync_all")
        for minion_id in ids.values():
            assert salt(minion_id, "saltutil.sync_all").returncode == 0
        try:
            yield {
                "ids": ids,
                "certbot": certbot,
                "stack": stack,
                "salt": salt,
                "bus": bus,
                "pillar": pillar_dir / "certsync.sls",
                "master": master,
            }
        finally:
            bus.stop()
            for minion in minions.values():
                minion.terminate()
            stack.remove()


def _served(stack, name):
    """What each mail endpoint serves for the SNI ``name``: {endpoint: fingerprint}."""
    found = stack.served_names([name], MAIL)
    return {key.split("/")[0]: fingerprint for key, fingerprint in found.items()}


def _wait_served(fleet, name, fingerprint):
    stack = fleet["stack"]
    try:
        wait_until(
            lambda: set(_served(stack, name).values()) == {fingerprint},
            CONVERGE_TIMEOUT,
            interval=1,
            what=f"{name} to be served {fingerprint[:16]} on every mail endpoint",
        )
    except AssertionError as exc:
        served = _served(stack, name)
        deploys = certsync_returns(fleet["bus"].events)
        raise AssertionError(f"{exc}\nserved: {served}\ndeploys:\n{deploys}") from None


def test_each_route_is_published_deployed_and_served_by_its_name(fleet):
    certbot, stack, salt = fleet["certbot"], fleet["stack"], fleet["salt"]
    source, consumer = fleet["ids"]["npm"], fleet["ids"]["mailcow"]
    routes = salt(consumer, "certsync_settings.routes").data
    assert routes["consumer"]["b"]["dest"] == str(stack.ssl_dir / B_HOST)
    assert routes["consumer"]["default"]["dest"] == str(stack.ssl_dir)
    salt(source, "state.apply", "certsync")  # no recipient key yet: the consumer's comes next
    salt(consumer, "state.apply", "certsync")
    a, b = certbot.current(5), certbot.current(B_ID)
    _wait_served(fleet, HOST, a.fingerprint)
    _wait_served(fleet, B_HOST, b.fingerprint)
    assert set(_served(stack, "").values()) == {a.fingerprint}  # no SNI: the hostname's
    assert (stack.ssl_dir / B_HOST / "domains").read_text().split() == [B_HOST]
    assert deployed_fingerprint(stack.ssl_dir / B_HOST) == b.fingerprint
    # each route's publication is its own event and its own mine entry
    published = [e for e in fleet["bus"].events if e["tag"] == "certsync/published"]
    assert {e["data"]["data"].get("route") for e in published} >= {None, "b"}
    again = salt(consumer, "state.apply", "certsync")
    deployed = {k: v for k, v in again.data.items() if "certsync-deployed" in k}
    assert sorted(v["__id__"] for v in deployed.values()) == [
        "certsync-deployed",
        "certsync-deployed-b",
    ]
    assert all(v["result"] is True and v["changes"] == {} for v in deployed.values()), deployed
    # the consumer's alerts look at each route: served, and what its source published
    report = salt(consumer, "certsync_monitor.check").data
    assert report["hostname"] == HOST
    assert report["routes"]["b"]["hostname"] == B_HOST
    assert report["routes"]["b"]["source_fingerprint"] == b.fingerprint
    active = {name for name, state in report["conditions"].items() if state["active"]}
    assert active == set(), report["conditions"]


def test_a_renewal_of_one_route_moves_that_route_alone(fleet):
    certbot, stack = fleet["certbot"], fleet["stack"]
    a = certbot.current(5)
    started = stack.started_at()
    certbot.renew(B_ID)
    b = certbot.current(B_ID)
    _wait_served(fleet, B_HOST, b.fingerprint)
    # the route's dir is in every service's SNI set since its first deploy: a reload
    # (postfix's with postmap -F, its map being a copy of the files) takes the renewal
    assert stack.started_at() == started
    assert set(_served(stack, HOST).values()) == {a.fingerprint}
    assert set(_served(stack, "").values()) == {a.fingerprint}
    # the fleet's status: a row per route, each against its own source and mine entry
    status = fleet["master"].salt_run_cli(timeout=180).run("certsync.status").data
    consumer = fleet["ids"]["mailcow"]
    assert status["consumers"][f"{consumer}/b"]["deployed_fingerprint"] == b.fingerprint
    assert status["consumers"][consumer]["deployed_fingerprint"] == a.fingerprint
    assert status["result"] is True, status


def test_two_routes_that_would_write_one_place_are_refused_by_name(fleet):
    """A route for mailcow's own hostname goes to the top-level pair, the default
    route's place: the check names both, and nothing is deployed."""
    salt, consumer = fleet["salt"], fleet["ids"]["mailcow"]
    pillar_file = fleet["pillar"]
    before = pillar_file.read_text()
    pillar = json.loads(before)
    pillar["certsync"]["certificates"]["c"] = {"hostname": HOST, "consumers": {consumer: {}}}
    pillar_file.write_text(json.dumps(pillar))
    try:
        salt(consumer, "saltutil.refresh_pillar", "wait=True")
        checked = salt(consumer, "certsync_settings.check").data
        assert checked["valid"] is False
        assert f"routes default and c would both write {fleet['stack'].ssl_dir}" in "\n".join(
            checked["problems"]
        ), checked
    finally:
        pillar_file.write_text(before)
        salt(consumer, "saltutil.refresh_pillar", "wait=True")
