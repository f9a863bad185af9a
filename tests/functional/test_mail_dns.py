"""
The mail DNS audit through salt-call --local, against a real authoritative
DNS server (NSD on a loopback port) serving the mail domain, a relay's zone
and the reverse zone: one correct zone, then variants that each break one
thing and must fail exactly the rows about it.
"""

import base64
import json
import shutil

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from support.dnssec import ValidatingResolver, ZoneSigner, change_data
from support.tlsserver import TLSServer

from harness.mailcow_stack import free_port
from harness.nsd import AuthoritativeDNS
from harness.pki import TestCA, write_pair

pytestmark = pytest.mark.functional
DOMAIN = "example.test"
HOST = f"mail.{DOMAIN}"
RELAY = "relay.test"
REVERSE = "2.0.192.in-addr.arpa"
ADDRESS = "192.0.2.25"
#: The CAA domain the test CA goes by.
CA_DOMAIN = "test-ca.example"


def _txt(text):
    """A TXT record's data as zone-file strings of at most 255 bytes."""
    return " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))


def _dkim_record():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


DKIM = _dkim_record()


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory):
    server = AuthoritativeDNS(tmp_path_factory.mktemp("nsd"), DOMAIN, extra_zones=(RELAY, REVERSE))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, ca):
    directory = tmp_path_factory.mktemp("deployed")
    issued = ca.leaf(HOST, key_kind="ec-p256")
    write_pair(directory, issued)
    return directory / "cert.pem"


_TLSA = {}


def _tlsa(salt_call, cert, *params):
    """``certsync.tlsa``'s record data for ``cert``, asked of salt-call once per
    file and parameters (the module's deployed certificate never changes)."""
    key = (str(cert), params)
    if key not in _TLSA:
        _TLSA[key] = salt_call("certsync.tlsa", str(cert), *params).data
    return _TLSA[key]


def _zone(salt_call, deployed, **change):
    """The correct zones, with records replaced (None: removed) by ``change``."""
    tlsa = _tlsa(salt_call, deployed)
    records = {
        "mx": f"@ IN MX 10 {HOST}.",
        "a": f"mail IN A {ADDRESS}",
        "spf": f"@ IN TXT {_txt(f'v=spf1 mx include:_spf.{RELAY} -all')}",
        "dkim": f"dkim._domainkey IN TXT {_txt(DKIM)}",
        "dkim_relay": f"s1378202._domainkey IN CNAME s1378202.dkim.{RELAY}.",
        "dmarc": "_dmarc IN TXT "
        + _txt(f"v=DMARC1; p=reject; adkim=s; aspf=r; rua=mailto:dmarc@{RELAY}"),
        "autoconfig": "autoconfig IN CNAME mail",
        "autodiscover": "autodiscover IN CNAME mail",
        "srv": "_autodiscover._tcp IN SRV 0 1 443 mail",
        "return_path": f"bounces IN CNAME rp.{RELAY}.",
        "tlsa": f"_25._tcp.mail IN TLSA {tlsa}",
        "tlsrpt": "_smtp._tls IN TXT " + _txt(f"v=TLSRPTv1; rua=mailto:tlsrpt@{DOMAIN}"),
        "caa": f'@ IN CAA 0 issue "{CA_DOMAIN}"\n@ IN CAA 0 iodef "mailto:security@{DOMAIN}"',
    }
    relay = {
        "spf": f"_spf IN TXT {_txt('v=spf1 ip4:198.51.100.0/24 -all')}",
        "dkim": f"s1378202.dkim IN TXT {_txt(DKIM)}",
        "report": f"{DOMAIN}._report._dmarc IN TXT {_txt('v=DMARC1')}",
        "rp": "rp IN A 198.51.100.7",
    }
    reverse = {"ptr": f"25 IN PTR {HOST}."}
    for key, value in change.items():
        zone, _, item = key.partition("__")
        target = {"relay": relay, "reverse": reverse}.get(zone, records)
        target[item or zone] = value
    lines = {k: [v for v in d.values() if v] for k, d in (("r", relay), ("p", reverse))}
    return [v for v in records.values() if v], {RELAY: lines["r"], REVERSE: lines["p"]}


def _audit(salt_call, dns_server, deployed, *extra, port=None):
    ret = salt_call(
        "maildns.audit",
        DOMAIN,
        HOST,
        f"addresses=[{ADDRESS}]",
        "dkim_selectors=[dkim, s1378202]",
        "dmarc_policy=reject",
        f'return_path={{"name": "bounces.{DOMAIN}", "target": "rp.{RELAY}"}}',
        "tlsa_ports=[25]",
        f'certs={{"deployed": "{deployed}"}}',
        "nameservers=[127.0.0.1]",
        f"dns_port={port or dns_server.port}",
        "tls_rpt=True",
        "caa=True",
        f"caa_issuer={CA_DOMAIN}",
        *extra,
    )
    assert isinstance(ret.data, dict), ret
    return ret


def _failing(ret):
    return {row["record"]: row["why"] for row in ret.data["rows"] if row["result"] == "fail"}


def _publish(salt_call, dns_server, deployed, **change):
    records, extra = _zone(salt_call, deployed, **change)
    dns_server.publish(records, extra=extra)


def test_a_correct_zone_passes_every_row(salt_call, dns_server, deployed):
    _publish(salt_call, dns_server, deployed)
    ret = _audit(salt_call, dns_server, deployed)
    assert ret.returncode == 0, _failing(ret)
    assert ret.data["ok"] is True
    rows = {row["record"]: row for row in ret.data["rows"]}
    assert rows[f"MX {DOMAIN}"]["found"] == f"10 {HOST}"
    assert rows[f"PTR {ADDRESS}"]["why"] == "forward-confirmed"
    assert rows[f"SPF {DOMAIN} DNS lookups"]["found"] == "2"
    assert rows[f"SPF {DOMAIN} all"]["found"] == "-all"
    relay_dkim = rows[f"DKIM s1378202._domainkey.{DOMAIN}"]["found"]
    assert relay_dkim == f"rsa 2048-bit via CNAME s1378202.dkim.{RELAY}"
    assert rows[f"TLSA _25._tcp.{HOST} coverage"]["result"] == "pass"
    assert ret.data["stale_tlsa"] == {"25": []}
    assert rows[f"TLS-RPT _smtp._tls.{DOMAIN}"]["result"] == "pass"
    assert rows[f"CAA {DOMAIN}"]["found"] == (
        f"0 issue {CA_DOMAIN}; 0 iodef mailto:security@{DOMAIN}"
    )
    assert rows[f"CAA {DOMAIN} iodef"]["result"] == "pass"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            {"tlsa": "_25._tcp.mail IN TLSA 3 1 1 " + "ab" * 32},
            {
                f"TLSA _25._tcp.{HOST}": "stale: matches no certificate in use; remove it",
                f"TLSA _25._tcp.{HOST} coverage": "no record matches the deployed "
                "certificate: DANE senders will fail",
            },
            id="stale-tlsa",
        ),
        pytest.param(
            {
                "spf": "@ IN TXT "
                + _txt("v=spf1 " + " ".join(f"include:s{i}.{RELAY}" for i in range(11)) + " -all"),
                **{
                    f"relay__s{i}": f"s{i} IN TXT {_txt('v=spf1 ip4:198.51.100.1 -all')}"
                    for i in range(11)
                },
            },
            {f"SPF {DOMAIN} DNS lookups": "over the limit: receivers return permerror"},
            id="spf-over-lookup-limit",
        ),
        pytest.param(
            {
                "spf": "@ IN TXT "
                + _txt(f"v=spf1 a:nx1.{DOMAIN} a:nx2.{DOMAIN} a:nx3.{DOMAIN} mx -all")
            },
            {f"SPF {DOMAIN} void lookups": "over the limit: receivers return permerror"},
            id="spf-void-lookups",
        ),
        pytest.param(
            {"dmarc": None},
            {f"DMARC _dmarc.{DOMAIN}": "no v=DMARC1 record"},
            id="dmarc-missing",
        ),
        pytest.param(
            {"dkim": "dkim._domainkey IN TXT " + _txt("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0B")},
            {
                f"DKIM dkim._domainkey.{DOMAIN}": f"dkim._domainkey.{DOMAIN}: "
                "p= is not a valid RSA public key"
            },
            id="dkim-malformed",
        ),
        pytest.param(
            {"relay__dkim": None},
            {
                f"DKIM s1378202._domainkey.{DOMAIN}": f"CNAME to s1378202.dkim.{RELAY}, "
                "which has no key record"
            },
            id="dkim-delegation-dangling",
        ),
        pytest.param(
            {"mx": "@ IN MX 10 mx.elsewhere.test."},
            {f"MX {DOMAIN}": "MX points elsewhere: mx.elsewhere.test"},
            id="mx-elsewhere",
        ),
        pytest.param(
            {"reverse__ptr": f"25 IN PTR other.{DOMAIN}."},
            {f"PTR {ADDRESS}": f"PTR names other.{DOMAIN}, not {HOST}"},
            id="ptr-mismatch",
        ),
        pytest.param(
            {"relay__report": None},
            {
                f"DMARC {DOMAIN} report to dmarc@{RELAY}": f"{RELAY} has not agreed to "
                "receive reports (RFC 7489 7.1)"
            },
            id="dmarc-external-report-unauthorised",
        ),
        pytest.param(
            {"autodiscover": "autodiscover IN A 192.0.2.80"},
            {
                f"CNAME autodiscover.{DOMAIN}": "no CNAME (nodata); "
                "mail clients find their settings there"
            },
            id="autodiscover-not-cname",
        ),
        pytest.param(
            {"tlsrpt": None},
            {f"TLS-RPT _smtp._tls.{DOMAIN}": "no v=TLSRPTv1 record"},
            id="tls-rpt-missing",
        ),
        pytest.param(
            {"tlsrpt": "_smtp._tls IN TXT " + _txt("v=TLSRPTv1; rua=ftp://reports.example")},
            {f"TLS-RPT _smtp._tls.{DOMAIN}": "not a mailto: or https: URI: ftp://reports.example"},
            id="tls-rpt-bad-uri",
        ),
        pytest.param(
            {"caa": '@ IN CAA 0 issue "other-ca.example"'},
            {
                f"CAA {DOMAIN}": f"allows other-ca.example, not {CA_DOMAIN}: "
                "the next renewal will be refused"
            },
            id="caa-other-ca",
        ),
        pytest.param(
            {"caa": f'@ IN CAA 0 issue "{CA_DOMAIN}"\n@ IN CAA 128 tbs "unknown"'},
            {f"CAA {DOMAIN}": "unknown critical property tbs: no CA may issue"},
            id="caa-unknown-critical",
        ),
        pytest.param(
            {"caa": f'@ IN CAA 0 issue "{CA_DOMAIN}"\n@ IN CAA 0 iodef "ftp://x.example"'},
            {f"CAA {DOMAIN} iodef": "CAs cannot report to it"},
            id="caa-bad-iodef",
        ),
        pytest.param(
            {"caa": f'mail IN CAA 0 issue "other-ca.example"\n@ IN CAA 0 issue "{CA_DOMAIN}"'},
            {
                f"CAA {HOST}": f"allows other-ca.example, not {CA_DOMAIN}: "
                "the next renewal will be refused"
            },
            id="caa-closest-set-wins",
        ),
    ],
)
def test_a_broken_record_fails_its_row_only(salt_call, dns_server, deployed, change, expected):
    _publish(salt_call, dns_server, deployed, **change)
    ret = _audit(salt_call, dns_server, deployed)
    assert ret.returncode == 1
    assert ret.data["ok"] is False
    assert _failing(ret) == expected


def test_reject_without_any_alignment_is_flagged(salt_call, dns_server, deployed):
    _publish(
        salt_call,
        dns_server,
        deployed,
        dmarc="_dmarc IN TXT " + _txt("v=DMARC1; p=reject; aspf=s"),
        dkim=None,
        dkim_relay=None,
    )
    ret = _audit(salt_call, dns_server, deployed, "dkim_selectors=[]")
    assert _failing(ret) == {
        f"DMARC {DOMAIN} alignment": f"p=reject but neither DKIM nor SPF can align: "
        f"mail from {DOMAIN} is rejected"
    }


def test_tlsa_rows_tell_deployed_served_and_candidate(
    salt_call, dns_server, deployed, ca, tmp_path
):
    served_dir, candidate_dir = tmp_path / "served", tmp_path / "candidate"
    clients = [HOST, f"autoconfig.{DOMAIN}", f"autodiscover.{DOMAIN}"]
    served = ca.leaf(HOST, sans=clients, key_kind="rsa-2048")
    candidate = ca.leaf(HOST, key_kind="ed25519")
    write_pair(served_dir, served)
    write_pair(candidate_dir, candidate)
    served_2_0_1 = salt_call("certsync.tlsa", str(served_dir / "cert.pem"), 2, 0, 1).data
    candidate_3_1_2 = salt_call("certsync.tlsa", str(candidate_dir / "cert.pem"), 3, 1, 2).data
    deployed_3_0_0 = _tlsa(salt_call, deployed, 3, 0, 0)
    _publish(
        salt_call,
        dns_server,
        deployed,
        tlsa=f"_443._tcp.mail IN TLSA {served_2_0_1}\n"
        f"_443._tcp.mail IN TLSA {candidate_3_1_2}\n"
        f"_443._tcp.mail IN TLSA {deployed_3_0_0}",
    )
    server = TLSServer(served_dir / "cert.pem", served_dir / "key.pem")
    try:
        ret = _audit(
            salt_call,
            dns_server,
            deployed,
            "tlsa_ports=[443]",
            f'certs={{"deployed": "{deployed}", "candidate": "{candidate_dir}/cert.pem"}}',
            "probe_address=127.0.0.1",
            f"probe_ports={{443: {server.port}}}",
        )
    finally:
        server.close()
    tlsa_rows = [r for r in ret.data["rows"] if r["record"] == f"TLSA _443._tcp.{HOST}"]
    found = sorted(row["found"].split(" matches ")[1] for row in tlsa_rows)
    # the DANE-TA (2 0 1) record matches the test CA, which issued all three
    assert found == ["candidate", "candidate, deployed, served", "deployed"]
    assert _failing(ret) == {}


def test_dnssec_required_fails_without_a_validating_resolver(salt_call, dns_server, deployed):
    _publish(salt_call, dns_server, deployed)
    ret = _audit(salt_call, dns_server, deployed, "dnssec=True")
    assert _failing(ret) == {
        f"TLSA _25._tcp.{HOST} DNSSEC": "DANE needs DNSSEC-validated TLSA records"
    }


def test_records_ok_state_lists_each_failure(salt_call, dns_server, deployed):
    _publish(salt_call, dns_server, deployed, mx="@ IN MX 10 mx.elsewhere.test.", dmarc=None)
    code, ret = salt_call.state(
        fun="maildns.records_ok",
        name=DOMAIN,
        hostname=HOST,
        addresses=f"[{ADDRESS}]",
        nameservers="[127.0.0.1]",
        dns_port=dns_server.port,
        dkim_selectors="[dkim]",
    )
    assert code != 0
    assert ret["result"] is False
    assert ret["changes"] == {}
    lines = ret["comment"].splitlines()
    assert lines[0].startswith("3 of ") and lines[0].endswith(f"DNS checks of {DOMAIN} fail:")
    assert lines[1:] == [
        f"  MX {DOMAIN}: expected {HOST}, found 10 mx.elsewhere.test: "
        "MX points elsewhere: mx.elsewhere.test",
        # every MX host's addresses are looked up; NSD refuses the foreign name
        "  A/AAAA mx.elsewhere.test: expected an answer, found lookup failed: cannot look up "
        f"A mx.elsewhere.test: REFUSED from Do53:127.0.0.1@{dns_server.port}",
        f"  DMARC _dmarc.{DOMAIN}: expected one v=DMARC1 TXT record, found 0 records: "
        "no v=DMARC1 record",
    ]
    _publish(salt_call, dns_server, deployed)
    code, ret = salt_call.state(
        fun="maildns.records_ok",
        name=DOMAIN,
        hostname=HOST,
        nameservers="[127.0.0.1]",
        dns_port=dns_server.port,
        test=True,
    )
    assert (code, ret["result"]) == (0, True), ret["comment"]
    assert json.dumps(ret["changes"]) == "{}"


def test_the_formula_audits_the_dns_from_pillar(salt_call, dns_server, deployed, tmp_path):
    ssl_dir = tmp_path / "mailcow" / "data" / "assets" / "ssl"
    ssl_dir.mkdir(parents=True)
    shutil.copy(deployed, ssl_dir / "cert.pem")
    pillar_root = tmp_path / "pillar"
    pillar_root.mkdir()
    (pillar_root / "top.sls").write_text(json.dumps({"base": {"*": ["certsync"]}}))
    dns = {
        "domain": DOMAIN,
        "addresses": [ADDRESS],
        "dkim_selectors": ["dkim", "s1378202"],
        "dmarc_policy": "reject",
        "return_path": {"name": f"bounces.{DOMAIN}", "target": f"rp.{RELAY}"},
        "tlsa_ports": [25],
        "nameservers": ["127.0.0.1"],
        "dns_port": dns_server.port,
        "tls_rpt": True,
        "caa": True,
        "caa_issuer": CA_DOMAIN,
    }
    consumer = {"mailcow_dir": str(tmp_path / "mailcow"), "endpoints": ["smtp"]}  # no HTTPS
    pillar = {
        "certsync": {"hostname": HOST, "consumers": {"certsync-functional": consumer}, "dns": dns}
    }
    (pillar_root / "certsync.sls").write_text(json.dumps(pillar))

    def apply():
        ret = salt_call(f"--pillar-root={pillar_root}", "state.apply", "certsync.dns")
        (state,) = [v for k, v in ret.data.items() if "certsync-settings" not in k]
        return ret.returncode, state

    _publish(salt_call, dns_server, deployed)
    code, state = apply()
    assert (code, state["result"]) == (0, True), state["comment"]
    assert state["comment"].startswith("All ") and state["comment"].endswith(f"of {DOMAIN} pass")
    _publish(salt_call, dns_server, deployed, tlsa="_25._tcp.mail IN TLSA 3 1 1 " + "cd" * 32)
    code, state = apply()
    assert code != 0
    assert (
        state["comment"]
        .splitlines()[1]
        .startswith(
            f"  TLSA _25._tcp.{HOST}: expected matches a certificate in use or coming, found 3 1 1"
        )
    )


def test_tlsa_with_nothing_to_match_against_is_said(salt_call, dns_server, deployed):
    _publish(salt_call, dns_server, deployed)
    resolver = ("nameservers=[127.0.0.1]", f"dns_port={dns_server.port}")
    ret = salt_call("maildns.audit", DOMAIN, HOST, "tlsa_ports=[25]", *resolver)
    assert ret.returncode != 0
    assert "tlsa_ports needs certs (deployed, candidate) or probe_address" in ret.stderr
    closed = free_port()
    ret = salt_call(
        "maildns.audit",
        DOMAIN,
        HOST,
        "tlsa_ports=[25]",
        "probe_address=127.0.0.1",
        f"probe_ports={{25: {closed}}}",
        "dkim_selectors=[dkim]",
        *resolver,
    )
    (why,) = [
        row["why"]
        for row in ret.data["rows"]
        if row["result"] == "fail" and row["record"].startswith("TLSA")
    ]
    assert why.startswith("no certificate to match: the served one was not fetched (")
    assert "Connection refused" in why


def test_https_for_autoconfig_names_must_cover_them(salt_call, dns_server, deployed, ca, tmp_path):
    """mailcow's nginx serves autoconfig/autodiscover with the top-level pair (SNI)."""
    served = ca.leaf(HOST, sans=[HOST, f"autoconfig.{DOMAIN}"])
    write_pair(tmp_path / "served", served)
    _publish(salt_call, dns_server, deployed)
    server = TLSServer(tmp_path / "served" / "cert.pem", tmp_path / "served" / "key.pem")
    try:
        ret = _audit(
            salt_call,
            dns_server,
            deployed,
            "probe_address=127.0.0.1",
            f"probe_ports={{443: {server.port}}}",
        )
    finally:
        server.close()
    rows = {row["record"]: row for row in ret.data["rows"]}
    assert rows[f"HTTPS autoconfig.{DOMAIN}"]["result"] == "pass"
    assert _failing(ret) == {
        f"HTTPS autodiscover.{DOMAIN}": "clients refuse the settings: the certificate does "
        "not cover it"
    }
    assert rows[f"HTTPS autodiscover.{DOMAIN}"]["found"] == f"{HOST}, autoconfig.{DOMAIN}"


@pytest.mark.parametrize(
    ("records", "key_kept", "found", "why"),
    [
        (["own"], "True", "a lone 3 1 1", None),
        (["own"], "False", "a lone 3 1 1", "the source's next renewal makes a new key"),
        (["own"], None, "a lone 3 1 1", None),
        (["own", "next"], "False", "current + next 3 1 1", None),
        (["own", "issuer"], "False", "3 1 1 + 2 1 1 of the issuer", None),
        (["own", "foreign_issuer"], "False", "a lone 3 1 1", "makes a new key"),
    ],
    ids=["kept", "not-kept", "unknown", "current-next", "issuer", "foreign-issuer"],
)
def test_the_rollover_row_tells_whether_the_set_survives_the_next_key(
    salt_call, dns_server, deployed, ca, tmp_path, records, key_kept, found, why
):
    other = TestCA("another issuer")
    write_pair(tmp_path / "next", ca.leaf(HOST, key_kind="ec-p256"))
    write_pair(tmp_path / "foreign", other.leaf(HOST))
    data = {
        "own": _tlsa(salt_call, deployed),
        "next": salt_call("certsync.tlsa", str(tmp_path / "next" / "cert.pem")).data,
        "issuer": _tlsa(salt_call, deployed, 2, 1, 1),
        "foreign_issuer": salt_call(
            "certsync.tlsa", str(tmp_path / "foreign/cert.pem"), 2, 1, 1
        ).data,
    }
    _publish(
        salt_call,
        dns_server,
        deployed,
        tlsa="\n".join(f"_25._tcp.mail IN TLSA {data[name]}" for name in records),
    )
    extra = [f"key_kept={key_kept}"] if key_kept else []
    ret = _audit(salt_call, dns_server, deployed, *extra)
    row = next(r for r in ret.data["rows"] if r["record"] == f"TLSA _25._tcp.{HOST} rollover")
    assert row["found"] == found
    if why:
        assert row["result"] == "fail"
        assert why in row["why"]
        assert ret.returncode != 0
    else:
        assert row["result"] == "pass", row
    if key_kept is None:
        assert (
            row["why"]
            == "unknown whether the source's next renewal keeps the key (key_kept not given)"
        )


def test_a_failed_lookup_is_its_own_error_row_and_the_audit_goes_on(
    salt_call, dns_server, deployed
):
    """NSD refuses the reverse zone of an address it does not serve: that PTR row is an
    error (not "no record"), every other row is still there and passes."""
    elsewhere = "198.18.0.25"
    _publish(salt_call, dns_server, deployed, a=f"mail IN A {elsewhere}")
    ret = _audit(salt_call, dns_server, deployed, f"addresses=[{elsewhere}]")
    assert ret.returncode == 1
    assert (ret.data["ok"], ret.data["failed"], ret.data["errors"]) == (False, 0, 1)
    (error,) = [row for row in ret.data["rows"] if row["result"] == "error"]
    assert error["record"] == f"PTR {elsewhere}"
    assert error["found"] == "lookup failed"
    assert error["why"] == (
        "cannot look up PTR 25.0.18.198.in-addr.arpa: "
        f"REFUSED from Do53:127.0.0.1@{dns_server.port}"
    )
    records = [row["record"] for row in ret.data["rows"]]
    assert f"TLSA _25._tcp.{HOST} coverage" in records and f"DMARC _dmarc.{DOMAIN}" in records


def test_no_caa_at_all_passes_with_a_note(salt_call, dns_server, deployed):
    _publish(salt_call, dns_server, deployed, caa=None)
    ret = _audit(salt_call, dns_server, deployed)
    rows = {row["record"]: row for row in ret.data["rows"]}
    assert rows[f"CAA {HOST}"]["result"] == "pass"
    assert rows[f"CAA {HOST}"]["why"] == "no CAA record: any CA may issue"
    assert ret.data["ok"] is True


def _two_servers(first, second, bound=5):
    """TLS servers on 127.0.0.1 and 127.0.0.2 at one port number."""
    for _ in range(bound):
        one = TLSServer(first / "cert.pem", first / "key.pem")
        try:
            return one, TLSServer(second / "cert.pem", second / "key.pem", "127.0.0.2", one.port)
        except OSError:
            one.close()
    raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")


def test_every_address_of_the_mail_host_must_serve_a_matching_certificate(
    salt_call, dns_server, deployed, ca, tmp_path
):
    """An MX host with two addresses (192.0.2.25, .26, reached at 127.0.0.1 and .2):
    one serves a stale certificate and fails its own row."""
    second = "192.0.2.26"
    stale = ca.leaf(HOST, key_kind="ec-p256")
    current_dir, stale_dir = tmp_path / "current", tmp_path / "stale"
    write_pair(stale_dir, stale)
    current_dir.mkdir()
    for name in ("cert.pem", "key.pem"):
        (current_dir / name).write_bytes((deployed.parent / name).read_bytes())
    tlsa = _tlsa(salt_call, deployed)
    _publish(
        salt_call,
        dns_server,
        deployed,
        a=f"mail IN A {ADDRESS}\nmail IN A {second}",
        tlsa=f"_465._tcp.mail IN TLSA {tlsa}",
        reverse__ptr=f"25 IN PTR {HOST}.\n26 IN PTR {HOST}.",
    )
    one, two = _two_servers(current_dir, stale_dir)
    try:
        ret = _audit(
            salt_call,
            dns_server,
            deployed,
            f"addresses=[{ADDRESS}, {second}]",
            "tlsa_ports=[465]",
            f"probe_ports={{465: {one.port}}}",
            "probe_address=127.0.0.1",
            f'probe_addresses={{"{ADDRESS}": 127.0.0.1, "{second}": 127.0.0.2}}',
        )
    finally:
        one.close()
        two.close()
    rows = {row["record"]: row for row in ret.data["rows"]}
    assert rows[f"PTR {second}"]["result"] == "pass"
    assert rows[f"TLSA _465._tcp.{HOST} at {ADDRESS}"]["result"] == "pass"
    assert _failing(ret) == {
        f"TLSA _465._tcp.{HOST} at {second}": "serves a certificate no TLSA record matches: "
        "DANE senders fail here"
    }


def test_every_mx_host_gets_address_and_ptr_rows(salt_call, dns_server, deployed):
    _publish(
        salt_call,
        dns_server,
        deployed,
        mx=f"@ IN MX 10 {HOST}.\n@ IN MX 20 backup.{DOMAIN}.",
        a=f"mail IN A {ADDRESS}\nbackup IN A 192.0.2.27",
    )
    ret = _audit(salt_call, dns_server, deployed, f"mx=[{HOST}, backup.{DOMAIN}]")
    assert _failing(ret) == {"PTR 192.0.2.27": "no PTR record at 27.2.0.192.in-addr.arpa"}
    rows = {row["record"]: row for row in ret.data["rows"]}
    assert rows[f"A/AAAA backup.{DOMAIN}"]["found"] == "192.0.2.27"


def test_dnssec_through_a_validating_resolver(salt_call, dns_server, deployed, tmp_path):
    """The zone signed with ldns' signer, unbound validating it: the TLSA answer carries
    the AD bit; a TLSA record changed after signing fails validation and its row."""
    signer = ZoneSigner(tmp_path / "keys", DOMAIN)
    records, extra = _zone(salt_call, deployed)
    dns_server.publish(records, extra=extra, signer=signer)
    zones = {zone: dns_server.port for zone in (DOMAIN, RELAY, REVERSE)}
    resolver = ValidatingResolver(tmp_path / "unbound", [signer.trust_anchor()], zones)
    resolver.start(DOMAIN)
    try:
        ret = _audit(salt_call, dns_server, deployed, "dnssec=True", port=resolver.port)
        assert _failing(ret) == {}, ret.data
        rows = {row["record"]: row for row in ret.data["rows"]}
        assert rows[f"TLSA _25._tcp.{HOST} DNSSEC"]["found"] == "AD"

        data = _tlsa(salt_call, deployed).split()[-1]
        forged = ("0" if data[0] != "0" else "1") + data[1:]
        dns_server.publish(
            records, extra=extra, signer=signer, tamper=change_data("TLSA", data, forged)
        )
        ret = _audit(salt_call, dns_server, deployed, "dnssec=True", port=resolver.port)
    finally:
        resolver.stop()
    assert ret.returncode == 1
    assert _failing(ret) == {
        f"TLSA _25._tcp.{HOST} DNSSEC": f"the TLSA records at _25._tcp.{HOST} fail DNSSEC "
        "validation (bogus: a broken or expired signature): DANE senders will not deliver"
    }


def test_the_table_outputter_marks_and_aligns_each_row(salt_call, dns_server, deployed):
    _publish(salt_call, dns_server, deployed, dmarc=None)
    ret = salt_call(
        "--out=certsync_table",
        "--no-color",
        "maildns.audit",
        DOMAIN,
        HOST,
        f"addresses=[{ADDRESS}]",
        "dkim_selectors=[dkim]",
        "nameservers=[127.0.0.1]",
        f"dns_port={dns_server.port}",
    )
    assert ret.returncode == 1
    lines = ret.stdout.strip().splitlines()
    assert lines[0] == "local:"
    table, summary = lines[1:-1], lines[-1]
    assert {line[4:8] for line in table} <= {"PASS", "FAIL", "ERR "}
    assert f"    FAIL  DMARC _dmarc.{DOMAIN}" in "\n".join(table)
    # "    MARK  record<padded>  found<padded>  why": every column starts at one offset
    width = max(len(line[10:].split("  ", 1)[0]) for line in table)
    found_at = 10 + width + 2
    assert all(line[found_at - 2 : found_at] == "  " for line in table), "\n".join(table)
    assert all(line[found_at] != " " for line in table), "\n".join(table)
    assert summary.startswith("    ") and "1 fail, 0 error" in summary


def test_caa_for_a_wildcard_certificate_reads_issuewild(salt_call, dns_server, ca, tmp_path):
    wildcard = ca.leaf(HOST, sans=[HOST, f"*.{DOMAIN}"])
    write_pair(tmp_path / "wild", wildcard)
    cert = tmp_path / "wild" / "cert.pem"
    resolver = ("nameservers=[127.0.0.1]", f"dns_port={dns_server.port}")

    def caa_row(caa):
        _publish(salt_call, dns_server, cert, caa=caa)
        ret = salt_call(
            "maildns.audit",
            DOMAIN,
            HOST,
            "caa=True",
            f"caa_issuer={CA_DOMAIN}",
            f'certs={{"deployed": "{cert}"}}',
            "autoconfig=False",
            *resolver,
        )
        (row,) = [r for r in ret.data["rows"] if r["record"] == f"CAA {DOMAIN}"]
        return row["result"], row["why"]

    assert caa_row(f'@ IN CAA 0 issue "{CA_DOMAIN}"') == ("pass", "")
    assert caa_row(f'@ IN CAA 0 issue "{CA_DOMAIN}"\n@ IN CAA 0 issuewild ";"') == (
        "fail",
        f'allows ";", not {CA_DOMAIN}: the next renewal will be refused',
    )
