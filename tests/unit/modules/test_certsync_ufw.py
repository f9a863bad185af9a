"""Unit tests of certsync_ufw: ufw's rules files parsed (ufw 0.36's own tuple lines),
the rule's argv checked, presence decided from the rules in the order ufw matches them.
ufw itself writes them in tests/functional/test_ufw_rules.py and runs in the egress
integration test (tests/integration/test_egress.py)."""

import pytest
from salt.exceptions import SaltInvocationError

from harness.loader import UTILS, load_loader_module

ufw_mod = load_loader_module("modules", "certsync_ufw")


def _hex(text):
    return text.encode().hex()


#: Debian's ufw 0.36.2's user.rules (tuple lines; its iptables lines left out) with
#: certsync's rules and an operator's own, as `ufw allow/deny ...` wrote them.
RULES = f"""*filter
:ufw-user-input - [0:0]
### RULES ###

### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in
-A ufw-user-input -p tcp --dport 22 -j ACCEPT

### tuple ### allow tcp 2525 10.1.2.3 any 0.0.0.0/0 out comment={_hex("certsync: relay")}

### tuple ### allow tcp 4505 0.0.0.0/0 any 0.0.0.0/0 out comment={_hex("certsync: salt master")}

### tuple ### deny any 53 0.0.0.0/0 any 0.0.0.0/0 out

### tuple ### route:allow tcp 8080 0.0.0.0/0 any 0.0.0.0/0 in_eth0!out_eth1

### tuple ### allow_log tcp 587 0.0.0.0/0 any 0.0.0.0/0 out_eth0

### END RULES ###
"""
RULES6 = """### tuple ### allow tcp 4505 ::/0 any ::/0 out
"""


@pytest.fixture
def configure_loader_modules():
    return {ufw_mod: {"__salt__": {}, "__utils__": UTILS, "__opts__": {"test": False}}}


def _rules():
    return [*ufw_mod.parse_rules(RULES), *ufw_mod.parse_rules(RULES6, v6=True)]


def test_the_rules_files_are_parsed_rule_by_rule_in_order():
    rules = [
        (r["action"], r["proto"], r["dport"], r["dst"], r["direction"], r["v6"], r["comment"])
        for r in _rules()
    ]
    assert rules == [
        ("allow", "tcp", "22", "0.0.0.0/0", "in", False, None),
        ("allow", "tcp", "2525", "10.1.2.3", "out", False, "certsync: relay"),
        ("allow", "tcp", "4505", "0.0.0.0/0", "out", False, "certsync: salt master"),
        ("deny", "any", "53", "0.0.0.0/0", "out", False, None),
        ("allow", "tcp", "8080", "0.0.0.0/0", "in", False, None),
        ("allow", "tcp", "587", "0.0.0.0/0", "out", False, None),
        ("allow", "tcp", "4505", "::/0", "out", True, None),
    ]
    route, logged = _rules()[4], _rules()[5]
    assert (route["route"], route["interface_in"], route["interface_out"]) == (
        True,
        "eth0",
        "eth1",
    )
    assert (logged["log"], logged["interface_out"]) == ("log", "eth0")


def test_a_comment_is_hex_decoded_and_escaped_never_a_line():
    hexed = _hex("a\nb\x1b")
    text = f"### tuple ### allow tcp 25 0.0.0.0/0 any 0.0.0.0/0 out comment={hexed}\n"
    (rule,) = ufw_mod.parse_rules(text)
    assert rule["comment"] == "a\\nb\\x1b"


@pytest.mark.parametrize(
    "line",
    [
        "### tuple ### allow tcp 25",
        "### tuple ### allow tcp 25 0.0.0.0/0 any 0.0.0.0/0 sideways",
        "# ### tuple ### allow tcp 25 0.0.0.0/0 any 0.0.0.0/0 out",
        "-A ufw-user-output -p tcp --dport 25 -j ACCEPT",
    ],
)
def test_lines_that_are_not_rule_tuples_are_skipped(line):
    assert ufw_mod.parse_rules(line) == []


@pytest.mark.parametrize(
    ("port", "address", "present"),
    [
        (2525, "10.1.2.3", True),
        (2525, None, False),  # a rule for one address does not allow any address
        (4505, None, True),
        (4505, "10.1.2.3", True),  # within a rule for any address
        (4505, "2001:db8::1", True),  # the v6 rule
        (53, None, False),  # denied, not allowed
        (22, None, False),  # in, not out
        (8080, None, False),  # a route rule
        (587, None, False),  # on one interface only
    ],
)
def test_presence_is_decided_from_the_rules_in_order(port, address, present):
    assert ufw_mod.allowed_out(port, address, rules=_rules()) is present


def _tuple(action, dport, dst, direction="out", src=None, proto="tcp"):
    src = src or ("::/0" if ":" in dst else "0.0.0.0/0")
    return f"### tuple ### {action} {proto} {dport} {dst} any {src} {direction}\n"


@pytest.mark.parametrize(
    ("lines", "v6", "port", "address", "present"),
    [
        ([_tuple("deny", 2525, "10.1.2.3"), _tuple("allow", 2525, "10.1.2.3")], False,
         2525, "10.1.2.3", False),  # first match: the deny
        ([_tuple("reject", "any", "0.0.0.0/0"), _tuple("allow", 2525, "10.1.2.3")], False,
         2525, "10.1.2.3", False),
        ([_tuple("limit", 2525, "10.1.2.3"), _tuple("allow", 2525, "10.1.2.3")], False,
         2525, "10.1.2.3", False),
        ([_tuple("deny", 2525, "10.9.9.9"), _tuple("allow", 2525, "10.1.2.3")], False,
         2525, "10.1.2.3", True),  # a deny for another address does not match
        ([_tuple("allow", 2525, "10.1.2.3", "out_eth1"), _tuple("deny", 2525, "0.0.0.0/0")],
         False, 2525, "10.1.2.3", False),  # allowed on one interface only
        ([_tuple("allow", 2525, "10.1.2.3", src="10.9.9.9")], False, 2525, "10.1.2.3", False),
        ([_tuple("allow", 2525, "2001:db8:1234:5678:9abc:def0:1234:5678")], True,
         2525, "2001:db8:1234:5678:9abc:def0:1234:5678", True),  # a long IPv6 destination
        ([_tuple("allow", 2525, "::/0")], True, 2525, "10.1.2.3", False),  # v6 only
        ([_tuple("allow", 2525, "::/0")], True, 2525, None, False),
        ([_tuple("allow", "2000:3000", "10.0.0.0/8")], False, 2525, "10.1.2.3", True),
        ([_tuple("allow", "25,587,2525", "10.1.2.3")], False, 2525, "10.1.2.3", True),
        ([_tuple("allow", 2525, "10.1.2.0/28")], False, 2525, "10.1.2.0/24", False),
        ([_tuple("allow", 2525, "10.1.2.3", proto="udp")], False, 2525, "10.1.2.3", False),
        ([_tuple("allow", 2525, "10.1.2.3", proto="any")], False, 2525, "10.1.2.3", True),
    ],
)  # fmt: skip
def test_the_first_rule_that_can_match_decides(lines, v6, port, address, present):
    rules = ufw_mod.parse_rules("".join(lines), v6=v6)
    assert ufw_mod.allowed_out(port, address, rules=rules) is present


def test_the_shown_command_is_shell_quoted():
    argv = ufw_mod.rule(2525, "10.1.2.3", "certsync: relay; $(reboot)")
    assert ufw_mod.command(argv) == (
        "ufw allow out proto tcp to 10.1.2.3 port 2525 comment 'certsync: relay; $(reboot)'"
    )


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
