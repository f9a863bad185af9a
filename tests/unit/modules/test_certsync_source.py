"""Certificate sources behind one interface (certsync_source, certsync_source_npm)."""

import os

import pytest
from salt.exceptions import SaltInvocationError

from harness.loader import source_mod
from harness.pki import write_npm_tree

HOST = "mail.example.test"


@pytest.fixture
def configure_loader_modules(loader_modules):
    return loader_modules


@pytest.fixture
def live(tmp_path, ca, good):
    live_dir = tmp_path / "letsencrypt" / "live"
    write_npm_tree(live_dir, 3, ca.leaf("www.example.test"))
    write_npm_tree(live_dir, 5, good)
    return str(live_dir)


def test_npm_finds_the_lineage_by_name_or_takes_the_one_named(live):
    found = source_mod.locate(HOST, live_dir=live)
    assert found == {
        "fullchain": os.path.join(live, "npm-5", "fullchain.pem"),
        "privkey": os.path.join(live, "npm-5", "privkey.pem"),
        "dir": os.path.join(live, "npm-5"),
    }
    assert source_mod.locate(HOST, "npm", live_dir=live, dir="npm-3")["dir"].endswith("npm-3")
    lineage = os.path.join(live, "npm-5")
    assert source_mod.locate(HOST, source=lineage)["dir"] == lineage


def test_the_settings_of_other_kinds_and_unset_ones_are_not_passed_on(live):
    """The formula's defaults hold every kind's settings: a kind gets its own, set ones."""
    found = source_mod.locate(HOST, "npm", live_dir=live, dir="", storage="/var/lib/caddy")
    assert found["dir"].endswith("npm-5")


def test_npm_watches_every_lineage_or_the_one_named(live):
    assert source_mod.watched(HOST, live_dir=live) == [
        os.path.join(live, "npm-3", "fullchain.pem"),
        os.path.join(live, "npm-5", "fullchain.pem"),
    ]
    assert source_mod.watched(HOST, live_dir=live, dir="npm-5") == [
        os.path.join(live, "npm-5", "fullchain.pem")
    ]


@pytest.mark.parametrize(
    ("kind", "where", "message"),
    [
        ("caddy-v9", {"live_dir": "/x"}, "unknown certificate source kind 'caddy-v9'"),
        (["npm"], {"live_dir": "/x"}, "unknown certificate source kind ['npm']"),
        ("npm", {}, "the npm source needs live_dir (and dir) or source"),
        ("npm", {"live_dir": "live"}, "live_dir must be an absolute path"),
        ("npm", {"live_dir": "/x", "dir": "../npm-5"}, "dir must be a lineage name"),
        ("npm", {"live_dir": "/x", "source": "/y"}, "give either source or live_dir, not both"),
    ],
)
def test_a_kind_or_a_setting_it_cannot_use_is_refused_by_name(kind, where, message):
    with pytest.raises(SaltInvocationError) as error:
        source_mod.locate(HOST, kind, **where)
    assert message in str(error.value)
