"""
The DANE gate through salt-call --local, against a real authoritative DNS
server (NSD on a loopback port): a new key never goes live before a TLSA
record for it is published, and the old record is reported stale after.
"""

import json
import pathlib
import re
import time

import pytest
from support import cases

from harness.nsd import AuthoritativeDNS
from harness.pki import write_pair

# its subject is the TLSA gate against a real Knot, not the Salt release (the unit
# tests run the gate on both releases)
pytestmark = [pytest.mark.functional, pytest.mark.one_release]
HOST = cases.HOST
TLSA_NAME = f"_25._tcp.{HOST}"
TTL = 3  # the zone's TTL where a test waits it out


@pytest.fixture
def dns_server(tmp_path):
    server = AuthoritativeDNS(tmp_path / "nsd")
    yield server
    server.stop()


@pytest.fixture
def layout(tmp_path, ca):
    serving = ca.leaf(HOST, key_kind="ec-p384")
    return cases.make_layout(tmp_path, ca, serving), serving


def _tlsa(salt_call, path, *params):
    return salt_call("certsync.tlsa", str(path), *params).data


def _zone_line(record):
    return f"_25._tcp.mail IN TLSA {record}"


def _deploy(salt_call, layout, dns_server):
    return salt_call.state(
        name=layout.dest,
        hostname=HOST,
        source=layout.source,
        dane=json.dumps(dns_server.settings()),
    )


def test_a_new_key_waits_for_its_tlsa_record(salt_call, layout, ca, dns_server):
    layout, _ = layout
    old_record = _tlsa(salt_call, f"{layout.dest}/cert.pem")
    dns_server.publish([_zone_line(old_record)])
    new = ca.leaf(HOST, key_kind="ec-p384")
    write_pair(layout.source, new, "fullchain.pem", "privkey.pem")
    new_record = _tlsa(salt_call, f"{layout.source}/fullchain.pem")
    before = cases.snapshot(layout.root)

    code, ret = _deploy(salt_call, layout, dns_server)
    assert code != 0
    assert ret["result"] is False
    assert ret["changes"] == {}
    assert f"publish beside the current record: {TLSA_NAME}. IN TLSA {new_record}" in ret["comment"]
    assert "wait the TTL (300 s)" in ret["comment"]
    assert f"then remove the old record: {old_record}" in ret["comment"]
    assert cases.snapshot(layout.root) == before
    last = salt_call("certsync_monitor.last_deploy", layout.dest).data
    assert last["dane_pending"] == f"{TLSA_NAME}. IN TLSA {new_record}"  # the alert's detail

    # published by hand: not deployed before every authoritative server has served it
    # for its TTL (RFC 7671 8.1), however soon the next run comes; the state says how long
    dns_server.publish([_zone_line(old_record), _zone_line(new_record)], ttl=TTL)
    before = cases.snapshot(layout.dest)
    code, ret = _deploy(salt_call, layout, dns_server)
    assert (code != 0, ret["result"], ret["changes"]) == (True, False, {}), ret
    assert f"{TLSA_NAME}. IN TLSA {new_record} is served by every authoritative" in ret["comment"]
    assert re.search(rf"until its TTL \({TTL} s\) passes: [1-{TTL}] s left", ret["comment"])
    assert cases.snapshot(layout.dest) == before
    time.sleep(TTL + 0.5)
    code, ret = _deploy(salt_call, layout, dns_server)
    assert (code, ret["result"]) == (0, True), ret["comment"]
    assert ret["changes"]["new"]["fingerprint"] == new.fingerprint
    assert f"TTL ({TTL} s) passed" in ret["comment"]

    check = salt_call(
        "maildns.tlsa_check",
        HOST,
        json.dumps({"deployed": f"{layout.dest}/cert.pem"}),
        "nameservers=127.0.0.1",
        f"dns_port={dns_server.port}",
    ).data
    assert check["stale"] == [old_record]
    assert check["matching"] == {"deployed": True}
    status = _status(salt_call, layout, dns_server)
    assert status["tlsa"] == {
        "name": TLSA_NAME,
        "deployed_matches": True,
        "matching_records": [new_record],
        "stale": [old_record],
    }


def _status(salt_call, layout, dns_server):
    """certsync.status on this minion as a DANE consumer of the deployed pair."""
    pillar_root = pathlib.Path(layout.root) / "pillar"
    mailcow_dir = pathlib.Path(layout.root) / "mailcow"  # the pair is in data/assets/ssl
    pillar_root.mkdir()
    (pillar_root / "top.sls").write_text(json.dumps({"base": {"*": ["certsync"]}}))
    consumer = {
        "mailcow_dir": str(mailcow_dir),
        "endpoints": [],
        "dane": {"nameservers": ["127.0.0.1"], "dns_port": dns_server.port},
    }
    pillar = {"certsync": {"hostname": HOST, "consumers": {"certsync-functional": consumer}}}
    (pillar_root / "certsync.sls").write_text(json.dumps(pillar))
    ret = salt_call(f"--pillar-root={pillar_root}", "certsync_status.report")
    assert ret.returncode == 0, ret
    return ret.data


def test_a_same_key_renewal_passes_a_3_1_1_record(salt_call, layout, ca, dns_server):
    layout, serving = layout
    dns_server.publish([_zone_line(_tlsa(salt_call, f"{layout.dest}/cert.pem"))])
    renewed = ca.leaf(HOST, key=serving.key)
    write_pair(layout.source, renewed, "fullchain.pem", "privkey.pem")
    code, ret = _deploy(salt_call, layout, dns_server)
    assert (code, ret["result"]) == (0, True), ret["comment"]


def test_a_3_0_1_record_pins_the_certificate_itself(salt_call, layout, ca, dns_server):
    layout, serving = layout
    dns_server.publish([_zone_line(_tlsa(salt_call, f"{layout.dest}/cert.pem", 3, 0, 1))])
    write_pair(layout.source, ca.leaf(HOST, key=serving.key), "fullchain.pem", "privkey.pem")
    _, ret = _deploy(salt_call, layout, dns_server)
    assert ret["result"] is False
    assert "no TLSA record at _25._tcp.mail.example.test matches" in ret["comment"]


def test_no_tlsa_record_at_all_refuses_a_key_change(salt_call, layout, ca, dns_server):
    layout, _ = layout
    dns_server.publish(["mail IN A 127.0.0.1"])
    write_pair(layout.source, ca.leaf(HOST), "fullchain.pem", "privkey.pem")
    _, ret = _deploy(salt_call, layout, dns_server)
    assert ret["result"] is False
    assert "(published: none)" in ret["comment"]


def test_a_failed_lookup_deploys_nothing(salt_call, layout, ca, dns_server):
    layout, _ = layout
    dns_server.publish([])
    dns_server.stop()
    write_pair(layout.source, ca.leaf(HOST), "fullchain.pem", "privkey.pem")
    before = cases.snapshot(layout.root)
    code, ret = _deploy(salt_call, layout, dns_server)
    assert code != 0
    assert ret["result"] is False
    assert ret["comment"].startswith(f"Nothing deployed: cannot look up TLSA {TLSA_NAME}")
    assert cases.snapshot(layout.root) == before


def test_a_roll_back_passes_the_dane_gate_unless_forced(salt_call, layout, ca, dns_server):
    """The operator removed the old record, as the rollover's last step says: rolling back
    to the old pair, which no record matches any more, is refused naming the record to
    publish; force: true rolls back all the same."""
    layout, _ = layout
    old_record = _tlsa(salt_call, f"{layout.dest}/cert.pem")
    new = ca.leaf(HOST, key_kind="ec-p384")
    write_pair(layout.source, new, "fullchain.pem", "privkey.pem")
    new_record = _tlsa(salt_call, f"{layout.source}/fullchain.pem")
    dns_server.publish([_zone_line(old_record), _zone_line(new_record)], ttl=1)
    code, ret = _deploy(salt_call, layout, dns_server)
    if ret["result"] is not True:  # the TTL to wait out first
        time.sleep(1.5)
        code, ret = _deploy(salt_call, layout, dns_server)
    assert (code, ret["result"]) == (0, True), ret["comment"]
    dns_server.publish([_zone_line(new_record)], ttl=1)  # step 4: the old record removed
    dane = json.dumps(dns_server.settings())
    before = cases.snapshot(layout.dest)
    refused = salt_call("certsync_deploy.roll_back", layout.dest, HOST, f"dane={dane}")
    assert refused.data["result"] is False, refused
    assert refused.data["comment"].startswith(
        f"Nothing rolled back: DANE: no TLSA record at {TLSA_NAME} matches the previous pair"
    )
    assert f"Publish {TLSA_NAME}. IN TLSA {old_record}" in refused.data["comment"]
    assert cases.snapshot(layout.dest) == before
    forced = salt_call("certsync_deploy.roll_back", layout.dest, HOST, f"dane={dane}", "force=True")
    assert forced.data["result"] is True, forced
    assert salt_call("certsync.deployed_info", layout.dest).data["fingerprint"] != new.fingerprint
