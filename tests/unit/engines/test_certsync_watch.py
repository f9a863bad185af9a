"""The certsync_watch engine: the beacon run on inotify's word, on a real
certbot-shaped tree in a temporary directory (symlink swaps, a replaced
lineage directory), and its poll where inotify is not there."""

import pathlib
import shutil
import threading
import time

import pytest

from harness.loader import certsync_beacon, certsync_watch, deploy_functions
from harness.pki import write_npm_tree

HOST = "mail.example.test"
WAIT = 10  # seconds any one announcement may take here (it takes milliseconds)


@pytest.fixture
def configure_loader_modules(loader_modules, tmp_path):
    opts = {"cachedir": str(tmp_path / "cache"), "id": "npm"}
    return {
        **loader_modules,
        certsync_beacon: {"__salt__": deploy_functions(), "__opts__": opts, "__context__": {}},
        certsync_watch: {"__salt__": deploy_functions(), "__opts__": opts},
    }


class Engine:
    """The engine's loop in a thread; what it fires is kept, not sent."""

    def __init__(self, monkeypatch, settings):
        self.fired, self.stop, self.settings = [], threading.Event(), settings
        self.arrived = threading.Condition()
        monkeypatch.setattr(certsync_watch, "_fire", self._keep)
        monkeypatch.setattr(
            certsync_watch,
            "_beacon_functions",
            lambda: {
                "certsync.validate": certsync_beacon.validate,
                "certsync.beacon": certsync_beacon.beacon,
            },
        )
        self.thread = threading.Thread(
            target=certsync_watch.watch_source, args=(settings, self.stop), daemon=True
        )

    def _keep(self, events):
        with self.arrived:
            self.fired.extend(events)
            self.arrived.notify_all()

    def wait_for(self, count):
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.fired) >= count, WAIT)
        return self.fired

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        live_dir = pathlib.Path(self.settings["live_dir"])
        for _ in range(int(WAIT / 0.1)):  # a change wakes the loop to see the stop
            if not self.thread.is_alive():
                break
            if live_dir.is_dir():
                (live_dir / "poke").touch()
            self.thread.join(0.1)
        assert not self.thread.is_alive()


@pytest.fixture
def live(tmp_path, good):
    live_dir = tmp_path / "letsencrypt" / "live"
    write_npm_tree(live_dir, 5, good)
    return live_dir


def _fingerprints(events):
    return [e["data"]["fingerprint"] for e in events]


def test_the_directories_watched_are_the_links_their_targets_and_parents(live):
    dirs = certsync_watch.watch_dirs([f"{live}/npm-5/fullchain.pem"])
    base = live.parent
    assert dirs == sorted(
        str(d) for d in (live, live / "npm-5", base / "archive", base / "archive" / "npm-5")
    )
    assert certsync_watch.watch_dirs([str(base / "no" / "where" / "fullchain.pem")]) == [str(base)]


def test_a_renewal_is_fired_as_a_beacons_event_the_moment_the_links_swap(
    monkeypatch, live, ca, good
):
    settings = {"hostname": HOST, "live_dir": str(live), "rescan": WAIT * 3}
    with Engine(monkeypatch, settings) as engine:
        (first,) = engine.wait_for(1)
        assert first["tag"] == "salt/beacon/npm/certsync/renewed"
        assert first["beacon_name"] == "certsync"
        assert (first["data"]["id"], first["data"]["fingerprint"]) == ("npm", good.fingerprint)
        renewed = ca.leaf(HOST, key=good.key)
        began = time.monotonic()
        write_npm_tree(live, 5, renewed, version=2)  # certbot's archive file, links swapped
        events = engine.wait_for(2)
        took = time.monotonic() - began
    # long before the rescan (the loop's only timeout): inotify woke it
    assert took < WAIT
    assert _fingerprints(events) == [good.fingerprint, renewed.fingerprint]


def test_a_replaced_lineage_directory_is_watched_again(monkeypatch, live, ca, good):
    # no poll to fall back on within the test: every announcement is inotify's
    settings = {"hostname": HOST, "live_dir": str(live), "rescan": WAIT * 3, "interval": WAIT * 3}
    with Engine(monkeypatch, settings) as engine:
        engine.wait_for(1)
        shutil.rmtree(live / "npm-5")  # NPM deleted the certificate: an empty live/
        shutil.rmtree(live.parent / "archive" / "npm-5")
        time.sleep(0.3)  # the engine reads a source without a lineage: no event
        reissued = ca.leaf(HOST, sans=[HOST, "autodiscover.example.test"])
        write_npm_tree(live, 5, reissued)  # and issued it again
        engine.wait_for(2)
        renewed = ca.leaf(HOST, key=reissued.key)
        write_npm_tree(live, 5, renewed, version=2)  # renewed in the new directory
        events = engine.wait_for(3)
    assert _fingerprints(events) == [good.fingerprint, reissued.fingerprint, renewed.fingerprint]


def test_without_inotify_the_engine_polls(monkeypatch, live, ca, good, caplog):
    monkeypatch.setattr(certsync_watch, "inotify_simple", None)
    settings = {"hostname": HOST, "live_dir": str(live), "interval": 0.1}
    with Engine(monkeypatch, settings) as engine:
        engine.wait_for(1)
        renewed = ca.leaf(HOST, key=good.key)
        write_npm_tree(live, 5, renewed, version=2)
        events = engine.wait_for(2)
    assert _fingerprints(events) == [good.fingerprint, renewed.fingerprint]
    assert "inotify_simple is not installed; polling the source" in caplog.text


def test_engine_and_beacon_announce_a_renewal_once(monkeypatch, live, good):
    settings = {"hostname": HOST, "live_dir": str(live), "rescan": WAIT * 3}
    with Engine(monkeypatch, settings) as engine:
        engine.wait_for(1)
    certsync_beacon.__context__.clear()  # the minion's own beacon, in its own process
    assert certsync_beacon.beacon([{"hostname": HOST}, {"live_dir": str(live)}]) == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"hostname": HOST, "live_dir": "/l", "settle": 0}, "settle must be a number"),
        ({"hostname": HOST, "live_dir": "/l", "rescan": "1"}, "rescan must be a number"),
        ({"hostname": HOST, "live_dir": "/l", "interval": True}, "interval must be a number"),
    ],
)
def test_bad_engine_settings_are_refused_by_name(settings, message):
    with pytest.raises(ValueError, match=message):
        certsync_watch.watch_source(settings, threading.Event())


def test_a_bad_beacon_setting_stops_the_engine_with_the_reason(monkeypatch, caplog):
    settings = {"hostname": "x/../b", "live_dir": "/l"}
    with Engine(monkeypatch, settings) as engine:
        engine.thread.join(WAIT)
    assert engine.fired == []
    assert "'x/../b' is not a DNS host name; not watching" in caplog.text
