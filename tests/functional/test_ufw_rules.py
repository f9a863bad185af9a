"""certsync_ufw over the rules files Debian's real ufw 0.36 writes (its state private to
each test: tests/support/ufw.py): the cases a hostile run found in the old `ufw status`
parser, each written by ufw itself, then read back by certsync_ufw and compared with
what ufw's own `ufw status` shows."""

import shutil
import subprocess

import pytest
from support.ufw import PrivateUfw

from harness.loader import UTILS, load_loader_module

ufw_mod = load_loader_module("modules", "certsync_ufw")
LONG_V6 = "2001:db8:1234:5678:9abc:def0:1234:5678"  # 38 characters: past ufw's 26 columns

pytestmark = pytest.mark.skipif(not shutil.which("ufw"), reason="Debian's ufw is not installed")


@pytest.fixture
def configure_loader_modules():
    return {ufw_mod: {"__salt__": {}, "__utils__": UTILS, "__opts__": {"test": False}}}


@pytest.fixture
def ufw(tmp_path):
    state = PrivateUfw(tmp_path / "ufw")

    def run(*argv):
        done = subprocess.run(
            state.wrap(["ufw", *argv]), capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def rules():
        etc = tmp_path / "ufw" / "etc-ufw"
        return [
            *ufw_mod.parse_rules((etc / "user.rules").read_text()),
            *ufw_mod.parse_rules((etc / "user6.rules").read_text(), v6=True),
        ]

    run.rules = rules
    return run


def _allowed(ufw, port, address):
    return ufw_mod.allowed_out(port, address, rules=ufw.rules())


def test_a_deny_listed_before_the_allow_wins(ufw):
    ufw("deny", "out", "proto", "tcp", "to", "192.0.2.0/24", "port", "2525")
    ufw("allow", "out", "proto", "tcp", "to", "192.0.2.25", "port", "2525")
    assert [r["action"] for r in ufw.rules()] == ["deny", "allow"]
    assert _allowed(ufw, 2525, "192.0.2.25") is False
    ufw("delete", "deny", "out", "proto", "tcp", "to", "192.0.2.0/24", "port", "2525")
    assert _allowed(ufw, 2525, "192.0.2.25") is True


def test_a_comment_with_a_newline_cannot_fake_a_rule(ufw):
    fake = "x\n192.0.2.25 2525/tcp           ALLOW OUT   Anywhere"
    ufw("allow", "out", "proto", "tcp", "to", "192.0.2.99", "port", "2525", "comment", fake)
    assert "192.0.2.25 2525/tcp" in ufw("show", "added")  # ufw prints it as a line
    (rule,) = ufw.rules()
    assert rule["dst"] == "192.0.2.99" and "\n" not in rule["comment"]
    assert _allowed(ufw, 2525, "192.0.2.25") is False


def test_a_long_ipv6_destination_is_read(ufw):
    ufw("allow", "out", "proto", "tcp", "to", LONG_V6, "port", "2525")
    assert _allowed(ufw, 2525, LONG_V6) is True


def test_a_v6_rule_does_not_allow_ipv4(ufw):
    ufw("allow", "out", "proto", "tcp", "to", "::/0", "port", "2525")
    assert [r["v6"] for r in ufw.rules()] == [True]
    assert _allowed(ufw, 2525, "192.0.2.25") is False
    assert _allowed(ufw, 2525, None) is False


def test_a_rule_for_any_address_covers_both_families(ufw):
    ufw("allow", "out", "proto", "tcp", "to", "any", "port", "4505")
    assert [r["v6"] for r in ufw.rules()] == [False, True]
    assert _allowed(ufw, 4505, None) is True
    assert _allowed(ufw, 4505, "2001:db8::5") is True


def test_an_interface_limited_allow_does_not_count(ufw):
    ufw("allow", "out", "on", "eth1", "proto", "tcp", "to", "192.0.2.25", "port", "2525")
    assert ufw.rules()[0]["interface_out"] == "eth1"
    assert _allowed(ufw, 2525, "192.0.2.25") is False


def test_a_source_limited_allow_does_not_count(ufw):
    ufw("allow", "out", "proto", "tcp", "from", "10.9.9.9", "to", "192.0.2.25", "port", "2525")
    assert _allowed(ufw, 2525, "192.0.2.25") is False


def test_what_certsync_adds_is_then_found(ufw):
    ufw(*ufw_mod.rule(2525, "192.0.2.25", "certsync: relay"))
    (rule,) = ufw.rules()
    assert rule["comment"] == "certsync: relay"
    assert _allowed(ufw, 2525, "192.0.2.25") is True
