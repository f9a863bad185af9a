"""
The second source kind over the Salt bus, end to end, with real daemons: Caddy
(Debian's 2.6, against pebble) on the source minion, the pillar's
``certsync:source`` saying ``kind: caddy`` and its storage, and nothing else
different from NPM's fleet: the beacon sees Caddy write a new certificate, the
reactor publishes it sealed to the consumer, the consumer serves it.
"""

import pathlib
import time

import pytest
from saltfactories.utils import random_string

from harness.caddy import Caddy
from harness.fleet import (
    HOST,
    MINION_CONFIG,
    BusRecorder,
    master_config,
    stack_settings,
    wait_until,
    write_pillar,
)
from harness.mailcow_stack import MailcowStack
from harness.pki import issue

pytestmark = pytest.mark.one_release  # the kinds' subject does not change with the release
CONVERGE_TIMEOUT = 120


@pytest.fixture(scope="module")
def fleet(salt_factories, tmp_path_factory, docker_engine, mailcow_image, pebble):
    root = pathlib.Path(tmp_path_factory.mktemp("caddy-fleet"))
    caddy = Caddy(root / "caddy", pebble, HOST)
    caddy.start()
    stack = MailcowStack(
        docker_engine, mailcow_image, root / "mailcow", issue(HOST, sans=[HOST]), acme=True
    )
    stack.start()
    ids = {role: random_string(f"{role}-") for role in ("caddy", "mailcow")}
    source = {"kind": "caddy", "storage": str(caddy.storage)}
    write_pillar(
        root / "pillar", ids["caddy"], {ids["mailcow"]: stack_settings(stack)}, None, **source
    )
    master = salt_factories.salt_master_daemon(
        random_string("master-"), overrides=master_config(root / "pillar")
    )
    minions = [
        master.salt_minion_daemon(minion_id, overrides=MINION_CONFIG) for minion_id in ids.values()
    ]
    with master.started():
        bus = BusRecorder(master.config).start()
        for minion in minions:
            minion.start()
        master.salt_run_cli().run("saltutil.sync_all")
        cli = master.salt_cli(timeout=120)
        for minion_id in ids.values():
            assert cli.run("saltutil.sync_all", minion_tgt=minion_id).returncode == 0
        try:
            yield {"caddy": caddy, "stack": stack, "ids": ids, "master": master, "bus": bus}
        finally:
            bus.stop()
            for minion in minions:
                minion.terminate()
            stack.remove()
            caddy.stop()


def _wait_served(fleet, fingerprint):
    wait_until(
        lambda: set(fleet["stack"].served().values()) == {fingerprint},
        CONVERGE_TIMEOUT,
        interval=1,
        what=f"every endpoint to serve {fingerprint[:16]}",
    )


def test_one_state_apply_per_role_serves_caddys_certificate(fleet):
    cli = fleet["master"].salt_cli(timeout=120)
    source, consumer = fleet["ids"]["caddy"], fleet["ids"]["mailcow"]
    ret = cli.run("state.apply", "certsync", minion_tgt=source)
    published = ret.data[next(k for k in ret.data if "certsync-published" in k)]
    assert "No recipient key in the mine for " + consumer in published["comment"]
    beacons = cli.run("beacons.list", "return_yaml=False", minion_tgt=source).data
    assert {"kind": "caddy"} in beacons["certsync"], beacons
    cli.run("state.apply", "certsync", minion_tgt=consumer)
    _wait_served(fleet, fleet["caddy"].current().fingerprint)


def test_caddys_reissue_is_served_with_no_manual_call_and_keeps_the_key(fleet):
    """Caddy 2.6 obtains a new certificate for the stored key: beacon, mine, deploy."""
    before = fleet["caddy"].current()
    fleet["caddy"].reissue()
    start = time.monotonic()  # Caddy has stored it
    renewed = fleet["caddy"].current()
    assert renewed.fingerprint != before.fingerprint
    assert renewed.spki_sha256 == before.spki_sha256
    _wait_served(fleet, renewed.fingerprint)
    print(f"caddy re-issue stored -> served on every endpoint: {time.monotonic() - start:.1f}s")
    assert set(fleet["stack"].served_spki().values()) == {before.spki_sha256}
    renewals = [e for e in fleet["bus"].events if e["tag"].endswith("/certsync/renewed")]
    assert renewals[-1]["data"]["fingerprint"] == renewed.fingerprint
    assert renewals[-1]["data"]["source"] == str(fleet["caddy"].site_dir)


def test_a_new_caddy_site_with_a_new_key_goes_through(fleet):
    """The site directory removed and Caddy restarted: for a moment there is no pair
    (the beacon reads again), then a new one with a new key."""
    before = fleet["caddy"].current()
    seen = len(fleet["bus"].events)
    fleet["caddy"].new_key()
    renewed = fleet["caddy"].current()
    assert renewed.spki_sha256 != before.spki_sha256
    _wait_served(fleet, renewed.fingerprint)
    tags = [e["tag"].rsplit("/", 1)[-1] for e in fleet["bus"].events[seen:]]
    beacon = [tag for tag in tags if tag in ("renewed", "error")]
    assert "renewed" in beacon
    print(f"beacon events while the site was replaced: {beacon}")


def test_status_runner_reads_the_caddy_source(fleet):
    status = fleet["master"].salt_run_cli(timeout=120).run("certsync.status")
    assert status.returncode == 0, status.data
    source = status.data["sources"][fleet["ids"]["caddy"]]
    assert source["result"] is True, source
    assert source["renewal"]["caddy_version"] == "2.6.2"
    assert source["renewal"]["next_renewal_keeps_key"] is True
    row = status.data["consumers"][fleet["ids"]["mailcow"]]
    assert row["agree"] is True
    assert row["deployed_fingerprint"] == fleet["caddy"].current().fingerprint
