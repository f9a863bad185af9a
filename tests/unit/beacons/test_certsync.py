"""The certsync beacon's configuration: what Salt's validate() refuses (untrusted pillar)."""

import pytest

from harness.loader import certsync_beacon, deploy_functions, npm_source_mod, source_mod


@pytest.fixture(autouse=True)
def configure_loader_modules():
    functions = deploy_functions()
    return {
        certsync_beacon: {"__salt__": functions},
        source_mod: {"__salt__": functions},
        npm_source_mod: {"__salt__": functions},
    }


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


def test_a_refused_configuration_writes_nothing(tmp_path, monkeypatch):
    """Were beacon() called without validate() first, the record still stays put."""
    monkeypatch.setattr(certsync_beacon, "__opts__", {"cachedir": str(tmp_path)}, raising=False)
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
