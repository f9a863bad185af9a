"""The npm source kind (certsync_source_npm): NPM's lineage search (loader mocked).
Its renewal-file edits run against the real certbot in
tests/functional/test_renewal_parser.py and test_npm_renewal.py."""

import os

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from harness.loader import npm_source_mod
from harness.pki import DAY, NOW, write_npm_tree


@pytest.fixture
def configure_loader_modules(loader_modules):
    return loader_modules


def test_find_picks_the_covering_dir_with_latest_expiry(tmp_path, ca, good):
    live_dir = tmp_path / "live"
    write_npm_tree(live_dir, 1, ca.leaf("www.example.test"))
    write_npm_tree(live_dir, 3, ca.leaf("mail.example.test", not_after=NOW + 20 * DAY))
    write_npm_tree(live_dir, 5, good)
    write_npm_tree(live_dir, 12, ca.leaf("*.example.test", not_after=NOW + 30 * DAY))
    (live_dir / "README").write_text("certbot readme")
    ret = npm_source_mod.find("mail.example.test", str(live_dir))
    assert ret["name"] == "npm-5"
    assert ret["fullchain"] == str(live_dir / "npm-5" / "fullchain.pem")
    assert ret["fingerprint"] == good.fingerprint
    assert ret["covering"] == ["npm-12", "npm-3", "npm-5"]


def test_find_reports_broken_dirs_and_skips_them(tmp_path, good):
    live_dir = tmp_path / "live"
    write_npm_tree(live_dir, 5, good)
    broken = live_dir / "npm-9"
    broken.mkdir()
    (broken / "fullchain.pem").symlink_to("../../archive/npm-9/fullchain1.pem")
    ret = npm_source_mod.find("mail.example.test", str(live_dir))
    assert ret["name"] == "npm-5"
    assert "dangling symlink" in ret["skipped"]["npm-9"]


def test_find_errors(tmp_path):
    with pytest.raises(CommandExecutionError, match="cannot list"):
        npm_source_mod.find("mail.example.test", str(tmp_path / "missing"))
    with pytest.raises(SaltInvocationError, match="not a valid DNS host name"):
        npm_source_mod.find("-bad-.test", str(tmp_path))


def test_find_takes_the_newest_usable_dir_and_says_why_not_the_others(tmp_path, ca, good):
    live_dir = tmp_path / "live"
    write_npm_tree(live_dir, 5, good)
    newer = ca.leaf("mail.example.test", not_after=NOW + 200 * DAY)
    live = write_npm_tree(live_dir, 9, newer)
    os.unlink(os.path.realpath(os.path.join(live, "privkey.pem")))
    found = npm_source_mod.find("mail.example.test", str(live_dir))
    assert found["name"] == "npm-5"
    assert found["fingerprint"] == good.fingerprint
    assert found["skipped"]["npm-9"].startswith(
        "covers mail.example.test but its key is not usable ("
    )
    assert "privkey.pem: dangling symlink" in found["skipped"]["npm-9"]
