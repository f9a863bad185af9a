"""Debian's Caddy (2.6) against pebble on loopback: a real second certificate source.

Caddy obtains the certificate for its site at start and keeps it in its file
storage (``certificates/<issuer>/<name>/<name>.crt|.key|.json``). Pebble issues
five-year certificates, so no renewal comes due in a test: ``reissue`` removes
the stored certificate and reloads Caddy's configuration, and Caddy obtains a
new one at once (with the stored key: Caddy 2.6 reuses it); ``new_key`` removes
the whole site directory and restarts Caddy, which obtains one with a new key.
"""

import contextlib
import pathlib
import shutil
import subprocess
import time

from .mailcow_stack import free_ports
from .pki import Issued

CADDY = shutil.which("caddy") or "/usr/bin/caddy"
READY_TIMEOUT = 30


class Caddy:
    """Caddy serving ``hostname`` on loopback ports, its storage under ``root``."""

    def __init__(self, root, pebble, hostname="mail.example.test"):
        if not pathlib.Path(CADDY).exists():
            raise RuntimeError(f"{CADDY} is missing; scripts/test-deps.sh installs it")
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hostname = hostname
        self.storage = self.root / "storage"
        self.http, self.https, self.admin = free_ports(3)
        self.config = self.root / "Caddyfile"
        self.config.write_text(
            "{\n"
            f"\tstorage file_system {{\n\t\troot {self.storage}\n\t}}\n"
            f"\tacme_ca {pebble.directory}\n"
            f"\tacme_ca_root {pebble.ca_bundle}\n"
            f"\thttp_port {self.http}\n\thttps_port {self.https}\n"
            f"\tadmin 127.0.0.1:{self.admin}\n"
            "\tskip_install_trust\n\temail admin@example.test\n"
            "}\n\n"
            f'{hostname}:{self.https} {{\n\tbind 127.0.0.1\n\trespond "ok"\n}}\n'
        )
        self.env = {
            "HOME": str(self.root),
            "XDG_DATA_HOME": str(self.root / "data"),
            "XDG_CONFIG_HOME": str(self.root / "config"),
            "PATH": "/usr/bin:/bin",
        }
        self.proc = None

    @property
    def site_dir(self):
        found = sorted(self.storage.glob(f"certificates/*/{self.hostname}"))
        return found[0] if found else None

    @property
    def crt(self):
        return self.site_dir / f"{self.hostname}.crt" if self.site_dir else None

    def current(self):
        """The stored pair now, as an ``Issued``."""
        return Issued.read(self.crt, self.crt.with_suffix(".key"))

    def start(self):
        with open(self.root / "caddy.log", "ab") as out:
            self.proc = subprocess.Popen(
                [CADDY, "run", "--config", str(self.config), "--adapter", "caddyfile"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        try:
            return self.wait_for_certificate()
        except BaseException:
            self.stop()
            raise

    def wait_for_certificate(self, previous=None):
        """The stored certificate's bytes once there (and not ``previous``)."""
        deadline = time.monotonic() + READY_TIMEOUT
        for _ in range(int(READY_TIMEOUT / 0.1) + 1):
            crt = self.crt
            with contextlib.suppress(OSError):
                data = crt.read_bytes() if crt else b""
                if data and data != previous and b"END CERTIFICATE" in data:
                    return data
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise RuntimeError(f"caddy stored no certificate:\n{(self.root / 'caddy.log').read_text()}")

    def reissue(self):
        """Remove the stored certificate and reload: Caddy obtains a new one (same key)."""
        previous = self.crt.read_bytes()
        self.crt.unlink()
        subprocess.run(
            [
                CADDY,
                "reload",
                "--config",
                str(self.config),
                "--adapter",
                "caddyfile",
                "--address",
                f"127.0.0.1:{self.admin}",
                "--force",
            ],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=30,
        )
        return self.wait_for_certificate(previous)

    def new_key(self):
        """Remove the site's directory and restart: a new certificate with a new key."""
        self.stop()
        shutil.rmtree(self.site_dir)
        return self.start()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None
