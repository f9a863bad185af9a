"""
Outbound relay against real servers: the mailcow look-alike's postfix relays
as mailcow's relayhost setting makes it ([host]:port, SASL, TLS required) to a
real postfix smarthost that demands STARTTLS and AUTH (tests/support/relay.py).
mailcow.relay_test and mailcow.relay_status through salt-call --local.
"""

import pytest
from support.relay import NAME, PORT

from harness.mailcow_stack import HOST, NAMES
from harness.pki import TestCA

pytestmark = pytest.mark.one_release  # its subject does not change with the Salt release

RELAY = f"{NAME}:{PORT}"
TO = "someone@example.net"
#: A password the relay does not know (rotated at the relay, not in mailcow).
ROTATED = "rotated-elsewhere"


@pytest.fixture
def relayed(make_relay, make_stack, ca):
    """A mailcow stack whose postfix relays through a smarthost it trusts."""
    relay = make_relay(ca.leaf(NAME))
    stack = make_stack(ca.leaf(HOST, sans=NAMES), relay=relay, relay_ca_pem=ca.root_pem())
    return stack, relay


def _call(salt_call, fun, stack, *args):
    ret = salt_call(fun, *args, f"path={stack.root}")
    return ret.returncode, ret.data


def test_a_test_send_leaves_through_the_relay_over_trusted_tls(salt_call, relayed):
    stack, relay = relayed
    code, ret = _call(salt_call, "mailcow.relay_test", stack, TO, f"relay={RELAY}", "timeout=60")
    assert code == 0, ret
    assert ret["ok"] is True
    assert (ret["status"], ret["relay"], ret["tls"]) == ("sent", RELAY, "Trusted")
    assert ret["sender"] == "postmaster@example.test"
    assert "problem" not in ret
    assert len(relay.received()) == 1
    code, status = _call(salt_call, "mailcow.relay_status", stack, f"relay={RELAY}")
    assert code == 0, status
    row = status["relays"][RELAY]
    assert (row["sent"], row["deferred"], row["bounced"]) == (1, 0, 0)
    assert row["last_success"] and row["failing_since"] is None
    assert status["queue"]["messages"] == 0


def test_a_wrong_password_fails_with_postfix_reason(salt_call, relayed):
    stack, relay = relayed
    stack.set_relay(password=ROTATED)
    code, ret = _call(salt_call, "mailcow.relay_test", stack, TO, f"relay={RELAY}", "timeout=60")
    assert code != 0
    assert ret["ok"] is False
    assert ret["problem"] == "authentication failed"
    assert ret["status"] in ("deferred", "bounced")
    assert "SASL authentication failed" in ret["reason"]
    assert ROTATED not in str(ret)
    assert relay.received() == []
    code, status = _call(salt_call, "mailcow.relay_status", stack)
    row = status["relays"][RELAY]
    assert row["sent"] == 0 and row["last_failure"]["problem"] == "authentication failed"
    assert row["failing_since"] == row["last_failure"]["time"]


def test_relay_down_is_connection_refused_and_the_message_waits_in_the_queue(salt_call, relayed):
    stack, _ = relayed
    stack.set_relay(relayhost=f"[{NAME}]:{PORT + 1}")
    code, ret = _call(
        salt_call, "mailcow.relay_test", stack, TO, f"relay={NAME}", "timeout=60", "keep=True"
    )
    assert code != 0
    assert (ret["problem"], ret["status"]) == ("connection refused", "deferred")
    assert f"{NAME}:{PORT + 1}" == ret["relay"]
    code, status = _call(salt_call, "mailcow.relay_status", stack)
    queue = status["queue"]
    assert queue["by_queue"].get("deferred") == 1
    assert queue["oldest_deferred_age"] >= 0
    assert "Connection refused" in queue["oldest_deferred_reason"]


def test_an_untrusted_relay_certificate_fails_the_test(salt_call, make_relay, make_stack, ca):
    stranger = TestCA("not trusted")
    relay = make_relay(stranger.leaf(NAME))
    stack = make_stack(ca.leaf(HOST, sans=NAMES), relay=relay, relay_ca_pem=ca.root_pem())
    code, ret = _call(salt_call, "mailcow.relay_test", stack, TO, f"relay={RELAY}", "timeout=60")
    assert code != 0
    # mailcow requires TLS but does not verify the relay: postfix sent it, untrusted
    assert (ret["status"], ret["tls"]) == ("sent", "Untrusted")
    assert ret["problem"].startswith("TLS not trusted")
    code, ret = _call(
        salt_call, "mailcow.relay_test", stack, TO, f"relay={RELAY}", "verify_tls=False"
    )
    assert (code, ret["ok"]) == (0, True)


def test_not_through_the_expected_relay(salt_call, relayed):
    stack, _ = relayed
    code, ret = _call(
        salt_call, "mailcow.relay_test", stack, TO, "relay=mail.smtp2go.com:2525", "timeout=60"
    )
    assert code != 0
    assert ret["status"] == "sent"
    assert ret["problem"] == f"not relayed through mail.smtp2go.com:2525 (went to {RELAY})"


@pytest.mark.parametrize(
    "args, error",
    [
        (["to=-oi@example.net"], "to must be a plain mail address"),
        (["a@b.example", "sender=x y@example.test"], "sender must be a plain mail address"),
        (["a@b.example", "relay=bad host:25"], "relay must be 'host:port'"),
        (["a@b.example", "timeout=0"], "timeout must be between"),
    ],
)
def test_bad_arguments_name_the_problem(salt_call, tmp_path, args, error):
    ret = salt_call("mailcow.relay_test", *args, f"path={tmp_path}")
    assert ret.returncode != 0
    assert error in str(ret.data) + ret.stderr, ret
