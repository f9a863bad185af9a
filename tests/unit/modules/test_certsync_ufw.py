"""Unit tests of certsync_ufw: ``ufw status`` parsed (ufw 0.36's own output), the rule's
argv checked, presence decided from the parsed rules. ufw itself runs in the egress
integration test (tests/integration/test_egress.py)."""

import pytest
from salt.exceptions import SaltInvocationError

from harness.loader import UTILS, load_loader_module

ufw_mod = load_loader_module("modules", "certsync_ufw")

#: What Debian's ufw 0.36.2 prints with certsync's rules and an operator's own.
ACTIVE = """Status: active

To                         Action      From
--                         ------      ----
22/tcp                     ALLOW       Anywhere
10.1.2.3 2525/tcp          ALLOW OUT   Anywhere                   # certsync: relay
4505/tcp                   ALLOW OUT   Anywhere                   # certsync: salt master # 2
53                         DENY OUT    Anywhere
22/tcp (v6)                ALLOW       Anywhere (v6)
4505/tcp (v6)              ALLOW OUT   Anywhere (v6)              # certsync: salt master # 2
"""


@pytest.fixture
def configure_loader_modules():
    return {ufw_mod: {"__salt__": {}, "__utils__": UTILS, "__opts__": {"test": False}}}


def test_an_active_status_is_parsed_rule_by_rule():
    parsed = ufw_mod.parse_status(ACTIVE)
    assert parsed["active"] is True
    rules = [
        (r["address"], r["port"], r["proto"], r["v6"], r["action"], r["direction"], r["comment"])
        for r in parsed["rules"]
    ]
    assert rules == [
        (None, "22", "tcp", False, "allow", "in", None),
        ("10.1.2.3", "2525", "tcp", False, "allow", "out", "certsync: relay"),
        (None, "4505", "tcp", False, "allow", "out", "certsync: salt master # 2"),
        (None, "53", None, False, "deny", "out", None),
        (None, "22", "tcp", True, "allow", "in", None),
        (None, "4505", "tcp", True, "allow", "out", "certsync: salt master # 2"),
    ]


def test_an_inactive_status_has_no_rules():
    assert ufw_mod.parse_status("Status: inactive\n") == {"active": False, "rules": []}


@pytest.mark.parametrize(
    ("port", "address", "present"),
    [
        (2525, "10.1.2.3", True),
        (2525, None, False),  # by address only: a rule for any address is another rule
        (4505, None, True),
        (4505, "10.1.2.3", False),
        (53, None, False),  # denied, not allowed
        (22, None, False),  # in, not out
    ],
)
def test_presence_is_decided_from_the_parsed_rules(port, address, present):
    rules = ufw_mod.parse_status(ACTIVE)["rules"]
    assert ufw_mod.allowed_out(port, address, rules=rules) is present


def test_the_rule_is_an_argv_list():
    assert ufw_mod.rule(2525, "192.0.2.25", "certsync: relay") == [
        "allow", "out", "proto", "tcp", "to", "192.0.2.25", "port", "2525",
        "comment", "certsync: relay",
    ]  # fmt: skip
    assert ufw_mod.rule(4505)[5] == "any"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0,), "port 0 is out of range"),
        ((25, "relay.example; rm -rf /"), "is not an IP address or network"),
        ((25, None, "two\nlines"), "comment must be printable"),
        ((25, None, "x" * 101), "at most 100 characters"),
    ],
)
def test_a_bad_rule_is_refused_by_name(args, message):
    with pytest.raises(SaltInvocationError, match=message):
        ufw_mod.rule(*args)


def test_without_ufw_it_is_not_active(monkeypatch):
    monkeypatch.setattr(ufw_mod.salt.utils.path, "which", lambda name: None)
    assert ufw_mod.active() is False
