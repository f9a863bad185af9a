"""
The certsync_watch engine with real daemons and the real certbot: the formula
writes the engine into the source minion's configuration, the minion starts
with it, and each of NPM's renewals (certbot renew --force-renewal) is on the
master's bus as ``salt/beacon/<id>/certsync/renewed``, once, with the
beacon's own poll set to 10 minutes so that only the engine can have seen it.
The engine publishes the renewal itself: the master's runner sends no
publication, and the consumer (files only) deploys it.
"""

import datetime
import pathlib
import time

import pytest
import yaml
from saltfactories.utils import random_string

from harness.acme import NpmCertbot
from harness.fleet import (
    MINION_CONFIG,
    BusRecorder,
    deployed_fingerprint,
    file_only_settings,
    master_config,
    wait_until,
    write_pillar,
)
from harness.mailcow_stack import HOST, NAMES
from harness.pki import issue, write_pair

# Docker-heavy (the mailcow look-alike): run on one Salt release, as scripts/test.sh says
pytestmark = pytest.mark.one_release

NPM_ID = 5
BEACON_INTERVAL = 600  # longer than the test: the beacon's poll announces nothing here


def _renewed(bus, source):
    tag = f"salt/beacon/{source}/certsync/renewed"
    return [e for e in bus.events if e["tag"] == tag]


def _stamp(event):
    when = datetime.datetime.fromisoformat(event["data"]["_stamp"])
    return when.replace(tzinfo=datetime.timezone.utc).timestamp()


@pytest.fixture(scope="module")
def source(salt_factories, tmp_path_factory, pebble):
    root = pathlib.Path(tmp_path_factory.mktemp("watch"))
    certbot = NpmCertbot(root / "npm", pebble)
    certbot.issue(NPM_ID, NAMES)
    source_id, consumer_id = random_string("npm-"), random_string("mailcow-")
    ssl_dir = root / "mailcow" / "data" / "assets" / "ssl"
    write_pair(ssl_dir, issue(HOST, sans=[HOST], key_kind="ec-p256"))  # mailcow's own
    (root / "mailcow" / "mailcow.conf").write_text("SKIP_LETS_ENCRYPT=y\n")
    write_pillar(
        root / "pillar",
        source_id,
        {consumer_id: file_only_settings(root / "mailcow")},
        certbot.live_dir,
        beacon_interval=BEACON_INTERVAL,
        reuse_key=False,
    )
    master = salt_factories.salt_master_daemon(
        random_string("master-"), overrides=master_config(root / "pillar")
    )
    minion = master.salt_minion_daemon(source_id, overrides=MINION_CONFIG)
    consumer = master.salt_minion_daemon(consumer_id, overrides=MINION_CONFIG)
    with master.started(), consumer.started():
        bus = BusRecorder(master.config).start()
        cli = master.salt_cli(timeout=120)
        try:
            with minion.started():
                for minion_id in (source_id, consumer_id):
                    assert cli.run("saltutil.sync_all", minion_tgt=minion_id).returncode == 0
                # its first deploy may fail: the source publishes for its new key meanwhile
                cli.run("state.apply", "certsync", minion_tgt=consumer_id)
                applied = cli.run("state.apply", "certsync.source", minion_tgt=source_id)
                watch = applied.data[next(k for k in applied.data if "certsync-watch_" in k)]
                assert watch["result"] is True, watch
            # an engine starts with the minion: the formula restarts a salt-minion service
            with minion.started():
                wait_until(
                    lambda: deployed_fingerprint(ssl_dir) == certbot.current(NPM_ID).fingerprint,
                    120,
                    interval=0.5,
                    what="the consumer to deploy the first certificate",
                )
                yield certbot, bus, source_id, pathlib.Path(minion.config_dir), ssl_dir
        finally:
            bus.stop()


def test_the_formula_writes_the_engine_into_the_minions_configuration(source):
    certbot, _, _, config_dir, _ = source
    conf = yaml.safe_load((config_dir / "minion.d" / "certsync-watch.conf").read_text())
    assert conf == {
        "engines": [
            {
                "certsync_watch": {
                    "hostname": "mail.example.test",
                    "kind": "npm",
                    "live_dir": str(certbot.live_dir),
                    "dir": f"npm-{NPM_ID}",
                    "publish": True,
                    "keep_key": False,
                }
            }
        ]
    }


def _publications_sent(bus, mark):
    """The master's jobs that had a source publish (the runner's way), since ``mark``."""
    return [
        e
        for e in bus.events[mark:]
        if e["tag"].startswith("salt/job/")
        and e["tag"].endswith("/new")
        and e["data"].get("fun") == "certsync_mine.publish_source"
    ]


def test_each_renewal_is_announced_once_and_published_by_the_engine(source):
    certbot, bus, source_id, _, ssl_dir = source
    renewed = []
    for number in range(2):
        mark = len(bus.events)
        certbot.renew(NPM_ID)
        returned = datetime.datetime.now(datetime.timezone.utc).timestamp()
        renewed.append(certbot.current(NPM_ID).fingerprint)
        event = wait_until(
            lambda f=renewed[-1]: next(
                (e for e in _renewed(bus, source_id) if e["data"]["fingerprint"] == f), None
            ),
            60,
            interval=0.1,
            what=f"renewal {number + 1} on the bus",
        )
        # a figure, not an assertion: benchmarks/bench_bus.py measures it
        print(f"renewal {number + 1}: on the bus {_stamp(event) - returned:+.3f} s after certbot")
        assert event["data"]["id"] == source_id
        assert set(event["data"]) >= {"hostname", "fingerprint", "not_after", "source"}
        assert event["data"]["published"] is True
        wait_until(
            lambda f=renewed[-1]: deployed_fingerprint(ssl_dir) == f,
            60,
            interval=0.2,
            what=f"renewal {number + 1} deployed on the consumer",
        )
        assert _publications_sent(bus, mark) == []
    # the first renewal's events had the second renewal's time to come twice; the
    # certificate the minion found at its start is announced once too, whenever
    time.sleep(2)
    announced = [e["data"]["fingerprint"] for e in _renewed(bus, source_id)]
    assert [announced.count(f) for f in renewed] == [1, 1], announced
    assert len(announced) - len(set(announced)) == 0, announced
