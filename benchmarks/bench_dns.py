"""
Time the mail DNS audit against a real authoritative server (NSD on a
loopback port) and print the figures (no pass/fail):

- a whole ``maildns.audit`` (MX, A, PTR, SPF with an include, two DKIM
  selectors one through a CNAME, DMARC, autoconfig, return path, TLSA);
- the audit with every check on: the above plus TLS-RPT, CAA, MTA-STS (the
  policy fetched over HTTPS from a local server with a verified
  certificate), autoconfig/autodiscover/mta-sts served over HTTPS, and the
  TLSA port's certificate fetched from the mail host's address; it prints
  the rows once;
- the SPF walk of a policy at the 10-lookup limit.

Needs nsd (scripts/test-deps.sh). Run: scripts/bench.sh
"""

import argparse
import base64
import contextlib
import http.server
import pathlib
import ssl
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from figures import figures  # noqa: E402

from harness.loader import certsync_mod, load_loader_module, tlsprobe_mod  # noqa: E402
from harness.nsd import AuthoritativeDNS  # noqa: E402
from harness.pki import TestCA, write_pair  # noqa: E402

DOMAIN, HOST, RELAY, REVERSE = (
    "example.test",
    "mail.example.test",
    "relay.test",
    "2.0.192.in-addr.arpa",
)


#: What both audits expect of the zone.
RECORDS = {
    "addresses": ["192.0.2.25"],
    "dkim_selectors": ["dkim", "s1"],
    "dmarc_policy": "reject",
    "return_path": {"name": f"bounces.{DOMAIN}", "target": f"rp.{RELAY}"},
}


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
        f"_465._tcp.mail IN TLSA {tlsa}",
        f"_smtp._tls IN TXT {txt(f'v=TLSRPTv1; rua=mailto:tlsrpt@{DOMAIN}')}",
        '@ IN CAA 0 issue "test-ca.example"',
        f'@ IN CAA 0 iodef "mailto:security@{DOMAIN}"',
        f"_mta-sts IN TXT {txt('v=STSv1; id=20261126')}",
        "mta-sts IN CNAME mail",
    ]
    relay = [
        f"_spf IN TXT {txt('v=spf1 ip4:198.51.100.0/24 -all')}",
        f"s1.dkim IN TXT {dkim}",
        "rp IN A 198.51.100.7",
        *(f"s{i} IN TXT {txt('v=spf1 ip4:198.51.100.1 -all')}" for i in range(9)),
    ]
    return records, {RELAY: relay, REVERSE: [f"25 IN PTR {HOST}."]}


POLICY = f"version: STSv1\nmode: enforce\nmx: {HOST}\nmax_age: 604800\n".encode()


class _Policy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        found = self.path == "/.well-known/mta-sts.txt"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(POLICY if found else b"")

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def https_server(ssl_dir):
    """mailcow's nginx in short: the top-level pair, the policy at its path."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Policy)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ssl_dir / "cert.pem", ssl_dir / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    maildns = load_loader_module("modules", "maildns")
    certsync_mod.__context__ = {}
    maildns.__context__ = {}
    tlsprobe_mod.__context__ = {}
    maildns.__salt__ = {
        "certsync.tlsa": certsync_mod.tlsa,
        "certsync.info": certsync_mod.info,
        "tlsprobe.fetch": tlsprobe_mod.fetch,
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        ca = TestCA()
        names = [HOST, f"autoconfig.{DOMAIN}", f"autodiscover.{DOMAIN}", f"mta-sts.{DOMAIN}"]
        write_pair(tmp / "ssl", ca.leaf(HOST, sans=names))
        (tmp / "ca.pem").write_bytes(ca.root_pem())
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
                    **RECORDS,
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
            every(maildns, tmp, cert, resolver, args.rounds)
        finally:
            server.stop()


def every(maildns, tmp, cert, resolver, rounds):
    """The audit with every check on, against local TLS and HTTPS servers."""
    times = []
    # one TLS server for HTTPS and implicit-TLS SMTP (465): the probe reads the handshake
    with https_server(tmp / "ssl") as https_port:
        for _ in range(rounds):
            start = time.perf_counter()
            report = maildns.audit(
                DOMAIN,
                HOST,
                **RECORDS,
                tlsa_ports=[465],
                certs={"deployed": cert},
                probe_address="127.0.0.1",
                probe_ports={443: https_port, 465: https_port},
                probe_addresses={"192.0.2.25": "127.0.0.1"},
                tls_rpt=True,
                caa=True,
                caa_issuer="test-ca.example",
                mta_sts=True,
                ca_file=str(tmp / "ca.pem"),
                **resolver,
            )
            times.append((time.perf_counter() - start) * 1000)
            assert report["ok"], [r for r in report["rows"] if r["result"] != "pass"]
    print(f"maildns.audit, every check, {len(report['rows'])} rows: {figures(times)}")
    for row in report["rows"]:
        print(f"  {row['result']:<4}  {row['record']}")


if __name__ == "__main__":
    main()
