"""
A real authoritative DNS server for tests: Debian's NSD on a loopback port,
serving a test zone (and, when asked, more: a relay's zone, a reverse
zone) that a test rewrites with publish().
"""

import pathlib
import shutil
import subprocess
import time

import dns.exception
import dns.resolver

from .mailcow_stack import free_port

NSD = shutil.which("nsd") or "/usr/sbin/nsd"
READY_TIMEOUT = 15


def loopback_resolver(port):
    """A resolver asking only the test server on 127.0.0.1:``port``."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.lifetime = 2
    return resolver


class AuthoritativeDNS:
    """NSD serving ``zone`` and ``extra_zones`` from a work dir, restarted on every publish."""

    def __init__(self, root, zone="example.test", extra_zones=()):
        if not pathlib.Path(NSD).exists():
            raise RuntimeError("nsd is not installed; scripts/test-deps.sh installs it")
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.zone = zone
        self.zones = (zone, *extra_zones)
        self.port = free_port()
        self.serial = 0
        self.proc = None
        (self.root / "nsd.conf").write_text(
            "server:\n"
            f"  ip-address: 127.0.0.1@{self.port}\n"
            "  do-ip6: no\n"
            '  username: ""\n'
            f'  zonesdir: "{self.root}"\n'
            '  database: ""\n'
            f'  pidfile: "{self.root}/nsd.pid"\n'
            f'  xfrdfile: "{self.root}/xfrd.state"\n'
            f'  zonelistfile: "{self.root}/zone.list"\n'
            f'  logfile: "{self.root}/nsd.log"\n'
            "  server-count: 1\n"
            "remote-control:\n"
            "  control-enable: no\n"
            + "".join(f"zone:\n  name: {z}\n  zonefile: {z}.zone\n" for z in self.zones)
        )

    def publish(self, records, ttl=300, extra=None, signer=None, tamper=None):
        """Serve the zone with ``records`` (zone-file lines relative to the
        origin), and each extra zone with its lines from ``extra``; with
        ``signer`` (support.dnssec.ZoneSigner) the zone is signed first, and
        ``tamper`` edits the signed text."""
        self.serial += 1
        extra = extra or {}
        for zone in self.zones:
            lines = [
                f"$ORIGIN {zone}.",
                f"$TTL {ttl}",
                f"@ IN SOA ns1.{self.zone}. hostmaster.{self.zone}. "
                f"{self.serial} 3600 600 86400 {ttl}",
                f"@ IN NS ns1.{self.zone}.",
                *(["ns1 IN A 127.0.0.1"] if zone == self.zone else []),
                *(records if zone == self.zone else extra.get(zone, [])),
            ]
            (self.root / f"{zone}.zone").write_text("\n".join(lines) + "\n")
        if signer is not None:
            signer.sign(self.root / f"{self.zone}.zone", tamper)
        self.stop()
        self.proc = subprocess.Popen(
            [NSD, "-d", "-c", str(self.root / "nsd.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_serial()

    def resolver(self):
        return loopback_resolver(self.port)

    def _wait_serial(self):
        deadline = time.monotonic() + READY_TIMEOUT
        for _ in range(int(READY_TIMEOUT / 0.1) + 1):
            try:
                answer = self.resolver().resolve(self.zone, "SOA")
                if answer[0].serial == self.serial:
                    return
            except dns.exception.DNSException:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                break
            time.sleep(0.1)
        log = (self.root / "nsd.log").read_text() if (self.root / "nsd.log").exists() else ""
        raise RuntimeError(f"nsd did not serve serial {self.serial}:\n{log}")

    def settings(self, port=25):
        """The ``dane`` argument of certsync.deployed for this server."""
        return {"port": port, "nameservers": ["127.0.0.1"], "dns_port": self.port}

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None
