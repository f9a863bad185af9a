"""
Time the mail DNS audit against a real authoritative server (NSD on a
loopback port) and print the figures (no pass/fail):

- a whole ``maildns.audit`` (MX, A, PTR, SPF with an include, two DKIM
  selectors one through a CNAME, DMARC, autoconfig, return path, TLSA);
- the SPF walk of a policy at the 10-lookup limit.

Needs nsd (scripts/test-deps.sh). Run: scripts/bench.sh
"""

import argparse
import base64
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from figures import figures  # noqa: E402
from support.loader import certsync_mod, load_loader_module  # noqa: E402
from support.nsd import AuthoritativeDNS  # noqa: E402
from support.pki import TestCA, write_pair  # noqa: E402

DOMAIN, HOST, RELAY, REVERSE = (
    "example.test",
    "mail.example.test",
    "relay.test",
    "2.0.192.in-addr.arpa",
)


def txt(text):
    return " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))


def zones(tlsa):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    dkim = txt(f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}")
    includes = " ".join(f"include:s{i}.{RELAY}" for i in range(9))
    records = [
        f"@ IN MX 10 {HOST}.",
        "mail IN A 192.0.2.25",
        f"@ IN TXT {txt(f'v=spf1 mx include:_spf.{RELAY} -all')}",
        f"limit IN TXT {txt(f'v=spf1 mx {includes} -all')}",
        f"dkim._domainkey IN TXT {dkim}",
        f"s1._domainkey IN CNAME s1.dkim.{RELAY}.",
        f"_dmarc IN TXT {txt('v=DMARC1; p=reject; adkim=s')}",
        "autoconfig IN CNAME mail",
        "autodiscover IN CNAME mail",
        "_autodiscover._tcp IN SRV 0 1 443 mail",
        f"bounces IN CNAME rp.{RELAY}.",
        f"_25._tcp.mail IN TLSA {tlsa}",
    ]
    relay = [
        f"_spf IN TXT {txt('v=spf1 ip4:198.51.100.0/24 -all')}",
        f"s1.dkim IN TXT {dkim}",
        "rp IN A 198.51.100.7",
        *(f"s{i} IN TXT {txt('v=spf1 ip4:198.51.100.1 -all')}" for i in range(9)),
    ]
    return records, {RELAY: relay, REVERSE: [f"25 IN PTR {HOST}."]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    maildns = load_loader_module("modules", "maildns")
    certsync_mod.__context__ = {}
    maildns.__context__ = {}
    maildns.__salt__ = {
        "certsync.is_dns_name": certsync_mod.is_dns_name,
        "certsync.tlsa": certsync_mod.tlsa,
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        write_pair(tmp / "ssl", TestCA().leaf(HOST))
        cert = str(tmp / "ssl" / "cert.pem")
        server = AuthoritativeDNS(tmp / "nsd", DOMAIN, extra_zones=(RELAY, REVERSE))
        try:
            records, extra = zones(certsync_mod.tlsa(cert))
            server.publish(records, extra=extra)
            resolver = {"nameservers": ["127.0.0.1"], "dns_port": server.port}
            audit, walk = [], []
            for _ in range(args.rounds):
                start = time.perf_counter()
                report = maildns.audit(
                    DOMAIN,
                    HOST,
                    addresses=["192.0.2.25"],
                    dkim_selectors=["dkim", "s1"],
                    dmarc_policy="reject",
                    return_path={"name": f"bounces.{DOMAIN}", "target": f"rp.{RELAY}"},
                    tlsa_ports=[25],
                    certs={"deployed": cert},
                    **resolver,
                )
                audit.append((time.perf_counter() - start) * 1000)
                assert report["ok"], [r for r in report["rows"] if r["result"] == "fail"]
                start = time.perf_counter()
                spf = maildns.spf(f"limit.{DOMAIN}", **resolver)
                walk.append((time.perf_counter() - start) * 1000)
                assert spf["lookups"] == 10, spf
            print(f"maildns.audit, {len(report['rows'])} rows: {figures(audit)}")
            print(f"maildns.spf, 10 lookups: {figures(walk)}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
