"""
Reading postfix-mailcow's log (loader mocked): delivery attempts through the
relay, what went wrong, the TLS postfix logged. The lines are as the
look-alike's real postfix 3.7 wrote them, with Docker's timestamps.
"""

import pytest
from salt.exceptions import SaltInvocationError

from harness.loader import mailcow_mod

STAMP = "2026-11-26T15:10:54.078723712Z Nov 26 15:10:54 mail "
TLS = (
    STAMP + "postfix/smtp[132]: Trusted TLS connection established to "
    "relay.example.test[192.168.16.2]:2525: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384"
)
SENT = (
    STAMP + "postfix/smtp[132]: 0768518A1A4: to=<x@example.net>, "
    "relay=relay.example.test[192.168.16.2]:2525, delay=0.08, delays=0.02/0.01/0.04/0.01, "
    "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 1708318A1AB)"
)
AUTH = (
    "2026-11-26T15:11:01.161372006Z Nov 26 15:11:01 mail postfix/smtp[170]: 9872518A1AF: "
    "to=<x@example.net>, relay=relay.example.test[192.168.16.2]:2525, delay=1.5, "
    "delays=0.02/0.02/1.5/0, dsn=5.7.8, status=bounced (SASL authentication failed; server "
    "relay.example.test[192.168.16.2] said: 535 5.7.8 Error: authentication failed: "
    "(reason unavailable))"
)
REFUSED = (
    "2026-11-26T15:11:04.662048128Z Nov 26 15:11:04 mail postfix/smtp[209]: 9AA5F18A1B6: "
    "to=<x@example.net>, relay=none, delay=0.03, delays=0.01/0.02/0/0, dsn=4.4.1, "
    "status=deferred (connect to relay.example.test[192.168.16.2]:2526: Connection refused)"
)
NOT_FOUND = (
    "2026-11-26T15:11:09.667637339Z Nov 26 15:11:09 mail postfix/smtp[249]: 9C4BE18A1BC: "
    "to=<x@example.net>, relay=none, delay=0.03, delays=0.01/0.02/0/0, dsn=4.3.5, "
    "status=deferred (Host or domain name not found. Name service error for "
    "name=nowhere.example.test type=A: Host not found)"
)
LOCAL = (
    "2026-11-26T15:12:00.000000000Z Nov 26 15:12:00 mail postfix/lmtp[300]: 1111118A1BC: "
    "to=<me@example.test>, relay=dovecot[172.22.1.250]:24, delay=0.1, delays=0/0/0/0.1, "
    "dsn=2.0.0, status=sent (250 2.0.0 <me@example.test> Saved)"
)


def test_a_sent_attempt():
    attempt = mailcow_mod._attempt(SENT)
    assert attempt == {
        "time": pytest.approx(1795705854.0787237),
        "agent": "smtp",
        "qid": "0768518A1A4",
        "pid": "132",
        "relay": "relay.example.test:2525",
        "dsn": "2.0.0",
        "status": "sent",
        "reason": "250 2.0.0 Ok: queued as 1708318A1AB",
    }


@pytest.mark.parametrize(
    ("line", "relay", "problem"),
    [
        (AUTH, "relay.example.test:2525", "authentication failed"),
        (REFUSED, "relay.example.test:2526", "connection refused"),
        (NOT_FOUND, "nowhere.example.test", "relay host not found"),
    ],
)
def test_failures_name_the_relay_and_the_problem(line, relay, problem):
    attempt = mailcow_mod._attempt(line)
    assert attempt["relay"] == relay
    assert mailcow_mod._problem(attempt["reason"]) == problem


def test_other_lines_are_no_attempts():
    assert mailcow_mod._attempt(TLS) is None
    assert mailcow_mod._attempt("garbage") is None


def test_rows_count_per_relay_and_track_the_failing_episode():
    attempts = [mailcow_mod._attempt(line) for line in (SENT, AUTH, AUTH, REFUSED)]
    rows = mailcow_mod._relay_rows(attempts, None)
    assert set(rows) == {"relay.example.test:2525", "relay.example.test:2526"}
    row = rows["relay.example.test:2525"]
    assert (row["sent"], row["deferred"], row["bounced"]) == (1, 0, 2)
    assert row["last_success"] == "2026-11-26T15:10:54Z"
    assert row["failing_since"] == "2026-11-26T15:11:01Z"
    assert row["last_failure"]["dsn"] == "5.7.8"
    rows = mailcow_mod._relay_rows([*attempts, attempts[0]], "relay.example.test:2525")
    assert set(rows) == {"relay.example.test:2525"}
    assert rows["relay.example.test:2525"]["failing_since"] is None  # a success ends it
    # by host only: both ports
    assert len(mailcow_mod._relay_rows(attempts, "relay.example.test")) == 2


def test_tls_level_is_the_one_the_delivering_process_logged():
    attempt = mailcow_mod._attempt(SENT)
    assert mailcow_mod._tls_level([TLS, SENT], attempt) == "Trusted"
    other = TLS.replace("[132]", "[999]").replace("Trusted", "Untrusted")
    assert mailcow_mod._tls_level([TLS, other, SENT], attempt) == "Trusted"
    assert mailcow_mod._tls_level([SENT], attempt) is None


def test_local_delivery_is_told_apart():
    assert mailcow_mod._attempt(LOCAL)["agent"] in mailcow_mod._LOCAL_AGENTS


@pytest.mark.parametrize(
    ("relay", "key"),
    [
        ("[mail.smtp2go.com]:2525", "mail.smtp2go.com:2525"),
        ("Mail.SMTP2GO.com:2525", "mail.smtp2go.com:2525"),
        ("mail.smtp2go.com", "mail.smtp2go.com"),
    ],
)
def test_relay_keys(relay, key):
    assert mailcow_mod._relay_key(relay) == key


@pytest.mark.parametrize("relay", ["", "host:port", "a b:25", ":25", 25, "host:\u00b2"])
def test_bad_relays_are_refused(relay):
    with pytest.raises(SaltInvocationError, match="relay must be 'host:port'"):
        mailcow_mod._relay_key(relay)


def test_judging_a_sent_attempt():
    attempt = mailcow_mod._attempt(SENT)
    judge = mailcow_mod._judge
    assert judge(attempt, "Trusted", "relay.example.test:2525", True) is None
    assert judge(attempt, "Untrusted", None, True).startswith("TLS not trusted")
    assert judge(attempt, "Untrusted", None, False) is None
    assert judge(attempt, None, None, True) == "sent to relay.example.test:2525 without TLS"
    assert judge(attempt, "Trusted", "mail.smtp2go.com:2525", True) == (
        "not relayed through mail.smtp2go.com:2525 (went to relay.example.test:2525)"
    )


FORGED = (
    STAMP
    + "postfix/smtpd[77]: warning: non-SMTP command from unknown[198.51.100.9]: "
    + SENT.removeprefix(STAMP.split(" ", 1)[0] + " ")
)


@pytest.mark.parametrize(
    "line",
    [
        FORGED,  # a client's text inside smtpd's warning
        STAMP + "postfix/smtpd[77]: NOQUEUE: reject: " + SENT.split("postfix/smtp[132]: ")[1],
        SENT.replace("mail postfix/smtp", "mail x postfix/smtp"),  # not at the header's place
        SENT.replace("[132]", "[1²]"),  # a pid in other digits than ASCII
        SENT + "\ntrailing",
    ],
    ids=["non-smtp-command", "other-tag-text", "shifted", "unicode-digit", "two-lines"],
)
def test_a_delivery_is_a_line_postfix_wrote_at_its_start(line):
    assert mailcow_mod._attempt(line) is None


def test_mailcows_enforced_tls_transport_is_counted():
    """smtp_enforced_tls logs as enforced-tls-smtp/smtp (master.cf's syslog_name)."""
    line = SENT.replace("postfix/smtp[132]", "enforced-tls-smtp/smtp[132]")
    attempt = mailcow_mod._attempt(line)
    assert (attempt["agent"], attempt["relay"], attempt["status"]) == (
        "smtp",
        "relay.example.test:2525",
        "sent",
    )
    tls = TLS.replace("postfix/smtp[132]", "enforced-tls-smtp/smtp[132]")
    assert mailcow_mod._tls_level([tls, line], attempt) == "Trusted"


class _Logs:
    def __init__(self, raw):
        self.raw = raw

    def logs(self, **_):
        return self.raw


def test_log_lines_end_at_a_newline_only():
    reply = SENT.replace("queued as", "queued\u2028as")
    lines = mailcow_mod._log_lines(_Logs(f"{TLS}\n{reply}\n".encode()), 0)
    assert lines == [TLS, reply]
    assert mailcow_mod._attempt(lines[1])["reason"] == "250 2.0.0 Ok: queued\u2028as 1708318A1AB"


@pytest.mark.parametrize(
    "address",
    [
        "victim@example.net\n",  # $ matched before it: the header block ended early
        "victim@example.net\nBcc: x@example.org",
        "victim@example.net\r",
        " victim@example.net",
        "victim@exa mple.net",
        "<victim@example.net>",
        "a" * 250 + "@example.net",
        ["victim@example.net"],
    ],
)
def test_a_test_message_goes_to_a_plain_address_only(address):
    with pytest.raises(SaltInvocationError, match="must be a plain mail address"):
        mailcow_mod._address(address, "to")
