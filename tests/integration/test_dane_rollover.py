"""
A key change rolled over through RFC 2136 and through Cloudflare's API, end to
end: the real certbot makes the new key (a re-issue from NPM's UI), Knot takes
the signed updates (directly, or written through by the Cloudflare API
stand-in), the mailcow-like stack serves the pair. Port 25 and the zone are
sampled all along: what port 25 serves always has a TLSA record.
"""

import json
import threading
import time

import pytest
from support.dnsproxy import ClosingAfterUpdate

from harness.caddy import Caddy
from harness.cloudflare_api import CloudflareApi
from harness.knot import UpdatableDNS
from harness.mailcow_stack import HOST, NAMES

# its subject is the rollover against a real Knot, not the Salt release
pytestmark = pytest.mark.one_release

TLSA_NAME = f"_25._tcp.{HOST}"
TTL = 2
WRONG_SECRET = "d3Jvbmcgc2VjcmV0IGtleQ=="  # noqa: S105 (a test's wrong TSIG secret)
CF_TOKEN = "cf-rollover-token-" + "3" * 22


@pytest.fixture
def knot(tmp_path):
    server = UpdatableDNS(tmp_path / "knot")
    yield server
    server.stop()


@pytest.fixture
def rollover(salt_call, make_stack, npm_certbot, knot):
    """A stack serving NPM's certificate, its 3 1 1 record published, then a new key at NPM."""
    npm_certbot.issue(5, NAMES)
    first = npm_certbot.current(5)
    stack = make_stack(first)
    old_record = salt_call("certsync.tlsa", str(npm_certbot.lineage(5) / "cert.pem")).data
    knot.start([f"_25._tcp.mail IN TLSA {old_record}"], ttl=TTL)
    npm_certbot.issue(5, [*NAMES, "webmail.example.test"])
    new = npm_certbot.current(5)
    new_record = salt_call("certsync.tlsa", str(npm_certbot.lineage(5) / "cert.pem")).data
    assert new_record != old_record
    return stack, first, new, old_record, new_record


class Sampler(threading.Thread):
    """Port 25's served key against the zone's TLSA records, as fast as it goes (bounded)."""

    def __init__(self, stack, knot, limit=120):
        super().__init__(daemon=True)
        self.stack, self.knot, self.limit = stack, knot, limit
        self.samples, self.failed = [], []
        self.stop_flag = threading.Event()

    def run(self):
        start = time.monotonic()
        while not self.stop_flag.is_set() and time.monotonic() - start < self.limit:
            records = self.knot.tlsa(TLSA_NAME)  # the zone first, then the wire
            served = self.stack.fetch("smtp")
            if served["ok"]:
                self.samples.append((time.monotonic(), served["spki_sha256"], records))
            else:  # no certificate at all in this moment (postfix reloading): nothing to match
                self.failed.append(served["error"])

    def finish(self):
        self.stop_flag.set()
        self.join(30)
        return self.samples


def _deploy(salt_call, stack, npm_certbot, knot, secret=None, source=None, **dane):
    """certsync.deployed with DANE through ``knot``; the TSIG secret (the server's, or
    ``secret``) only in the consumer's pillar, as the formula has it. The source: NPM's
    lineage, or ``source`` (a mapping of another kind)."""
    update = {"tsig_secret": secret or knot.secret}
    source = json.dumps(source) if source else str(npm_certbot.lineage(5))
    with salt_call.pillar({"certsync": {"consumer_defaults": {"dane": {"update": update}}}}):
        return salt_call.state(
            **stack.state_args(source=source, dane=json.dumps(knot.dane(**dane)))
        )


def _all_matched(sampler, old_record, new_record):
    """Every sample of port 25 had a TLSA record for its key; the key changed over."""
    samples = sampler.finish()
    unmatched = [
        (t, spki, records) for t, spki, records in samples if f"3 1 1 {spki}" not in records
    ]
    assert unmatched == []
    served = [spki for _, spki, _ in samples]
    old_spki, new_spki = old_record.split()[-1], new_record.split()[-1]
    assert served[0] == old_spki and served[-1] == new_spki
    duration = samples[-1][0] - samples[0][0]
    assert len(samples) >= 10 * duration, f"{len(samples)} samples in {duration:.1f}s"
    assert len(sampler.failed) <= len(samples) // 10, sampler.failed
    print(
        f"{len(samples)} samples in {duration:.1f}s, all matched; "
        f"{len(sampler.failed)} handshakes failed during the reload: {sampler.failed}"
    )


def test_a_key_change_rolls_over_with_a_match_at_every_sample(
    salt_call, npm_certbot, knot, rollover
):
    stack, _, new, old_record, new_record = rollover
    sampler = Sampler(stack, knot)
    sampler.start()
    time.sleep(0.5)
    code, ret = _deploy(salt_call, stack, npm_certbot, knot, max_wait=30)
    time.sleep(0.5)
    _all_matched(sampler, old_record, new_record)
    assert (code, ret["result"]) == (0, True), ret["comment"]
    assert ret["changes"]["tlsa"] == {"added": new_record, "removed": [old_record]}
    assert f"DANE: published {TLSA_NAME}. IN TLSA {new_record}" in ret["comment"]
    assert (
        "DANE: every authoritative server (1) serves it and its TTL (2 s) passed"
        in (ret["comment"])
    )
    assert knot.tlsa(TLSA_NAME) == {new_record}
    assert set(stack.served().values()) == {new.fingerprint}

    code, ret = _deploy(salt_call, stack, npm_certbot, knot, max_wait=30)
    assert (code, ret["result"], ret["changes"]) == (0, True, {}), ret


def test_a_key_change_rolls_over_through_cloudflare_with_a_match_at_every_sample(
    salt_call, npm_certbot, knot, rollover
):
    """The provider of the deployment we replace: the same rollover through Cloudflare's
    API (the official library, strict response validation), the API token only in
    the consumer's pillar."""
    stack, _, new, old_record, new_record = rollover
    cloudflare = CloudflareApi(knot, auto_ttl=TTL).start()
    try:
        cloudflare.token(CF_TOKEN)
        usage, selector, mtype, cert = old_record.split()
        data = {"usage": int(usage), "selector": int(selector), "matching_type": int(mtype)}
        cloudflare.seed(TLSA_NAME, {**data, "certificate": cert}, write_through=False)
        pillar = {"certsync": {"consumer_defaults": {"dane": {"update": {"api_token": CF_TOKEN}}}}}
        source = str(npm_certbot.lineage(5))
        dane = json.dumps(cloudflare.dane(max_wait=30))
        sampler = Sampler(stack, knot)
        sampler.start()
        time.sleep(0.5)
        with salt_call.pillar(pillar):
            code, ret = salt_call.state(**stack.state_args(source=source, dane=dane))
        time.sleep(0.5)
        _all_matched(sampler, old_record, new_record)
    finally:
        cloudflare.stop()
    assert (code, ret["result"]) == (0, True), ret["comment"]
    assert ret["changes"]["tlsa"] == {"added": new_record, "removed": [old_record]}
    assert knot.tlsa(TLSA_NAME) == {new_record}
    assert [r["content"] for r in cloudflare.records.values()] == [new_record]
    assert set(stack.served().values()) == {new.fingerprint}
    assert CF_TOKEN not in json.dumps(ret)


def test_caddys_new_key_rolls_over_with_a_match_at_every_sample(
    salt_call, make_stack, pebble, knot, tmp_path
):
    """The second source kind: Caddy makes a new key for a new certificate (2.7 always,
    2.6 when its stored key is gone, as here); the same gate and rollover apply."""
    caddy = Caddy(tmp_path / "caddy", pebble, HOST)
    caddy.start()
    try:
        first = caddy.current()
        stack = make_stack(first)
        old_record = salt_call("certsync.tlsa", str(caddy.crt)).data
        knot.start([f"_25._tcp.mail IN TLSA {old_record}"], ttl=TTL)
        caddy.new_key()
        new = caddy.current()
    finally:
        caddy.stop()
    new_record = salt_call("certsync.tlsa", str(caddy.crt)).data
    assert new_record != old_record
    source = {"kind": "caddy", "storage": str(caddy.storage)}
    sampler = Sampler(stack, knot)
    sampler.start()
    time.sleep(0.5)
    code, ret = _deploy(salt_call, stack, None, knot, source=source, max_wait=30)
    time.sleep(0.5)
    _all_matched(sampler, old_record, new_record)
    assert (code, ret["result"]) == (0, True), ret["comment"]
    assert ret["changes"]["tlsa"] == {"added": new_record, "removed": [old_record]}
    assert f"from {caddy.site_dir} " in ret["comment"]
    assert knot.tlsa(TLSA_NAME) == {new_record}
    assert set(stack.served().values()) == {new.fingerprint}


def test_a_wrong_tsig_key_changes_nothing(salt_call, npm_certbot, knot, rollover):
    stack, first, _, old_record, _ = rollover
    before = (stack.ssl_dir / "cert.pem").read_bytes()
    code, ret = _deploy(salt_call, stack, npm_certbot, knot, secret=WRONG_SECRET)
    assert code != 0
    assert ret["result"] is False
    assert ret["changes"] == {}
    assert "did not accept TSIG key certsync-update" in ret["comment"] or (
        "refused: NOTAUTH" in ret["comment"]
    ), ret["comment"]
    assert WRONG_SECRET not in ret["comment"]
    assert knot.secret not in ret["comment"]
    assert knot.tlsa(TLSA_NAME) == {old_record}
    assert (stack.ssl_dir / "cert.pem").read_bytes() == before
    assert set(stack.served().values()) == {first.fingerprint}


def test_the_dns_server_stopped_mid_cycle(salt_call, npm_certbot, knot, rollover):
    stack, first, new, old_record, new_record = rollover
    before = (stack.ssl_dir / "cert.pem").read_bytes()

    code, ret = _deploy(salt_call, stack, npm_certbot, knot, max_wait=0)
    assert ret["result"] is False, ret
    assert ret["changes"] == {"tlsa": {"added": new_record}}
    assert "DANE rollover under way" in ret["comment"]
    assert knot.tlsa(TLSA_NAME) == {old_record, new_record}
    last = salt_call("certsync_monitor.last_deploy", str(stack.ssl_dir)).data
    assert last["dane_pending"] == f"{TLSA_NAME}. IN TLSA {new_record}"

    knot.stop()
    code, ret = _deploy(salt_call, stack, npm_certbot, knot, max_wait=5)
    assert (code != 0, ret["result"], ret["changes"]) == (True, False, {}), ret
    assert ret["comment"].startswith("Nothing deployed: cannot look up TLSA")
    assert (stack.ssl_dir / "cert.pem").read_bytes() == before
    assert set(stack.served().values()) == {first.fingerprint}

    knot.start()
    assert knot.tlsa(TLSA_NAME) == {old_record, new_record}
    code, ret = _deploy(salt_call, stack, npm_certbot, knot, max_wait=30)
    assert (code, ret["result"]) == (0, True), ret["comment"]
    assert ret["changes"]["tlsa"] == {"removed": [old_record]}
    assert knot.tlsa(TLSA_NAME) == {new_record}
    assert set(stack.served().values()) == {new.fingerprint}


def test_a_server_closing_the_connection_after_the_final_delete(
    salt_call, npm_certbot, knot, rollover
):
    """The delete of the old record is done, but the server closes TCP instead of
    answering (dnspython: EOFError): the state says what happened on the host."""
    stack, _, new, old_record, new_record = rollover
    proxy = ClosingAfterUpdate(knot.port, close_on=2)  # the add answered, the delete not
    try:
        update = {**knot.update_settings(), "port": proxy.port}
        code, ret = _deploy(salt_call, stack, npm_certbot, knot, max_wait=30, update=update)
    finally:
        proxy.stop()
    assert (code != 0, ret["result"]) == (True, False), ret
    assert ret["changes"]["new"]["fingerprint"] == new.fingerprint  # installed, and served:
    assert set(stack.served().values()) == {new.fingerprint}
    assert "DANE: the old TLSA record is still published" in ret["comment"]
    assert "failed: the server closed the connection without an answer" in ret["comment"]
    assert "Nothing deployed" not in ret["comment"]
    assert salt_call("certsync_monitor.last_deploy", str(stack.ssl_dir)).data["installed"] is True
    assert knot.tlsa(TLSA_NAME) == {new_record}  # the server did delete it

    code, ret = _deploy(salt_call, stack, npm_certbot, knot, max_wait=30)  # the next run
    assert (code, ret["result"]) == (0, True), ret["comment"]
    assert ret["changes"] == {"tlsa": {"removed": [old_record]}}
