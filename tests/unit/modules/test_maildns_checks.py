"""The audit's rows, each from its check in maildns.CHECKS, answered by a stub resolver
that serves a zone from text (the NSD functional tests serve the same over the wire)."""

import dns.name
import dns.rdataclass
import dns.resolver
import dns.zone
import pytest
from salt.exceptions import SaltInvocationError

from harness.loader import UTILS, load_loader_module

maildns_mod = load_loader_module("modules", "maildns")
DOMAIN, HOST = "example.test", "mail.example.test"
ZONE = """
$ORIGIN example.test.
$TTL 300
@                 SOA ns1 hostmaster 1 3600 600 86400 300
@                 NS  ns1
ns1               A   192.0.2.53
@                 MX  10 mail
mail              A   192.0.2.25
@                 TXT "v=spf1 mx -all"
_dmarc            TXT "v=DMARC1; p=reject; rua=mailto:dmarc@example.test"
_smtp._tls        TXT "v=TLSRPTv1; rua=mailto:tls@example.test"
"""


class _Answer:
    def __init__(self, name, rrset):
        self.canonical_name, self.rrset = name, rrset


class StubResolver:
    """dnspython's resolve() over a zone in memory: NXDOMAIN, NODATA or the RRset;
    ``broken`` names (qname, rdtype) pairs whose lookup fails as a SERVFAIL would."""

    def __init__(self, text, broken=()):
        self.zone = dns.zone.from_text(text, relativize=False)
        self.broken = set(broken)

    def resolve(self, qname, rdtype, raise_on_no_answer=False):
        name = dns.name.from_text(qname)
        if (str(qname).rstrip("."), rdtype) in self.broken:
            raise dns.resolver.NoNameservers()
        node = self.zone.get_node(name)
        if node is None:
            raise dns.resolver.NXDOMAIN()
        rdataset = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
        if rdataset is None:
            return _Answer(name, None)
        return _Answer(name, dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset)))


@pytest.fixture
def resolver(monkeypatch):
    holder = {"resolver": StubResolver(ZONE)}
    monkeypatch.setattr(maildns_mod, "_resolver", lambda *args: holder["resolver"])
    return holder


@pytest.fixture
def configure_loader_modules(resolver):
    return {maildns_mod: {"__salt__": {}, "__context__": {}, "__utils__": UTILS}}


def _rows(report, prefix):
    return [row for row in report["rows"] if row["record"].startswith(prefix)]


def test_every_check_has_its_switch_among_the_options():
    options = maildns_mod.audit_options()
    assert all(option is None or option in options for _, option, _ in maildns_mod.CHECKS)
    assert len({check for _, _, check in maildns_mod.CHECKS}) == len(maildns_mod.CHECKS)


def test_a_sound_zone_passes_every_row_it_has(resolver):
    report = maildns_mod.audit(DOMAIN, HOST, autoconfig=False, tls_rpt=True)
    failing = [row for row in report["rows"] if row["result"] != "pass"]
    assert [row["record"] for row in failing] == ["PTR 192.0.2.25"]  # no reverse zone here
    assert _rows(report, "MX ")[0]["found"] == "10 mail.example.test"
    assert _rows(report, "TLS-RPT")[0]["result"] == "pass"


def test_an_mx_that_points_elsewhere_fails_naming_the_host(resolver):
    resolver["resolver"] = StubResolver(ZONE.replace("MX  10 mail", "MX  10 mx.other.test."))
    (row,) = _rows(maildns_mod.audit(DOMAIN, HOST, autoconfig=False), "MX example")
    assert (row["result"], row["why"]) == ("fail", "MX points elsewhere: mx.other.test")


def test_a_tls_rpt_record_without_rua_fails(resolver):
    resolver["resolver"] = StubResolver(ZONE.replace("; rua=mailto:tls@example.test", ""))
    (row,) = _rows(maildns_mod.audit(DOMAIN, HOST, autoconfig=False, tls_rpt=True), "TLS-RPT")
    assert (row["result"], row["why"]) == ("fail", "no rua=: reports go nowhere")


def test_a_failed_lookup_is_an_error_row_and_the_audit_goes_on(resolver):
    resolver["resolver"] = StubResolver(ZONE, broken=[("_smtp._tls.example.test", "TXT")])
    report = maildns_mod.audit(DOMAIN, HOST, autoconfig=False, tls_rpt=True)
    (row,) = _rows(report, "TLS-RPT")
    assert row["result"] == "error" and "cannot look up TXT _smtp._tls.example.test" in row["why"]
    assert _rows(report, "DMARC")[0]["result"] == "pass"
    assert report["errors"] == 1


def test_a_check_switched_off_has_no_rows(resolver):
    report = maildns_mod.audit(DOMAIN, HOST, autoconfig=False)
    assert _rows(report, "TLS-RPT") == [] and _rows(report, "autoconfig") == []


def test_an_unknown_option_is_refused_by_name(resolver):
    with pytest.raises(SaltInvocationError, match="unknown options: tls_rtp"):
        maildns_mod.audit(DOMAIN, HOST, tls_rtp=True)
