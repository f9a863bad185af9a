"""
DNSSEC for tests: a zone signed with ldns' signer (Debian's ldnsutils) and
Debian's unbound as a validating resolver on a loopback port, trusting the
zone's key-signing key and asking the test's NSD for its zones.
"""

import pathlib
import re
import shutil
import subprocess
import time

import dns.exception
import dns.flags
import dns.resolver

from harness.mailcow_stack import free_port

UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"
KEYGEN = shutil.which("ldns-keygen") or "/usr/bin/ldns-keygen"
SIGNZONE = shutil.which("ldns-signzone") or "/usr/bin/ldns-signzone"
READY_TIMEOUT = 15


def _run(*argv, cwd):
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {proc.stderr}")
    return proc.stdout.strip()


class ZoneSigner:
    """A KSK and a ZSK (ECDSA P-256) for ``zone``; signs zone files in place."""

    def __init__(self, root, zone):
        for tool in (KEYGEN, SIGNZONE):
            if not pathlib.Path(tool).exists():
                raise RuntimeError(f"{tool} is missing; scripts/test-deps.sh installs ldnsutils")
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.zone = zone
        self.ksk = _run(KEYGEN, "-a", "ECDSAP256SHA256", "-k", zone, cwd=self.root)
        self.zsk = _run(KEYGEN, "-a", "ECDSAP256SHA256", zone, cwd=self.root)

    def trust_anchor(self):
        """The KSK's DNSKEY record, as unbound's trust-anchor-file takes it."""
        return (self.root / f"{self.ksk}.key").read_text()

    def sign(self, path, tamper=None):
        """Replace the zone file ``path`` by its signed form; ``tamper(text)`` then edits
        the signed text (a record changed after signing: its signature no longer holds)."""
        signed = self.root / "signed.zone"
        _run(
            SIGNZONE,
            "-f",
            str(signed),
            "-o",
            self.zone,
            str(path),
            str(self.root / self.zsk),
            str(self.root / self.ksk),
            cwd=self.root,
        )
        text = signed.read_text()
        pathlib.Path(path).write_text(tamper(text) if tamper else text)


def change_data(rrtype, old, new):
    """A ``tamper`` that rewrites ``old`` to ``new`` in the data of ``rrtype`` records."""

    def tamper(text):
        pattern = re.compile(rf"(\sIN\s+{rrtype}\s.*){re.escape(old)}")
        changed, count = pattern.subn(lambda m: m.group(1) + new, text)
        if not count:
            raise RuntimeError(f"no {rrtype} record holds {old!r}")
        return changed

    return tamper


class ValidatingResolver:
    """unbound on 127.0.0.1:``port``, validating with ``anchors``, NSD's zones as stubs."""

    def __init__(self, root, anchors, stubs):
        if not pathlib.Path(UNBOUND).exists():
            raise RuntimeError("unbound is missing; scripts/test-deps.sh installs it")
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (self.root / "anchors").write_text("".join(anchors))
        stub_lines = "".join(
            f'stub-zone:\n  name: "{zone}"\n  stub-addr: 127.0.0.1@{port}\n'
            for zone, port in stubs.items()
        )
        # unbound answers RFC 6761/5737 names (test., 2.0.192.in-addr.arpa.) itself
        # unless told not to, for each zone and its parents.
        parents = sorted(
            {".".join(z.split(".")[i:]) for z in stubs for i in range(z.count(".") + 1)}
        )
        nodefault = "".join(f'  local-zone: "{name}." nodefault\n' for name in parents)
        (self.root / "unbound.conf").write_text(
            "server:\n"
            "  interface: 127.0.0.1\n"
            f"  port: {self.port}\n"
            "  do-ip6: no\n"
            "  do-daemonize: no\n"
            '  username: ""\n'
            '  chroot: ""\n'
            f'  directory: "{self.root}"\n'
            '  pidfile: ""\n'
            f'  logfile: "{self.root}/unbound.log"\n'
            "  use-syslog: no\n"
            "  do-not-query-localhost: no\n"
            "  access-control: 127.0.0.0/8 allow\n"
            f'  trust-anchor-file: "{self.root}/anchors"\n'
            '  module-config: "validator iterator"\n'
            "  cache-max-ttl: 0\n"
            "  cache-max-negative-ttl: 0\n" + nodefault + "remote-control:\n"
            "  control-enable: no\n" + stub_lines
        )
        self.proc = None

    def start(self, probe_name):
        """Run unbound; wait until it answers ``probe_name`` SOA (bounded)."""
        self.proc = subprocess.Popen(
            [UNBOUND, "-d", "-c", str(self.root / "unbound.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port, resolver.lifetime = ["127.0.0.1"], self.port, 2
        deadline = time.monotonic() + READY_TIMEOUT
        for _ in range(int(READY_TIMEOUT / 0.2) + 1):
            try:
                resolver.resolve(probe_name, "SOA")
                return self
            except dns.exception.DNSException:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        log = self.root / "unbound.log"
        raise RuntimeError(f"unbound did not answer:\n{log.read_text() if log.exists() else ''}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None
