"""The pillar as the formula reads it (salt://_utils/certsync_settings.py)."""

import pathlib

import pytest
import yaml

from harness.loader import UTILS

ROOT = pathlib.Path(__file__).resolve().parents[3]


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
