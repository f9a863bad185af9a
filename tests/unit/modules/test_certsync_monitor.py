"""
Unit tests of the consumer's monitoring (loader mocked): the alert
conditions, the beacon firing each once, and the Prometheus textfile. The
endpoints are real TLS servers on loopback; the mine is a stand-in.
"""

import json
import os
import pathlib
import re
import stat
import time
from unittest.mock import patch

import pytest
from prometheus_client.parser import text_string_to_metric_families
from salt.exceptions import CommandExecutionError, SaltInvocationError
from support.tlsserver import TLSServer

from harness.loader import (
    MINION_OPTS,
    certsync_beacon,
    consumer_mod,
    deploy_functions,
    mailcow_consumer_mod,
    monitor_mod,
    tlsprobe_mod,
)
from harness.mailcow_stack import free_port
from harness.pki import DAY, NOW, write_pair, write_sni_dir

HOST = "mail.example.test"
ME, SOURCE = "mailcow", "npm"


class Fleet:
    """What the monitor asks Salt for: its pillar settings and the mine."""

    def __init__(self, dest):
        self.published = None
        self.endpoints = {}
        self.dest = str(dest)

    def settings(self, route="default"):
        assert route == "default"
        return {
            "hostname": HOST,
            "source": SOURCE,
            "dest": self.dest,
            "endpoints": self.endpoints,
            "probe_address": "127.0.0.1",
        }

    def fingerprint(self, source, route=None):
        assert (source, route) == (SOURCE, None)
        if self.published is None:
            raise monitor_mod.CommandExecutionError(f"the mine holds no entry from {source}")
        return self.published


@pytest.fixture
def fleet(tmp_path):
    (tmp_path / "ssl").mkdir()
    return Fleet(tmp_path / "ssl")


@pytest.fixture
def configure_loader_modules(tmp_path, fleet):
    opts = {"id": ME, "cachedir": str(tmp_path / "cache"), "test": False}
    monitor_funcs = {
        f"certsync_monitor.{name}": getattr(monitor_mod, name)
        for name in (
            "check",
            "textfile",
            "record_deploy",
            "last_deploy",
            "log_event",
            "record",
            "keep_record",
        )
    }
    return {
        mailcow_consumer_mod: {"__salt__": deploy_functions()},
        consumer_mod: {"__salt__": deploy_functions(), "__opts__": dict(MINION_OPTS)},
        tlsprobe_mod: {"__context__": {}},
        monitor_mod: {
            "__opts__": opts,
            "__context__": {},
            "__pillar__": {},
            "__salt__": {
                **deploy_functions(),
                "certsync_settings.consumer": fleet.settings,
                "certsync_settings.routes": lambda: {"source": {}, "consumer": {"default": {}}},
                "certsync_mine.published_fingerprint": fleet.fingerprint,
                "tlsprobe.probe": tlsprobe_mod.probe,
            },
        },
        certsync_beacon: {"__opts__": opts, "__context__": {}, "__salt__": monitor_funcs},
    }


@pytest.fixture
def serve(tmp_path, fleet):
    """Serve a certificate on ``https`` (and ``imaps``) as the consumer's endpoints."""
    servers = []

    def start(issued):
        directory = tmp_path / f"served{len(servers)}"
        write_pair(directory, issued)
        for server in servers:
            server.close()
        servers[:] = [TLSServer(directory / "cert.pem", directory / "key.pem") for _ in range(2)]
        fleet.endpoints = {"https": servers[0].port, "imaps": servers[1].port}

    yield start
    for server in servers:
        server.close()


def _active(report):
    return {name for name, state in report["conditions"].items() if state["active"]}


def test_all_quiet_when_served_matches_source_and_far_from_expiry(ca, fleet, serve):
    leaf = ca.leaf(HOST)
    serve(leaf)
    fleet.published = leaf.fingerprint
    monitor_mod.record_deploy(fleet.dest, True, installed=True)
    report = monitor_mod.check(days=21)
    assert _active(report) == set()
    assert report["endpoints"]["https"]["matches_source"] is True
    assert 89 < report["endpoints"]["imaps"]["days_left"] <= 90


def test_expiry_window(ca, fleet, serve):
    leaf = ca.leaf(HOST, not_after=NOW + 10 * DAY)
    serve(leaf)
    fleet.published = leaf.fingerprint
    report = monitor_mod.check(days=21)
    assert _active(report) == {"expiry"}
    assert re.fullmatch(
        r"fewer than 21 days left: https (9\.9|10\.0) days, imaps (9\.9|10\.0) days",
        report["conditions"]["expiry"]["detail"],
    )
    assert _active(monitor_mod.check(days=5)) == set()


def test_served_differs_from_source(ca, fleet, serve):
    serve(ca.leaf(HOST))
    fleet.published = ca.leaf(HOST).fingerprint
    report = monitor_mod.check()
    assert _active(report) == {"mismatch"}
    detail = report["conditions"]["mismatch"]["detail"]
    assert detail.startswith(f"not the source's {fleet.published[:16]}...: https serves ")
    fleet.published = None
    report = monitor_mod.check()
    assert report["conditions"]["mismatch"]["detail"] == (
        f"source fingerprint unknown: the mine holds no entry from {SOURCE}"
    )


def test_an_endpoint_that_answers_nothing_is_unreachable_not_a_mismatch(ca, fleet, serve):
    leaf = ca.leaf(HOST)
    serve(leaf)
    fleet.published = leaf.fingerprint
    fleet.endpoints["smtps"] = free_port()  # nothing listens: refused
    report = monitor_mod.check()
    assert _active(report) == {"unreachable"}
    assert report["conditions"]["unreachable"]["detail"].startswith(
        "answers no TLS handshake: smtps ("
    )
    config = [{"alert_days": 14, "grace": 600}]
    start = time.time()
    assert certsync_beacon.beacon(config) == []  # a restart: seconds, not an alert
    with patch.object(certsync_beacon.time, "time", return_value=start + 601):
        assert [e["tag"] for e in certsync_beacon.beacon(config)] == ["alert/unreachable"]


def test_failed_deploy(ca, fleet, serve):
    leaf = ca.leaf(HOST)
    serve(leaf)
    fleet.published = leaf.fingerprint
    monitor_mod.record_deploy(fleet.dest, True, installed=True)
    first_success = monitor_mod.last_deploy(fleet.dest)["last_success"]
    monitor_mod.record_deploy(fleet.dest, False, summary="Nothing deployed: bad key\nmore")
    report = monitor_mod.check()
    assert _active(report) == {"deploy_failed"}
    assert report["conditions"]["deploy_failed"]["detail"] == (
        "last run failed: Nothing deployed: bad key"
    )
    assert report["last_deploy"]["last_success"] == first_success
    assert report["last_deploy"]["last_install"] == first_success


def test_a_deploy_held_for_its_tlsa_record_is_dane_pending_not_failed(ca, fleet, serve):
    leaf = ca.leaf(HOST)
    serve(leaf)
    fleet.published = leaf.fingerprint
    record = "_25._tcp.mail.example.test. IN TLSA 3 1 1 " + "ab" * 32
    monitor_mod.record_deploy(fleet.dest, False, summary="DANE: no TLSA", dane_pending=record)
    report = monitor_mod.check()
    assert _active(report) == {"dane_pending"}
    assert report["conditions"]["dane_pending"]["detail"] == (
        f"the new certificate waits for its TLSA record: {record} (DANE: no TLSA)"
    )  # with the run's reason: a record to publish, a TTL to wait, a provider's error
    monitor_mod.record_deploy(fleet.dest, True, installed=True, dane_pending=record)
    assert _active(monitor_mod.check()) == set()


def test_a_per_name_dir_left_alone_is_uncovered_with_its_expiry(ca, fleet, serve, tmp_path):
    leaf = ca.leaf(HOST)
    serve(leaf)
    fleet.published = leaf.fingerprint
    write_pair(fleet.dest, leaf)
    old = ca.leaf("mail.example.org", not_after=NOW + 40 * DAY)
    write_sni_dir(fleet.dest, old, ["mail.example.org", "autodiscover.example.org"])
    report = monitor_mod.check()
    assert _active(report) == {"uncovered"}
    expires = report["uncovered"]["mail.example.org"]["not_after"]
    assert report["conditions"]["uncovered"]["detail"] == (
        "SNI dir mail.example.org (mail.example.org, autodiscover.example.org not covered) "
        f"serves a certificate that expires {expires}"
    )
    path = tmp_path / "certsync.prom"
    monitor_mod.textfile(str(path), report=report)
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    (sample,) = families["certsync_sni_dir_uncovered"].samples
    assert (
        sample.labels == {"hostname": HOST, "route": "default", "dir": "mail.example.org"}
        and sample.value == 1
    )
    (expiry,) = families["certsync_sni_dir_expiry_timestamp_seconds"].samples
    assert expiry.value == old.cert.not_valid_after_utc.timestamp()


def test_beacon_fires_each_condition_once(ca, fleet, serve):
    old = ca.leaf(HOST, not_after=NOW + 3 * DAY)
    serve(old)
    fleet.published = ca.leaf(HOST).fingerprint
    monitor_mod.record_deploy(fleet.dest, False, summary="Nothing deployed: reload failed")
    config = [{"alert_days": 14, "grace": 0}]
    assert certsync_beacon.validate(config) == (True, "Valid beacon configuration")

    events = certsync_beacon.beacon(config)
    assert [e["tag"] for e in events] == ["alert/deploy_failed", "alert/expiry", "alert/mismatch"]
    assert all(e["hostname"] == HOST and e["detail"] for e in events)
    assert certsync_beacon.beacon(config) == []

    fixed = ca.leaf(HOST)
    serve(fixed)
    fleet.published = fixed.fingerprint
    monitor_mod.record_deploy(fleet.dest, True, installed=True)
    assert certsync_beacon.beacon(config) == []
    fleet.published = ca.leaf(HOST).fingerprint
    assert [e["tag"] for e in certsync_beacon.beacon(config)] == ["alert/mismatch"]


def test_a_mismatch_alerts_only_once_it_outlasts_the_grace(ca, fleet, serve):
    serve(ca.leaf(HOST))
    fleet.published = ca.leaf(HOST).fingerprint  # the source renewed; not served yet
    config = [{"alert_days": 14, "grace": 600}]
    start = time.time()
    assert certsync_beacon.beacon(config) == []
    with patch.object(certsync_beacon.time, "time", return_value=start + 599):
        assert certsync_beacon.beacon(config) == []
    with patch.object(certsync_beacon.time, "time", return_value=start + 601):
        assert [e["tag"] for e in certsync_beacon.beacon(config)] == ["alert/mismatch"]


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ([{"alert_days": "soon"}], "alert_days must be a whole number, not 'soon'"),
        ([{"alert_days": -1}], "alert_days must be a whole number, not -1"),
        ([{"alert_days": 7, "grace": "1m"}], "grace must be whole seconds, not '1m'"),
        ([{"alert_days": 7, "textfile": "/tmp/x.txt"}], "textfile must be a *.prom file"),
    ],
)
def test_beacon_rejects_bad_alert_settings(config, error):
    ok, message = certsync_beacon.validate(config)
    assert ok is False
    assert message == f"certsync beacon: {error}"


def _families(text):
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_textfile_parses_as_prometheus_text(ca, fleet, serve, tmp_path):
    leaf = ca.leaf(HOST, not_after=NOW + 10 * DAY)
    serve(leaf)
    fleet.published = leaf.fingerprint
    monitor_mod.record_deploy(fleet.dest, True, installed=True)
    path = tmp_path / "textfile" / "certsync.prom"
    path.parent.mkdir()
    written = monitor_mod.textfile(str(path), days=21)
    text = path.read_text()
    families = _families(text)
    assert written == {"path": str(path), "samples": 15}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(path.parent) == ["certsync.prom"]

    expiry = {
        s.labels["endpoint"]: s.value
        for s in families["certsync_cert_expiry_timestamp_seconds"].samples
    }
    assert expiry == {
        "https": leaf.cert.not_valid_after_utc.timestamp(),
        "imaps": leaf.cert.not_valid_after_utc.timestamp(),
    }
    match = families["certsync_cert_matches_source"].samples
    assert {(s.labels["endpoint"], s.labels["hostname"], s.value) for s in match} == {
        ("https", HOST, 1.0),
        ("imaps", HOST, 1.0),
    }
    assert families["certsync_last_deploy_success"].samples[0].value == 1.0
    last = monitor_mod.last_deploy(fleet.dest)
    successful = families["certsync_last_successful_deploy_timestamp_seconds"].samples[0]
    assert successful.value == last["last_success"]
    alerts = {s.labels["condition"]: s.value for s in families["certsync_alert"].samples}
    assert alerts == {
        "expiry": 1.0,
        "mismatch": 0.0,
        "unreachable": 0.0,
        "deploy_failed": 0.0,
        "dane_pending": 0.0,
        "uncovered": 0.0,
    }
    assert all(f.type == "gauge" and f.documentation for f in families.values())


def test_textfile_after_a_failed_run_and_an_unreachable_endpoint(ca, fleet, serve, tmp_path):
    serve(ca.leaf(HOST))
    fleet.published = "ab" * 32
    fleet.endpoints["smtps"] = free_port()  # nothing listens: refused
    monitor_mod.record_deploy(fleet.dest, False, summary="Nothing deployed: x")
    path = tmp_path / "certsync.prom"
    monitor_mod.textfile(str(path))
    families = _families(path.read_text())
    probes = {s.labels["endpoint"]: s.value for s in families["certsync_probe_success"].samples}
    assert probes == {"https": 1.0, "imaps": 1.0, "smtps": 0.0}
    alerts = {s.labels["condition"]: s.value for s in families["certsync_alert"].samples}
    assert (alerts["unreachable"], alerts["mismatch"]) == (1.0, 1.0)
    assert families["certsync_last_deploy_success"].samples[0].value == 0.0
    assert "certsync_last_successful_deploy_timestamp_seconds" not in families


def _route_report(route, hostname, ok, mismatch):
    return {
        "route": route,
        "hostname": hostname,
        "endpoints": {"smtps": {"ok": ok, "fingerprint": "ab" * 32 if ok else None,
                                "matches_source": ok, **({"not_after": 2e9} if ok else {})}},
        "last_deploy": {"result": ok, "time": 1.7e9},
        "uncovered": {},
        "relay": None,
        "conditions": {"mismatch": {"active": mismatch, "detail": "x" if mismatch else ""}},
    }  # fmt: skip


def test_each_routes_metrics_carry_its_route_and_its_own_alerts(tmp_path):
    """The first route's rows are its own (not the minion's alerts, which any route sets)."""
    report = _route_report("default", HOST, True, True)
    report["route_conditions"] = {"mismatch": {"active": False, "detail": ""}}
    report["routes"] = {"b": _route_report("b", "mail.b.example.test", False, True)}
    path = tmp_path / "certsync.prom"
    monitor_mod.textfile(str(path), report=report)
    families = _families(path.read_text())

    def by_route(metric):
        return {
            (s.labels["route"], s.labels["hostname"]): s.value for s in families[metric].samples
        }

    assert by_route("certsync_alert") == {
        ("default", HOST): 0.0,
        ("b", "mail.b.example.test"): 1.0,
    }
    assert by_route("certsync_probe_success") == {
        ("default", HOST): 1.0,
        ("b", "mail.b.example.test"): 0.0,
    }
    assert by_route("certsync_last_deploy_success") == {
        ("default", HOST): 1.0,
        ("b", "mail.b.example.test"): 0.0,
    }


def test_textfile_refuses_what_node_exporter_would_not_read(tmp_path):
    with pytest.raises(SaltInvocationError, match=r"x\.txt: the textfile collector reads only"):
        monitor_mod.textfile(str(tmp_path / "x.txt"))
    with pytest.raises(monitor_mod.CommandExecutionError, match="the directory does not exist"):
        monitor_mod.textfile(str(tmp_path / "missing" / "certsync.prom"))


def test_metrics_without_prometheus_client_say_what_to_install(fleet, tmp_path):
    """prometheus_client is imported only for metrics: recording a deploy works without it."""
    missing = {"prometheus_client": None, "prometheus_client.core": None}  # import fails
    with patch.dict("sys.modules", missing):
        with pytest.raises(monitor_mod.CommandExecutionError, match="salt-pip install prometheus"):
            monitor_mod.textfile(str(tmp_path / "certsync.prom"), report={"hostname": HOST})
        record = monitor_mod.record_deploy(fleet.dest, True, installed=True)
    assert monitor_mod.last_deploy(fleet.dest) == record


def test_check_refuses_bad_days():
    with pytest.raises(SaltInvocationError, match="days must be a whole number, not 'x'"):
        monitor_mod.check(days="x")


# -- the event log (alerts:event_log): JSON lines for a SIEM -------------------------


@pytest.fixture
def event_log(tmp_path, monkeypatch):
    """This consumer's pillar sets an event log; the lines written, parsed."""
    path = tmp_path / "log" / "certsync-events.json"
    path.parent.mkdir()
    alerts = {"event_log": str(path)}
    pillar = {"certsync": {"consumers": {ME: {"alerts": alerts}}}}
    monkeypatch.setattr(monitor_mod, "__pillar__", pillar)

    def lines():
        return [json.loads(line) for line in path.read_text().splitlines()]

    lines.path, lines.alerts = path, alerts
    return lines


def test_alerts_fired_and_cleared_and_deploy_results_are_json_lines(ca, fleet, serve, event_log):
    old = ca.leaf(HOST, not_after=NOW + 3 * DAY)
    serve(old)
    fleet.published = old.fingerprint
    monitor_mod.record_deploy(fleet.dest, False, summary="Nothing deployed: reload failed\nmore")
    config = [{"alert_days": 14, "grace": 0}]
    certsync_beacon.beacon(config)
    fixed = ca.leaf(HOST)
    serve(fixed)
    fleet.published = fixed.fingerprint
    monitor_mod.record_deploy(
        fleet.dest, True, installed=True, certificate={"fingerprint": fixed.fingerprint}
    )
    certsync_beacon.beacon(config)

    lines = event_log()
    assert [(e["event"], e.get("condition"), e.get("state"), e.get("result")) for e in lines] == [
        ("deploy", None, None, "failed"),
        ("alert", "deploy_failed", "fired", None),
        ("alert", "expiry", "fired", None),
        ("deploy", None, None, "succeeded"),
        ("alert", "deploy_failed", "cleared", None),
        ("alert", "expiry", "cleared", None),
    ]
    assert all(e["program"] == "certsync" and e["minion"] == ME for e in lines)
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", e["time"]) for e in lines
    )
    assert lines[0]["detail"] == "Nothing deployed: reload failed"
    assert lines[1]["fingerprint"] == old.fingerprint and lines[1]["hostname"] == HOST
    assert lines[2]["detail"].startswith("fewer than 14 days left: https ")
    assert lines[3]["fingerprint"] == fixed.fingerprint and lines[3]["installed"] is True
    assert "detail" not in lines[4]
    assert stat.S_IMODE(os.stat(event_log.path).st_mode) == 0o640
    assert "PRIVATE KEY" not in event_log.path.read_text()


def test_a_deploy_of_a_route_names_it_in_the_event_log(fleet, event_log):
    monitor_mod.record_deploy(fleet.dest, True, route="b")
    monitor_mod.record_deploy(fleet.dest, True, route="default")
    assert [line.get("route") for line in event_log()] == ["b", None]


def test_without_an_event_log_nothing_is_written(fleet, tmp_path):
    assert monitor_mod.log_event("alert", condition="expiry", state="fired") is None
    monitor_mod.record_deploy(fleet.dest, True)
    assert [p.name for p in tmp_path.rglob("*.json") if "events" in p.name] == []


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("page",), {}, "event 'page' is not one of alert, deploy"),
        (("alert",), {"state": "firing"}, "a alert event's state must be one of fired, cleared"),
        (("deploy",), {"result": True}, "a deploy event's result must be one of succeeded"),
        (("alert",), {"state": "fired", "key": "x"}, "unknown event fields: key"),
    ],
)
def test_a_bad_event_is_refused_by_name(event_log, args, kwargs, message):
    with pytest.raises(SaltInvocationError, match=message):
        monitor_mod.log_event(*args, **kwargs)
    assert not event_log.path.exists()


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        ({"event_log": "relative/events.json"}, "alerts:event_log must be an absolute path"),
        ({"event_log": "/tmp/x", "event_log_max_bytes": 10}, "event_log_max_bytes"),
    ],
)
def test_a_bad_event_log_setting_is_named_and_no_deploy_fails_for_it(
    fleet, event_log, alerts, message, caplog
):
    event_log.alerts.update(alerts)
    with pytest.raises(SaltInvocationError, match=message):
        monitor_mod.log_event("alert", condition="expiry", state="fired")
    record = monitor_mod.record_deploy(fleet.dest, True)
    assert record["result"] is True
    assert "the event log was not written" in caplog.text


def test_text_from_outside_is_one_escaped_line(event_log):
    monitor_mod.log_event(
        "alert", condition="mismatch", state="fired", detail="a\nforged line\x1b[2J" + "x" * 2000
    )
    (line,) = event_log.path.read_text().splitlines()
    detail = json.loads(line)["detail"]
    assert detail.startswith("a forged line\\x1b[2J") and len(detail) == 1000


def _pause_path(dest):
    return pathlib.Path(monitor_mod._record_path(dest, "paused"))


@pytest.mark.parametrize(
    ("plant", "why"),
    [
        (lambda p: p.write_text("{not json"), "not a pause record certsync wrote"),
        (lambda p: p.write_text('{"since": "yesterday"}'), "not a pause record certsync wrote"),
        (lambda p: p.write_text('{"since": NaN}'), "not a pause record certsync wrote"),
        (lambda p: p.write_bytes(b" " * (70 * 1024)), "not a pause record certsync wrote"),
        (lambda p: p.symlink_to(p.with_name("elsewhere.json")), "not a regular file"),
        (os.mkfifo, "not a regular file"),
        (lambda p: p.mkdir(), "not a regular file"),
    ],
)
def test_a_pause_record_that_cannot_be_read_is_still_a_pause(tmp_path, plant, why):
    """Fail closed: a corrupt, oversized, symlinked or planted record reads as paused,
    saying why, so the next deploy does not re-install what was rolled back from."""
    dest = str(tmp_path / "ssl")
    path = _pause_path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    plant(path)
    pause = monitor_mod.paused(dest)
    assert pause is not None and why in pause["reason"] and "resume" in pause["reason"]


def test_a_pause_is_taken_back_and_a_directory_there_is_named(tmp_path):
    dest = str(tmp_path / "ssl")
    monitor_mod.pause(dest, "rolled back by hand")
    assert monitor_mod.paused(dest)["reason"] == "rolled back by hand"
    assert monitor_mod.resume(dest)["reason"] == "rolled back by hand"
    assert monitor_mod.paused(dest) is None
    _pause_path(dest).mkdir()
    with pytest.raises(CommandExecutionError, match="cannot remove the pause"):
        monitor_mod.resume(dest)
    assert monitor_mod.paused(dest) is not None


def test_records_round_trip_private_and_refuse_a_name_that_leaves_the_cachedir(tmp_path):
    assert monitor_mod.record("beacon-alerts") == {}
    assert monitor_mod.keep_record("beacon-alerts", {"fired": ["mismatch"]}) is True
    assert monitor_mod.record("beacon-alerts") == {"fired": ["mismatch"]}
    path = pathlib.Path(monitor_mod.__opts__["cachedir"]) / "certsync" / "beacon-alerts.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for bad in ("../x", "a/b", "", ".hidden", "x\n", 5):
        with pytest.raises(SaltInvocationError, match="a record name is"):
            monitor_mod.record(bad)
    with pytest.raises(SaltInvocationError, match="a record is a mapping"):
        monitor_mod.keep_record("beacon-alerts", ["not", "a", "mapping"])
    path.write_text("[1, 2]")
    assert monitor_mod.record("beacon-alerts") == {}
