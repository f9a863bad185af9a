"""The certsync_watch engine: the beacon run on inotify's word, on a real
certbot-shaped tree in a temporary directory (symlink swaps, a replaced
lineage directory), and its poll where inotify is not there."""

import pathlib
import shutil
import threading
import time

import pytest
from salt.exceptions import CommandExecutionError, SaltClientError, SaltReqTimeoutError

from harness.loader import certsync_beacon, certsync_watch, deploy_functions, monitor_mod
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
        monitor_mod: {"__opts__": opts},
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
                "certsync.routes": certsync_beacon.routes,
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
        ({"hostname": HOST, "live_dir": "/l", "rescan": float("inf")}, "rescan must be a number"),
        ({"hostname": HOST, "live_dir": "/l", "rescan": float("nan")}, "rescan must be a number"),
        ({"hostname": HOST, "live_dir": "/l", "rescan": 10**9}, "at most 86400, not '1000000000'"),
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


class Publisher:
    """The pillar the master compiles now (each call takes the next) and
    ``certsync_mine.publish_source`` as the engine sees them; the publications made."""

    def __init__(self, *pillars, error=None):
        self.pillars, self.error, self.calls = list(pillars), error, []

    def pillar(self):
        if isinstance(self.pillars[0], Exception):
            raise self.pillars[0]
        return self.pillars.pop(0) if len(self.pillars) > 1 else self.pillars[0]

    def install(self, monkeypatch):
        """The engine's Publisher asks this one (not a master)."""
        functions = {"certsync_mine.publish_source": self.publish_source}
        monkeypatch.setattr(
            certsync_watch.Publisher,
            "connect",
            lambda engine: setattr(engine, "functions", functions),
        )
        monkeypatch.setattr(certsync_watch.Publisher, "fresh_pillar", lambda engine: self.pillar())

    def publish_source(self, hostname, consumers, **kwargs):
        self.calls.append((hostname, consumers, kwargs))
        if self.error:
            raise self.error
        return {"fingerprint": "f" * 64, "consumers": consumers, "missing_recipient_key": []}


def _pillar(source, *consumers):
    return {"certsync": {"source": {"minion": source}, "consumers": dict.fromkeys(consumers)}}


def test_the_engine_publishes_for_the_consumers_the_pillar_names_at_each_renewal(
    monkeypatch, live, ca, good
):
    # the pillar changes between the renewals: a consumer taken out gets nothing more
    publisher = Publisher(_pillar("npm", "mailcow", "spare", "npm"), _pillar("npm", "spare"))
    publisher.install(monkeypatch)
    settings = {"hostname": HOST, "live_dir": str(live), "rescan": WAIT * 3}
    settings.update(publish=True, keep_key=True)
    with Engine(monkeypatch, settings) as engine:
        engine.wait_for(1)
        write_npm_tree(live, 5, ca.leaf(HOST, key=good.key), version=2)
        events = engine.wait_for(2)
    assert [e["data"].get("published") for e in events] == [True, True]
    where = {"kind": None, "keep_key": True, "live_dir": str(live)}  # None: the default kind
    assert publisher.calls == [
        (HOST, ["mailcow", "spare"], where),
        (HOST, ["spare"], where),
    ]


@pytest.mark.parametrize(
    ("pillar", "error", "logged"),
    [
        (_pillar("other-npm", "mailcow"), None, "names no consumer of npm"),
        (_pillar("npm", "mailcow"), CommandExecutionError("no lineage"), "no lineage"),
        (SaltReqTimeoutError("timed out"), None, "not published here (timed out)"),
    ],
    ids=["another-source", "publication-failed", "master-silent"],
)
def test_a_renewal_the_engine_cannot_publish_is_left_to_the_reactor(
    monkeypatch, live, caplog, pillar, error, logged
):
    publisher = Publisher(pillar, error=error)
    publisher.install(monkeypatch)
    caplog.set_level("INFO")
    settings = {"hostname": HOST, "live_dir": str(live), "rescan": WAIT * 3, "publish": True}
    with Engine(monkeypatch, settings) as engine:
        (event,) = engine.wait_for(1)
    assert "published" not in event["data"]
    assert logged in caplog.text


@pytest.mark.parametrize("switch", ["publish", "keep_key"])
def test_a_switch_that_is_no_boolean_stops_the_engine(monkeypatch, caplog, switch):
    settings = {"hostname": HOST, "live_dir": "/l", "publish": True, switch: "yes"}
    with Engine(monkeypatch, settings) as engine:
        engine.thread.join(WAIT)
    assert engine.fired == []
    assert f"{switch} must be true or false, not 'yes'; not watching" in caplog.text


def test_an_engine_that_cannot_reach_the_master_leaves_publishing_to_the_reactor(
    monkeypatch, live, caplog
):
    def unreachable(engine):
        raise SaltClientError("no master at salt:4506")

    monkeypatch.setattr(certsync_watch.Publisher, "connect", unreachable)
    settings = {"hostname": HOST, "live_dir": str(live), "rescan": WAIT * 3, "publish": True}
    with Engine(monkeypatch, settings) as engine:
        (event,) = engine.wait_for(1)
    assert "published" not in event["data"]
    assert "not publishing here (no master at salt:4506): the reactor publishes" in caplog.text


def test_a_bad_setting_stops_the_engine_not_the_minion(caplog):
    """start() is the engine's thread: a setting it refuses is logged, not a traceback."""
    certsync_watch.start(hostname=HOST, live_dir="/l", rescan=float("inf"))
    assert "rescan must be a number of seconds" in caplog.text and "not watching" in caplog.text


def test_the_engine_stops_once_certsync_absent_removed_its_configuration(
    monkeypatch, live, ca, good, tmp_path
):
    """After certsync.absent (its configuration file gone) the engine announces and
    writes nothing more, even on a renewal, until the minion restarts without it."""
    conf = tmp_path / "etc" / "minion"
    (conf.parent / "minion.d").mkdir(parents=True)
    engine_conf = conf.parent / "minion.d" / "certsync-watch.conf"
    engine_conf.write_text("engines: []\n")
    monkeypatch.setitem(certsync_watch.__opts__, "conf_file", str(conf))
    monkeypatch.setitem(certsync_watch.__opts__, "default_include", "minion.d/*.conf")
    settings = {"hostname": HOST, "live_dir": str(live), "rescan": WAIT * 3}
    with Engine(monkeypatch, settings) as engine:
        engine.wait_for(1)
        engine_conf.unlink()
        shutil.rmtree(certsync_watch.__opts__["cachedir"])
        write_npm_tree(live, 5, ca.leaf(HOST, key=good.key), version=2)
        engine.thread.join(WAIT)
        assert not engine.thread.is_alive()
    assert len(engine.fired) == 1
    assert not pathlib.Path(certsync_watch.__opts__["cachedir"], "certsync").exists()
