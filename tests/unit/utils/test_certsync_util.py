"""The helpers the loader modules share (salt://_utils/certsync_util.py)."""

import os
import pathlib

import pytest
import yaml

from harness.loader import UTILS

replace_file = UTILS["certsync_util.replace_file"]
write_temp = UTILS["certsync_util.write_temp"]
ROOT = pathlib.Path(__file__).resolve().parents[3]


def test_replace_file_is_private_by_default_and_leaves_no_temp(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("old")
    replace_file(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o600
    replace_file(str(path), b"shared", 0o644)
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path)) == ["record.json"]


def test_a_symlink_planted_at_the_temp_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    planted = tmp_path / f".key.pem.certsync-{os.getpid()}"
    planted.symlink_to(victim)
    temp = write_temp(str(tmp_path), "key.pem", b"secret", 0o600)
    assert victim.read_text() == "untouched"
    assert not os.path.islink(temp) and open(temp, "rb").read() == b"secret"  # noqa: SIM115


def test_a_missing_directory_is_an_error_not_a_partial_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        replace_file(str(tmp_path / "gone" / "x"), b"data")
    assert os.listdir(tmp_path) == []


SETTINGS = {
    "dane": {"port": 25, "update": {"zone": "example.test", "tsig_secret": "c2VjcmV0"}},
    "relay": [{"host": "smtp.example.test", "password": "hunter2"}, {"password": ""}],
    "api_token": None,
}


def test_credentials_are_left_out_of_what_travels_at_any_depth():
    assert UTILS["certsync_util.without_credentials"](SETTINGS) == {
        "dane": {"port": 25, "update": {"zone": "example.test"}},
        "relay": [{"host": "smtp.example.test"}, {}],
    }
    assert "tsig_secret" in SETTINGS["dane"]["update"]  # a copy: the settings are unchanged


def test_credentials_that_are_set_are_masked_in_what_is_shown():
    masked = UTILS["certsync_util.masked_credentials"](SETTINGS)
    assert masked["dane"]["update"] == {"zone": "example.test", "tsig_secret": "**********"}
    assert masked["relay"] == [
        {"host": "smtp.example.test", "password": "**********"},
        {"password": ""},
    ]
    assert masked["api_token"] is None  # not set: nothing to hide, shown as it is


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (
            {"consumers": {"m": {"dane": {"update": {"tsig_secret": "own"}}}}},
            ("own", "consumers:m"),
        ),
        (
            {"consumer_defaults": {"dane": {"update": {"tsig_secret": "d"}}}},
            ("d", "consumer_defaults"),
        ),
        (  # an own dane replaces the defaults' as a whole, as map.jinja merges
            {
                "consumers": {"m": {"dane": True}},
                "consumer_defaults": {"dane": {"update": {"tsig_secret": "d"}}},
            },
            (None, "consumers:m"),
        ),
        ({"consumers": {"m": None}, "consumer_defaults": "x"}, (None, "consumer_defaults")),
        ("not a mapping", (None, "consumer_defaults")),
    ],
)
def test_a_consumer_setting_is_its_own_over_the_defaults(cfg, expected):
    value, where = UTILS["certsync_settings.consumer_setting"](
        cfg, "m", "dane", "update", "tsig_secret"
    )
    assert (value, where) == (expected[0], f"certsync:{expected[1]}:dane:update:tsig_secret")


@pytest.mark.parametrize("path", ["pillar.example", "pillar/certsync.sls"])
def test_the_documented_pillars_hold_only_known_settings(path):
    defaults = yaml.safe_load((ROOT / "salt/certsync/defaults.yaml").read_text())["certsync"]
    pillar = yaml.safe_load((ROOT / path).read_text())["certsync"]
    assert UTILS["certsync_settings.problems"](pillar, defaults) == []


def test_every_default_is_documented_in_pillar_example():
    """Every key of defaults.yaml appears in pillar.example, at the same place."""
    defaults = yaml.safe_load((ROOT / "salt/certsync/defaults.yaml").read_text())["certsync"]
    example = yaml.safe_load((ROOT / "pillar.example").read_text())["certsync"]
    example_defaults = {**example, "consumers": {}}
    missing = UTILS["certsync_settings.problems"](defaults, example_defaults)
    assert [m for m in missing if "hostname is not set" not in m] == []
