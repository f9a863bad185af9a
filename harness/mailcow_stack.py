"""
A mailcow-like stack for tests, built to how mailcow really behaves where
certsync touches it (see shared/UPSTREAM-FACTS.md): containers from the
locally built image, labelled like mailcow's compose services (project name
lower-cased), reading ``data/assets/ssl`` at ``/etc/ssl/mail`` and serving
real TLS (postfix, dovecot, nginx) on loopback ports that ``mailcow.conf``
names, ``IP:PORT`` forms included.

- ``ssl/<MAILCOW_HOSTNAME>/`` (``cert.pem``, ``key.pem``, ``domains``) exists
  from the start, as on every mailcow whose acme ever ran, beside
  ``dhparams.pem`` and ``acme/``; tests add other per-name dirs.
- postfix builds ``tls_server_sni_maps`` with ``postmap -F`` at start (a
  snapshot of the files), dovecot a ``local_name`` block per name, nginx a
  server block per dir except the hostname's (``harness/docker/mailcow/``).
- With ``acme=True``, acme-mailcow is created by ``docker-compose`` from a
  compose file in the checkout (``.env`` -> ``mailcow.conf``, as mailcow
  has it): unless created with ``SKIP_LETS_ENCRYPT=y`` it copies
  ``ssl/<hostname>/`` over the top-level pair every 2 s.
"""

import contextlib
import json
import pathlib
import shutil
import socket
import subprocess
import time
import uuid
import warnings

import docker
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dh

from .loader import load_loader_module, mailcow_mod
from .pki import write_pair, write_sni_dir

#: The resolver of a container on Docker's default bridge: its own loopback,
#: where nothing answers, so a lookup fails at once and stays on the host
#: (postfix's smtpd looks up every client's name; through the host's resolver
#: that stalled a handshake 5-7 s). mailcow has unbound-mailcow for this. On a
#: network of our own, Docker's resolver answers (the relay's alias) and a
#: loopback upstream would stall it instead: those keep Docker's.
NO_RESOLVER = ["127.0.0.1"]

CONF_DIR = pathlib.Path(__file__).resolve().parent / "docker" / "mailcow"
BUILD_SCRIPT = CONF_DIR.parent / "build-image.sh"
HOST = "mail.example.test"
#: What mailcow's own certificates cover for the mail domain example.test.
NAMES = [HOST, "autodiscover.example.test", "autoconfig.example.test"]
SERVICES = {
    "postfix-mailcow": ("postfix", {"smtp": 25, "submission": 587, "smtps": 465}),
    "dovecot-mailcow": (
        "dovecot",
        {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995, "sieve": 4190},
    ),
    "nginx-mailcow": ("nginx", {"https": 443}),
}
#: The endpoints whose mailcow.conf port the test writes as IP:PORT (https: HTTPS_BIND).
WITH_IP = {"smtp", "smtps", "imaps", "pop3", "sieve"}
COMPOSE_FILE = """\
version: "2.1"
services:
  acme-mailcow:
    image: {image}
    command: ["/conf/run.sh"]
    network_mode: none
    environment:
      - MAILCOW_HOSTNAME=${{MAILCOW_HOSTNAME}}
      - SKIP_LETS_ENCRYPT=${{SKIP_LETS_ENCRYPT:-n}}
    volumes:
      - ./data/assets/ssl:/var/lib/acme/
      - {conf}:/conf:ro
"""
READY_TIMEOUT = 60
START_ATTEMPTS = 3

tlsprobe = load_loader_module("modules", "tlsprobe")
tlsprobe.__context__ = {}


def free_ports(count):
    """``count`` distinct loopback ports that are free now.

    Every socket stays bound until all are picked, so the kernel cannot hand
    the same port out twice.
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def free_port():
    return free_ports(1)[0]


def build_image(recipe="mailcow-like"):
    """Build (or reuse) a test image (docker/build-image.sh's recipe); return its tag."""
    proc = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(BUILD_SCRIPT), recipe],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building the {recipe} image failed:\n{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1]


class MailcowStack:
    """One mailcow-dockerized checkout with its TLS-serving containers."""

    def __init__(
        self,
        client,
        image,
        root,
        serving,
        nginx_seclevel=2,
        acme=False,
        names=None,
        relay=None,
        relay_ca_pem=None,
    ):
        self.client = client
        self.image = image
        self.root = pathlib.Path(root)
        suffix = uuid.uuid4().hex[:8]
        # mailcow.conf's spelling; compose and mailcow look containers up lower-cased
        self.project_conf = f"CertsyncTest{suffix}"
        self.project = self.project_conf.lower()
        self.ssl_dir = self.root / "data" / "assets" / "ssl"
        self.web_dir = self.root / "data" / "web"
        self.dovecot_conf_dir = self.root / "data" / "conf" / "dovecot"
        self.nginx_seclevel = nginx_seclevel
        self.acme = acme
        self.relay = relay
        self.containers = {}
        self.endpoints = {}
        self.root.mkdir(parents=True, exist_ok=True)
        write_pair(self.ssl_dir, serving)
        write_sni_dir(self.ssl_dir, serving, names or NAMES)
        (self.ssl_dir / "acme").mkdir()
        (self.web_dir / ".well-known").mkdir(parents=True)
        self.dovecot_conf_dir.mkdir(parents=True)
        with warnings.catch_warnings():  # mailcow still ships one; nothing here reads it
            warnings.simplefilter("ignore")
            params = dh.generate_parameters(generator=2, key_size=512)
        (self.ssl_dir / "dhparams.pem").write_bytes(
            params.parameter_bytes(serialization.Encoding.PEM, serialization.ParameterFormat.PKCS3)
        )
        if relay is not None:
            self.relay_dir = self.root / "relay"
            self.relay_dir.mkdir()
            (self.relay_dir / "ca.pem").write_bytes(relay_ca_pem or b"")
            self._write_relay(relay.relayhost, relay.password)

    def _write_conf(self):
        lines = [
            "# mailcow.conf of a test stack",
            f"MAILCOW_HOSTNAME={HOST}",
            f"COMPOSE_PROJECT_NAME={self.project_conf}",
            "SKIP_LETS_ENCRYPT=n",
            "ENABLE_SSL_SNI=n",
            *(
                f"{key}={'127.0.0.1:' if name in WITH_IP else ''}{self.endpoints[name]}"
                for name, key in mailcow_mod.CONF_PORT_KEYS.items()
            ),
            "HTTPS_BIND=127.0.0.1",
        ]
        (self.root / "mailcow.conf").write_text("\n".join(lines) + "\n")
        (self.root / "mailcow.conf").chmod(0o644)

    def start(self):
        """Run the containers; on a host-port race, retry with fresh ports."""
        names = [name for _, ports in SERVICES.values() for name in ports]
        for attempt in range(1, START_ATTEMPTS + 1):
            self.endpoints = dict(zip(names, free_ports(len(names)), strict=True))
            self._write_conf()
            try:
                self._run_containers()
                break
            except docker.errors.APIError as exc:
                self.remove()
                self.containers = {}
                if "port is already allocated" not in str(exc) or attempt == START_ATTEMPTS:
                    raise
        if self.acme:
            self.start_acme()
        self.wait_ready()
        return self

    def _run_containers(self):
        for service, (conf, ports) in SERVICES.items():
            env = {"MAILCOW_HOSTNAME": HOST}
            if conf == "nginx":
                env.update(
                    TLS_SECLEVEL=str(self.nginx_seclevel), HTTPS_PORT=str(self.endpoints["https"])
                )
                # mailcow publishes ${HTTPS_BIND}:${HTTPS_PORT}:${HTTPS_PORT}
                published = {
                    f"{self.endpoints['https']}/tcp": ("127.0.0.1", self.endpoints["https"])
                }
            else:
                published = {
                    f"{port}/tcp": ("127.0.0.1", self.endpoints[name])
                    for name, port in ports.items()
                }
            extra = {}
            if conf == "nginx":
                extra = {"volumes": {str(self.web_dir): {"bind": "/web", "mode": "ro"}}}
            if conf == "dovecot":  # mailcow's data/conf/dovecot (its extra.conf)
                extra = {
                    "volumes": {
                        str(self.dovecot_conf_dir): {"bind": "/etc/dovecot/mailcow", "mode": "ro"}
                    }
                }
            if conf == "postfix" and self.relay is not None:
                extra = {
                    "network": self.relay.network_name,
                    "volumes": {str(self.relay_dir): {"bind": "/relay", "mode": "ro"}},
                }
            container = self.client.containers.run(
                self.image,
                ["/conf/run.sh"],
                name=f"{self.project}-{service}-1",
                detach=True,
                environment=env,
                hostname="mail",
                labels={
                    "com.docker.compose.project": self.project,
                    "com.docker.compose.service": service,
                    "com.docker.compose.oneoff": "False",
                },
                volumes={
                    str(self.ssl_dir): {"bind": "/etc/ssl/mail", "mode": "ro"},
                    str(CONF_DIR / conf): {"bind": "/conf", "mode": "ro"},
                    **extra.pop("volumes", {}),
                },
                # Fixed host ports, as mailcow has: a restart keeps them.
                ports=published,
                dns=None if "network" in extra else NO_RESOLVER,
                **extra,
            )
            self.containers[service] = container

    def _write_relay(self, relayhost, password):
        """mailcow's relayhost and its login, where postfix reads them (``/relay``)."""
        (self.relay_dir / "relayhost").write_text(relayhost + "\n")
        (self.relay_dir / "sasl_passwd").write_text(
            f"{relayhost} {self.relay.username}:{password}\n"
        )

    def set_relay(self, relayhost=None, password=None):
        """Change the relayhost or its password, as mailcow's admin UI does; postfix reloads."""
        relayhost = relayhost or self.relay.relayhost
        self._write_relay(relayhost, password or self.relay.password)
        for cmd in (["postconf", "-e", f"relayhost = {relayhost}"], ["postfix", "reload"]):
            result = self.exec("postfix-mailcow", *cmd)
            if result.exit_code != 0:
                raise RuntimeError(f"{cmd} failed: {result.output!r}")

    def start_acme(self):
        """acme-mailcow as mailcow has it: docker-compose, its env from mailcow.conf."""
        (self.root / "docker-compose.yml").write_text(
            COMPOSE_FILE.format(image=self.image, conf=CONF_DIR / "acme")
        )
        env_link = self.root / ".env"
        if not env_link.is_symlink():
            env_link.symlink_to("mailcow.conf")
        compose("up", "-d", "--no-deps", "acme-mailcow", cwd=self.root)
        self.containers["acme-mailcow"] = self.service_container("acme-mailcow")

    def service_container(self, service):
        """The (non one-off) container compose runs for ``service`` now."""
        (container,) = self.client.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.project}",
                    f"com.docker.compose.service={service}",
                    "com.docker.compose.oneoff=False",
                ]
            },
        )
        return container

    def wait_ready(self):
        """Until every endpoint completes a TLS handshake (bounded)."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            results = tlsprobe.probe(HOST, self.endpoints, "127.0.0.1", timeout=3)
            if all(r["ok"] for r in results.values()):
                return results
            if time.monotonic() > deadline:
                failing = {n: r.get("error") for n, r in results.items() if not r["ok"]}
                logs = {
                    s: c.logs(tail=20).decode(errors="replace") for s, c in self.containers.items()
                }
                raise RuntimeError(f"stack not ready: {failing}\n{logs}")
            time.sleep(0.5)

    def served(self, endpoints=None):
        """What each endpoint (or each of ``endpoints``) serves for the hostname: {name: fp}."""
        return self.served_names(None, endpoints)

    def fetch(self, endpoint, timeout=2):
        """One probe of one endpoint (tlsprobe.fetch's result; ok False on failure)."""
        return tlsprobe.probe(
            HOST, {endpoint: self.endpoints[endpoint]}, "127.0.0.1", timeout=timeout
        )[endpoint]

    def served_spki(self):
        """The SPKI SHA-256 (the TLSA 3 1 1 data) each endpoint serves."""
        results = tlsprobe.probe(HOST, self.endpoints, "127.0.0.1", timeout=5)
        return {name: result.get("spki_sha256") for name, result in results.items()}

    def exec(self, service, *cmd):
        return self.containers[service].exec_run(list(cmd))

    def probe(self, names=None, endpoints=None, timeout=5):
        """tlsprobe.probe of this stack's endpoints (or some), for ``names`` (SNI)."""
        chosen = {n: p for n, p in self.endpoints.items() if endpoints is None or n in endpoints}
        return tlsprobe.probe(HOST, chosen, "127.0.0.1", timeout=timeout, names=names)

    def note_served(self, fingerprint, seen):
        """Probe the endpoints not in ``seen`` ({endpoint: when it was first seen
        serving ``fingerprint``}) and add those that serve it now, each with the
        time its handshake ended; True once every endpoint is in ``seen``."""
        stale = [name for name in self.endpoints if name not in seen]
        if stale:
            began = time.time()
            for name, result in self.probe(endpoints=stale).items():
                if result.get("fingerprint") == fingerprint:
                    seen[name] = began + result["elapsed_ms"] / 1000
        return seen.keys() >= set(self.endpoints)

    def served_names(self, names, endpoints=None):
        """What each endpoint serves for each SNI name (``""``: none): {"smtp/<name>": fp}."""
        results = self.probe(names, endpoints)
        return {key: result.get("fingerprint") for key, result in results.items()}

    def restart(self, *services):
        """Restart containers (mailcow's services read the per-name dirs at start)."""
        for service in services or ("postfix-mailcow", "dovecot-mailcow", "nginx-mailcow"):
            self.containers[service].restart(timeout=5)
        self.wait_ready()

    def started_at(self):
        """When each container last started (a restart changes it)."""
        found = {}
        for service, container in self.containers.items():
            container.reload()
            found[service] = container.attrs["State"]["StartedAt"]
        return found

    def remove(self):
        """Every container of the project, compose's included."""
        for container in self.client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.project}"}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

    def state_args(self, **extra):
        """Arguments of certsync.deployed for this stack: endpoints by name, their
        ports and addresses from mailcow.conf."""
        args = {
            "name": str(self.ssl_dir),
            "hostname": HOST,
            "mailcow_dir": str(self.root),
            "services": '["postfix-mailcow", "dovecot-mailcow", "nginx-mailcow"]',
            "endpoints": json.dumps(list(self.endpoints)),
            "probe_address": "127.0.0.1",
            "verify_timeout": "15",
        }
        args.update(extra)
        return args


def compose(*args, cwd):
    """Debian's docker-compose in a checkout, as mailcow's docs run ``docker compose``."""
    binary = shutil.which("docker-compose")
    if not binary:
        raise RuntimeError("docker-compose is missing; scripts/test-deps.sh installs it")
    proc = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"docker-compose {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def docker_client():
    """A Docker client, or an error saying how to start the engine."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        raise RuntimeError(
            f"no Docker engine answers ({exc}); scripts/test.sh installs and starts one"
        ) from None
    return client
