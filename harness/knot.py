"""
A real authoritative DNS server that takes RFC 2136 updates, for tests:
Debian's Knot DNS on a loopback port, serving one zone whose updates must be
signed with a TSIG key made here. Updates are written back to the zone file
at once (``zonefile-sync: 0``), so a stopped and restarted server still has
them.
"""

import base64
import os
import pathlib
import shutil
import subprocess
import time

import dns.exception
import dns.resolver

from .mailcow_stack import free_port
from .nsd import loopback_resolver

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"
READY_TIMEOUT = 15
TSIG_NAME = "certsync-update"
TSIG_ALGORITHM = "hmac-sha256"


class UpdatableDNS:
    """knotd serving ``zone`` (records given at start), updatable with the TSIG key."""

    def __init__(self, root, zone="example.test"):
        if not pathlib.Path(KNOTD).exists():
            raise RuntimeError("knot is not installed; scripts/test-deps.sh installs it")
        self.root = pathlib.Path(root)
        (self.root / "db").mkdir(parents=True, exist_ok=True)
        self.zone = zone
        self.port = free_port()
        self.secret = base64.b64encode(os.urandom(32)).decode()
        self.proc = None
        (self.root / "knot.conf").write_text(
            "server:\n"
            f'  rundir: "{self.root}"\n'
            f"  listen: 127.0.0.1@{self.port}\n"
            "log:\n"
            f'  - target: "{self.root}/knot.log"\n'
            "    any: info\n"
            "database:\n"
            f'  storage: "{self.root}/db"\n'
            "key:\n"
            f"  - id: {TSIG_NAME}\n"
            f"    algorithm: {TSIG_ALGORITHM}\n"
            f"    secret: {self.secret}\n"
            "acl:\n"
            "  - id: certsync-update\n"
            f"    key: {TSIG_NAME}\n"
            "    action: update\n"
            "template:\n"
            "  - id: default\n"
            f'    storage: "{self.root}"\n'
            "    zonefile-sync: 0\n"
            "zone:\n"
            f"  - domain: {zone}\n"
            f"    file: {zone}.zone\n"
            "    acl: certsync-update\n"
        )

    def start(self, records=None, ttl=300):
        """Start knotd; with ``records`` (zone-file lines), write the zone first."""
        if records is not None:
            lines = [
                f"$ORIGIN {self.zone}.",
                f"$TTL {ttl}",
                f"@ IN SOA ns1.{self.zone}. hostmaster.{self.zone}. 1 3600 600 86400 {ttl}",
                f"@ IN NS ns1.{self.zone}.",
                "ns1 IN A 127.0.0.1",
                *records,
            ]
            (self.root / f"{self.zone}.zone").write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [KNOTD, "-c", str(self.root / "knot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        for _ in range(int(READY_TIMEOUT / 0.1) + 1):
            try:
                self.resolver().resolve(self.zone, "SOA")
                return self
            except dns.exception.DNSException:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                break
            time.sleep(0.1)
        log = self.root / "knot.log"
        raise RuntimeError(
            f"knotd did not serve {self.zone}:\n{log.read_text() if log.exists() else ''}"
        )

    def resolver(self):
        return loopback_resolver(self.port)

    def tlsa(self, name):
        """The TLSA records at ``name`` as ``"u s m hex"`` strings (empty when none)."""
        try:
            answer = self.resolver().resolve(name, "TLSA")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return set()
        return {f"{r.usage} {r.selector} {r.mtype} {r.cert.hex()}" for r in answer}

    def update_settings(self):
        """The ``dane: update`` argument of certsync.deployed for this server (the TSIG
        secret is never an argument: see :py:meth:`pillar_dane`)."""
        return {"server": "127.0.0.1", "port": self.port, "zone": self.zone, "tsig_name": TSIG_NAME}

    def dane(self, port=25, **extra):
        """The whole ``dane`` argument: lookups and updates against this server."""
        return {
            "port": port,
            "nameservers": ["127.0.0.1"],
            "dns_port": self.port,
            "update": self.update_settings(),
            **extra,
        }

    def pillar_dane(self, secret=None, **extra):
        """``dane`` as a consumer's pillar holds it: the argument and the TSIG secret."""
        dane = self.dane(**extra)
        dane["update"]["tsig_secret"] = secret or self.secret
        return dane

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None
