"""
The relay_failing alert from real postfix logs: the monitor and the beacon
(loader mocked) read the mailcow look-alike's postfix, which relays through a
real smarthost (tests/support/relay.py); the mine is a stand-in.
"""

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.relay import NAME, PORT

from harness.loader import (
    MINION_OPTS,
    UTILS,
    certsync_beacon,
    consumer_mod,
    deploy_functions,
    load_loader_module,
    mailcow_consumer_mod,
    mailcow_mod,
    monitor_mod,
    status_mod,
    tlsprobe_mod,
)
from harness.mailcow_stack import HOST, NAMES

pytestmark = pytest.mark.one_release  # its subject does not change with the Salt release

RELAY = f"{NAME}:{PORT}"
TO = "someone@example.net"
#: A password the relay does not know (rotated at the relay, not in mailcow).
ROTATED = "rotated-elsewhere"
CONFIG = [{"alert_days": 14, "grace": 0}]
egress_mod = load_loader_module("modules", "certsync_egress")


@pytest.fixture
def stack(make_relay, make_stack, ca):
    relay = make_relay(ca.leaf(NAME))
    return make_stack(ca.leaf(HOST, sans=NAMES), relay=relay, relay_ca_pem=ca.root_pem())


@pytest.fixture
def ca_file(ca, tmp_path):
    path = tmp_path / "relay-ca.pem"
    path.write_bytes(ca.root_pem())
    return str(path)


@pytest.fixture
def configure_loader_modules(tmp_path, stack, ca_file):
    opts = {"id": "mailcow", "cachedir": str(tmp_path / "cache"), "test": False}
    serving = stack.served()["smtp"]

    def settings(route="default"):
        return {
            "hostname": HOST,
            "source": "npm",
            "dest": str(stack.ssl_dir),
            "mailcow_dir": str(stack.root),
            "endpoints": {"smtp": stack.endpoints["smtp"]},
            "probe_address": "127.0.0.1",
            "sni": False,
            "relay": {
                "host": NAME,
                "port": PORT,
                "grace": 0,
                "window": 86400,
                "address": stack.relay.host_address,
                "cafile": ca_file,
            },
        }

    monitor_funcs = {
        f"certsync_monitor.{name}": getattr(monitor_mod, name)
        for name in ("check", "textfile", "log_event", "record", "keep_record")
    }
    return {
        mailcow_consumer_mod: {"__salt__": deploy_functions()},
        consumer_mod: {"__salt__": deploy_functions(), "__opts__": dict(MINION_OPTS)},
        tlsprobe_mod: {"__context__": {}},
        mailcow_mod: {"__opts__": opts, "__context__": {}, "__salt__": {}},
        monitor_mod: {
            "__opts__": opts,
            "__context__": {},
            "__pillar__": {},
            "__salt__": {
                **deploy_functions(),
                "certsync_settings.consumer": settings,
                "certsync_settings.routes": lambda: {"source": {}, "consumer": {"default": {}}},
                "certsync_mine.published_fingerprint": lambda source, route=None: serving,
                "tlsprobe.probe": tlsprobe_mod.probe,
                "mailcow.relay_status": mailcow_mod.relay_status,
            },
        },
        certsync_beacon: {"__opts__": opts, "__context__": {}, "__salt__": monitor_funcs},
        egress_mod: {"__opts__": opts, "__context__": {}, "__utils__": UTILS},
        status_mod: {
            "__opts__": opts,
            "__context__": {},
            "__salt__": {
                "mailcow.relay_status": mailcow_mod.relay_status,
                "certsync_egress.check": egress_mod.check,
            },
        },
    }


def _tags(events):
    return [event["tag"] for event in events]


def test_relay_failing_alerts_once_and_clears_after_a_success(stack, tmp_path):
    assert certsync_beacon.beacon(CONFIG) == []
    stack.set_relay(password=ROTATED)
    failed = mailcow_mod.relay_test(TO, relay=RELAY, timeout=60, path=str(stack.root))
    assert failed["problem"] == "authentication failed"

    events = certsync_beacon.beacon(CONFIG)
    assert _tags(events) == ["alert/relay_failing"]
    detail = events[0]["detail"]
    assert f"no mail sent through {RELAY}" in detail and "authentication failed" in detail
    assert ROTATED not in detail
    assert certsync_beacon.beacon(CONFIG) == []  # once per condition

    path = tmp_path / "certsync.prom"
    monitor_mod.textfile(str(path), days=14)
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    alerts = {s.labels["condition"]: s.value for s in families["certsync_alert"].samples}
    assert alerts["relay_failing"] == 1
    assert families["certsync_relay_status_success"].samples[0].value == 1
    assert "certsync_relay_last_success_timestamp_seconds" not in families

    stack.set_relay()  # the password fixed in mailcow's admin UI
    assert mailcow_mod.relay_test(TO, relay=RELAY, timeout=60, path=str(stack.root))["ok"] is True
    assert certsync_beacon.beacon(CONFIG) == []
    report = monitor_mod.check(days=14)
    assert report["conditions"]["relay_failing"] == {"active": False, "detail": ""}
    monitor_mod.textfile(str(path), days=14)
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    (success,) = families["certsync_relay_last_success_timestamp_seconds"].samples
    assert success.labels["relay"] == RELAY and success.value > 0
    alerts = {s.labels["condition"]: s.value for s in families["certsync_alert"].samples}
    assert alerts["relay_failing"] == 0

    stack.set_relay(password=ROTATED + "-again")
    mailcow_mod.relay_test(TO, relay=RELAY, timeout=60, path=str(stack.root))
    assert _tags(certsync_beacon.beacon(CONFIG)) == ["alert/relay_failing"]  # a new episode


def test_status_says_whether_mail_leaves_and_the_way_out_is_open(stack, configure_loader_modules):
    settings = configure_loader_modules[monitor_mod]["__salt__"]["certsync_settings.consumer"]()
    view = status_mod._relay_view(settings, settings["relay"])
    assert view == {"relay": RELAY, "sent": 0, "queue": view["queue"], "blocked": [], "ok": True}
    assert mailcow_mod.relay_test(TO, relay=RELAY, path=str(stack.root))["ok"] is True
    view = status_mod._relay_view(settings, settings["relay"])
    assert (view["ok"], view["sent"], view["failing_since"]) == (True, 1, None)

    stack.set_relay(password=ROTATED)
    mailcow_mod.relay_test(TO, relay=RELAY, path=str(stack.root))
    view = status_mod._relay_view(settings, settings["relay"])
    assert view["ok"] is False and view["failing_since"]
    assert view["last_failure"]["problem"] == "authentication failed"

    stack.relay.container.stop(timeout=1)  # the relay host goes away
    view = status_mod._relay_view(settings, settings["relay"])
    assert view["blocked"] == [
        f"relay {NAME}:{PORT}: connection refused (rejected by a firewall, or nothing listens)"
    ]
