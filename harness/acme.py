"""
The real NPM source for tests and the demo: Debian's ``pebble`` (Let's
Encrypt's ACME test server) on loopback and Debian's ``certbot`` run with
Nginx Proxy Manager's own ``letsencrypt.ini`` and command lines.

NPM runs in Docker with ``./letsencrypt:/etc/letsencrypt``: certbot sees its
tree at ``/etc/letsencrypt`` while the host keeps it elsewhere. ``NpmCertbot``
does the same with a private mount namespace (``unshare -m``) that binds the
host-side directory over ``/etc/letsencrypt``, so every absolute path certbot
writes into ``renewal/npm-<id>.conf`` is the container's, as on a real NPM
host.
"""

import contextlib
import json
import os
import pathlib
import shlex
import shutil
import ssl
import subprocess
import time
import urllib.request

from cryptography import x509

from .mailcow_stack import free_ports
from .pki import Issued, issue

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CERTBOT = shutil.which("certbot") or "/usr/bin/certbot"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
READY_TIMEOUT = 30
CERTBOT_TIMEOUT = 120
#: NPM's image: docker/rootfs/etc/letsencrypt.ini (its six settings, our words).
NPM_INI = {
    "text": "True",
    "non-interactive": "True",
    "webroot-path": "/data/letsencrypt-acme-challenge",
    "key-type": "ecdsa",
    "elliptic-curve": "secp384r1",
    "preferred-chain": "ISRG Root X1",
}
CONTAINER_DIR = "/etc/letsencrypt"


class Pebble:
    """Pebble on loopback ports; its TLS listener has a certificate from ``ca``."""

    def __init__(self, root, ca):
        for tool in (PEBBLE, CERTBOT):
            if not pathlib.Path(tool).exists():
                raise RuntimeError(f"{tool} is missing; scripts/test-deps.sh installs it")
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ca_bundle = self.root / "trust.pem"
        self.ca_bundle.write_bytes(ca.root_pem())
        listener = issue("127.0.0.1", issuer=ca.intermediate, sans=["localhost"])
        (self.root / "cert.pem").write_bytes(listener.fullchain_pem())
        (self.root / "key.pem").write_bytes(listener.key_pem())
        self.port, self.management, http, tls = free_ports(4)
        (self.root / "pebble.json").write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"127.0.0.1:{self.port}",
                        "managementListenAddress": f"127.0.0.1:{self.management}",
                        "certificate": str(self.root / "cert.pem"),
                        "privateKey": str(self.root / "key.pem"),
                        "httpPort": http,
                        "tlsPort": tls,
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                }
            )
        )
        self.proc = None

    @property
    def directory(self):
        return f"https://localhost:{self.port}/dir"

    def start(self):
        env = {
            **os.environ,
            "PEBBLE_VA_ALWAYS_VALID": "1",
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
        }
        with open(self.root / "pebble.log", "wb") as out:
            self.proc = subprocess.Popen(
                [PEBBLE, "-config", str(self.root / "pebble.json")],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        for _ in range(int(READY_TIMEOUT / 0.1) + 1):
            with contextlib.suppress(OSError):
                self._get(f"{self.directory}")
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise RuntimeError(f"pebble did not answer:\n{(self.root / 'pebble.log').read_text()}")

    def _get(self, url):
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(url, context=context, timeout=5) as answer:  # noqa: S310
            return answer.read()

    def root_pem(self):
        """Pebble's issuing root (made anew at each start), for ``ca_file`` checks."""
        return self._get(f"https://localhost:{self.management}/roots/0")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class NpmCertbot:
    """NPM's certbot: its ini and its command lines, its tree bind-mounted as in NPM's container.

    ``host_dir`` is the host side of NPM's ``./letsencrypt`` volume (what the
    certsync source minion reads); certbot itself sees ``/etc/letsencrypt``.
    """

    def __init__(self, root, pebble, email="admin@example.test"):
        self.root = pathlib.Path(root)
        self.pebble = pebble
        self.email = email
        self.host_dir = self.root / "letsencrypt"
        self.host_dir.mkdir(parents=True, exist_ok=True)
        self.ini = self.root / "letsencrypt.ini"
        # NPM's ini; only the webroot (served by NPM's nginx, unused with
        # PEBBLE_VA_ALWAYS_VALID) moves under the test's directory.
        webroot = self.root / "acme-challenge"
        webroot.mkdir(exist_ok=True)
        settings = {**NPM_INI, "webroot-path": str(webroot)}
        self.ini.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))

    @property
    def live_dir(self):
        return self.host_dir / "live"

    def lineage(self, cert_id):
        return self.live_dir / f"npm-{cert_id}"

    def _common(self):
        return [
            "--config",
            str(self.ini),
            "--work-dir",
            str(self.root / "work"),
            "--logs-dir",
            str(self.root / "logs"),
        ]

    def issue(self, cert_id, domains, key_type=None):
        """NPM's requestLetsEncryptSsl: ``certbot certonly`` (a new key, always)."""
        args = ["certonly", "-n", *self._common(), "--cert-name", f"npm-{cert_id}"]
        args += ["--agree-tos", "--authenticator", "webroot", "-m", self.email]
        args += ["--preferred-challenges", "http", "--domains", ",".join(domains)]
        if key_type:
            args += ["--key-type", key_type]
        return self._certbot(args)

    def renew(self, cert_id):
        """NPM's renewLetsEncryptSsl: ``certbot renew --force-renewal`` for one lineage."""
        args = ["renew", "--force-renewal", *self._common(), "--cert-name", f"npm-{cert_id}"]
        args += ["--preferred-challenges", "http", "--no-random-sleep-on-renew"]
        args += ["--disable-hook-validation"]
        return self._certbot(args)

    def _certbot(self, args):
        # NPM's LE_SERVER setting appends --server; here it is Pebble.
        argv = [CERTBOT, *args, "--server", self.pebble.directory]
        script = (
            f"mount --bind {shlex.quote(str(self.host_dir))} {CONTAINER_DIR} && "
            f"exec {shlex.join(argv)}"
        )
        env = {**os.environ, "REQUESTS_CA_BUNDLE": str(self.pebble.ca_bundle)}
        proc = subprocess.run(
            [UNSHARE, "--mount", "--propagation", "private", "sh", "-c", script],
            capture_output=True,
            text=True,
            env=env,
            timeout=CERTBOT_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"certbot {args[0]} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def current(self, cert_id):
        """The lineage's pair as live/ points to it now, as an ``Issued``."""
        live = self.lineage(cert_id)
        return Issued.read(live / "fullchain.pem", live / "privkey.pem")

    def leaf(self, cert_id):
        """The certificate live/npm-<id>/cert.pem points to now."""
        return x509.load_pem_x509_certificate((self.lineage(cert_id) / "cert.pem").read_bytes())

    def spki_sha256(self, cert_id):
        return self.current(cert_id).spki_sha256

    def renewal_conf(self, cert_id):
        return self.host_dir / "renewal" / f"npm-{cert_id}.conf"
