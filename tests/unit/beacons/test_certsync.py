"""The certsync beacon: what Salt's validate() refuses (untrusted pillar), and the
renewals it announces on a source caught in every state of its writes."""

import pytest
from salt.exceptions import SaltInvocationError

from harness.loader import certsync_beacon, deploy_functions, monitor_mod


@pytest.fixture
def configure_loader_modules(loader_modules):
    return {**loader_modules, certsync_beacon: {"__salt__": deploy_functions()}}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([{"hostname": 5}, {"live_dir": "/etc/letsencrypt/live"}], "5 is not a DNS host name"),
        ([{"hostname": ["x"]}, {"live_dir": "/l"}], "['x'] is not a DNS host name"),
        ([{"hostname": "x/../../b"}, {"live_dir": "/l"}], "'x/../../b' is not a DNS host name"),
        ([{"hostname": "../x"}, {"live_dir": "/l"}], "is not a DNS host name"),
        ([{"hostname": "mail.example.test\n"}, {"live_dir": "/l"}], "is not a DNS host name"),
        ([{"hostname": "a b.example"}, {"live_dir": "/l"}], "is not a DNS host name"),
        ([{"hostname": "x" * 64 + ".test"}, {"live_dir": "/l"}], "is not a DNS host name"),
        ([{"hostname": "mail.example.test"}, {"live_dir": "live"}], "must be an absolute path"),
        ([{"hostname": "mail.example.test"}, {"source": ["/x"]}], "must be an absolute path"),
        (
            [{"hostname": "mail.example.test"}],
            "give the source's settings (npm: live_dir or source)",
        ),
        ([{"live_dir": "/l"}], "hostname is required"),
        ([{"alert_days": "21"}], "alert_days must be a whole number"),
        ([{"alert_days": 21}, {"grace": -1}], "grace must be whole seconds"),
        ([{"alert_days": 21}, {"textfile": "/tmp/x.txt"}], "textfile must be a *.prom file"),
    ],
)
def test_a_bad_configuration_is_refused_by_name(config, message):
    valid, why = certsync_beacon.validate(config)
    assert valid is False
    assert message in why


def _cachedir(monkeypatch, path):
    """The beacon's cachedir, and the monitor's that keeps its records."""
    for module in (certsync_beacon, monitor_mod):
        monkeypatch.setattr(module, "__opts__", {"cachedir": str(path)}, raising=False)


def test_a_refused_configuration_writes_nothing(tmp_path, monkeypatch):
    """Were beacon() called without validate() first, the record still stays put."""
    _cachedir(monkeypatch, tmp_path)
    monkeypatch.setattr(certsync_beacon, "__context__", {}, raising=False)
    events = certsync_beacon.beacon([{"hostname": "x/../../b"}, {"live_dir": str(tmp_path)}])
    assert events == [{"tag": "error", "error": events[0]["error"]}]
    assert "is not a DNS host name" in events[0]["error"]
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize(
    "config",
    [
        [{"hostname": "mail.example.test"}, {"live_dir": "/etc/letsencrypt/live"}],
        [{"hostname": "MAIL.Example.test"}, {"source": "/etc/letsencrypt/live/npm-5"}],
        [{"alert_days": 21}, {"grace": 0}],
    ],
)
def test_a_good_configuration_passes(config):
    assert certsync_beacon.validate(config) == (True, "Valid beacon configuration")


HOST = "mail.example.test"


@pytest.fixture
def caddy(tmp_path, monkeypatch):
    """A beacon on a Caddy storage, its record in a private cachedir."""
    _cachedir(monkeypatch, tmp_path)
    monkeypatch.setattr(certsync_beacon, "__context__", {}, raising=False)
    site = tmp_path / "caddy" / "certificates" / "acme-issuer" / HOST
    site.mkdir(parents=True)
    config = [{"hostname": HOST}, {"kind": "caddy"}, {"storage": str(tmp_path / "caddy")}]
    return site, config


def _store(site, issued, key=None):
    """What certmagic 0.17 (Debian's caddy 2.6) does: the .key, then the .crt, in place."""
    (site / f"{HOST}.key").write_bytes((key or issued).key_pem())
    (site / f"{HOST}.crt").write_bytes(issued.fullchain_pem())


def test_a_new_certificate_is_announced_once_even_across_a_restart(caddy, ca, good):
    site, config = caddy
    _store(site, good)
    events = certsync_beacon.beacon(config)
    assert [(e["tag"], e["fingerprint"]) for e in events] == [("renewed", good.fingerprint)]
    assert sorted(events[0]) == ["fingerprint", "hostname", "not_after", "source", "tag"]
    assert events[0]["source"] == str(site)
    assert certsync_beacon.beacon(config) == []
    certsync_beacon.__context__.clear()  # a restarted minion: the record remembers
    assert certsync_beacon.beacon(config) == []
    renewed = ca.leaf(HOST, key=good.key)
    _store(site, renewed)
    assert [e["fingerprint"] for e in certsync_beacon.beacon(config)] == [renewed.fingerprint]


def test_two_routes_of_one_hostname_each_announce_their_own_lineage_once(tmp_path, ca, monkeypatch):
    """An EC and an RSA certificate for one name, two routes: each is announced once,
    and a renewal of one announces that route alone (one record per route)."""
    _cachedir(monkeypatch, tmp_path)
    monkeypatch.setattr(certsync_beacon, "__context__", {}, raising=False)
    issued, routes = {}, {}
    for route, key_kind in (("ec", "ec-p256"), ("rsa", "rsa-2048")):
        storage = tmp_path / route
        site = storage / "certificates" / "acme-issuer" / HOST
        site.mkdir(parents=True)
        issued[route] = ca.leaf(HOST, key_kind=key_kind)
        _store(site, issued[route])
        routes[route] = {"hostname": HOST, "kind": "caddy", "storage": str(storage)}
    config = [{"routes": routes}]
    first = certsync_beacon.beacon(config)
    assert sorted((e["route"], e["fingerprint"]) for e in first) == [
        ("ec", issued["ec"].fingerprint),
        ("rsa", issued["rsa"].fingerprint),
    ]
    assert certsync_beacon.beacon(config) == []
    assert certsync_beacon.beacon(config) == []
    renewed = ca.leaf(HOST, key=issued["rsa"].key)
    _store(tmp_path / "rsa" / "certificates" / "acme-issuer" / HOST, renewed)
    assert [(e["route"], e["fingerprint"]) for e in certsync_beacon.beacon(config)] == [
        ("rsa", renewed.fingerprint)
    ]


def test_a_certificate_caught_mid_write_is_read_again_not_reported(caddy, good):
    site, config = caddy
    _store(site, good)
    (site / f"{HOST}.crt").write_bytes(good.fullchain_pem()[:200])  # torn: os.WriteFile
    assert certsync_beacon.beacon(config) == []
    (site / f"{HOST}.crt").write_bytes(good.fullchain_pem())
    assert [e["tag"] for e in certsync_beacon.beacon(config)] == ["renewed"]


def test_a_source_that_stays_unreadable_is_one_error_then_waits_for_a_change(caddy, ca, good):
    site, config = caddy
    _store(site, ca.leaf(HOST), key=good)  # a key that is not the certificate's
    ticks = [certsync_beacon.beacon(config) for _ in range(certsync_beacon.RETRIES + 3)]
    errors = [event for tick in ticks for event in tick]
    assert [e["tag"] for e in errors] == ["error"]
    assert ticks[certsync_beacon.RETRIES - 1] == errors
    assert "key does not match" in errors[0]["error"]
    _store(site, good)
    assert [e["tag"] for e in certsync_beacon.beacon(config)] == ["renewed"]


def test_a_setting_the_source_refuses_is_one_error_not_one_per_tick(caddy):
    _, config = caddy
    config[2] = {"storage": "caddy"}
    assert certsync_beacon.validate(config)[0] is False
    first = certsync_beacon.beacon(config)
    assert [e["tag"] for e in first] == ["error"]
    assert "storage" in first[0]["error"]
    assert certsync_beacon.beacon(config) == []


def test_each_tick_asks_the_source_for_its_paths_once(caddy, good, monkeypatch):
    site, config = caddy
    _store(site, good)
    calls = []
    salt = dict(certsync_beacon.__salt__)
    watched = salt["certsync_source.watched"]
    salt["certsync_source.watched"] = lambda *a, **kw: calls.append(a) or watched(*a, **kw)
    monkeypatch.setattr(certsync_beacon, "__salt__", salt)
    certsync_beacon.beacon(config)
    certsync_beacon.beacon(config)
    assert len(calls) == 2
    with pytest.raises(SaltInvocationError):
        watched(HOST, "caddy", storage="relative")
