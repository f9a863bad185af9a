"""
A mailcow-like stack for tests: three containers from the locally built
image, labelled like mailcow's compose services, reading
``data/assets/ssl/{cert,key}.pem`` from a bind mount at ``/etc/ssl/mail`` and
serving real TLS (postfix, dovecot, nginx) on loopback ports.
"""

import contextlib
import pathlib
import shutil
import socket
import subprocess
import time
import uuid

import docker

from .loader import load_loader_module
from .pki import write_pair

CONF_DIR = pathlib.Path(__file__).resolve().parents[1] / "docker" / "mailcow"
BUILD_SCRIPT = CONF_DIR.parent / "build-image.sh"
HOST = "mail.example.test"
SERVICES = {
    "postfix-mailcow": ("postfix", {"smtp": 25, "submission": 587, "smtps": 465}),
    "dovecot-mailcow": (
        "dovecot",
        {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995, "sieve": 4190},
    ),
    "nginx-mailcow": ("nginx", {"https": 443}),
}
READY_TIMEOUT = 60
START_ATTEMPTS = 3

_tlsprobe = load_loader_module("modules", "tlsprobe")
_tlsprobe.__context__ = {}


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


def build_image():
    """Build (or reuse) the test image; return its tag."""
    proc = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building the mailcow-like image failed:\n{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1]


class MailcowStack:
    """One mailcow-dockerized checkout with its TLS-serving containers."""

    def __init__(self, client, image, root, serving, nginx_seclevel=2):
        self.client = client
        self.image = image
        self.root = pathlib.Path(root)
        self.project = f"certsynctest{uuid.uuid4().hex[:8]}"
        self.ssl_dir = self.root / "data" / "assets" / "ssl"
        self.nginx_seclevel = nginx_seclevel
        self.containers = {}
        self.endpoints = {}
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "mailcow.conf").write_text(
            "# mailcow.conf of a test stack\n"
            f"MAILCOW_HOSTNAME={HOST}\n"
            f"COMPOSE_PROJECT_NAME={self.project}\n"
            "SKIP_LETS_ENCRYPT=n\n"
            "ENABLE_SSL_SNI=n\n"
        )
        write_pair(self.ssl_dir, serving)

    def start(self):
        """Run the containers; on a host-port race, retry with fresh ports."""
        names = [name for _, ports in SERVICES.values() for name in ports]
        for attempt in range(1, START_ATTEMPTS + 1):
            self.endpoints = dict(zip(names, free_ports(len(names)), strict=True))
            try:
                self._run_containers()
                break
            except docker.errors.APIError as exc:
                self.remove()
                self.containers = {}
                if "port is already allocated" not in str(exc) or attempt == START_ATTEMPTS:
                    raise
        self.wait_ready()
        return self

    def _run_containers(self):
        for service, (conf, ports) in SERVICES.items():
            env = {"TLS_SECLEVEL": str(self.nginx_seclevel)} if conf == "nginx" else {}
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
                },
                volumes={
                    str(self.ssl_dir): {"bind": "/etc/ssl/mail", "mode": "ro"},
                    str(CONF_DIR / conf): {"bind": "/conf", "mode": "ro"},
                },
                # Fixed host ports, as mailcow has: a restart keeps them.
                ports={
                    f"{port}/tcp": ("127.0.0.1", self.endpoints[name])
                    for name, port in ports.items()
                },
            )
            self.containers[service] = container

    def wait_ready(self):
        """Until every endpoint completes a TLS handshake (bounded)."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            results = _tlsprobe.probe(HOST, self.endpoints, "127.0.0.1", timeout=3)
            if all(r["ok"] for r in results.values()):
                return results
            if time.monotonic() > deadline:
                failing = {n: r.get("error") for n, r in results.items() if not r["ok"]}
                logs = {
                    s: c.logs(tail=20).decode(errors="replace") for s, c in self.containers.items()
                }
                raise RuntimeError(f"stack not ready: {failing}\n{logs}")
            time.sleep(0.5)

    def served(self):
        results = _tlsprobe.probe(HOST, self.endpoints, "127.0.0.1", timeout=5)
        return {name: result.get("fingerprint") for name, result in results.items()}

    def fetch(self, endpoint, timeout=2):
        """One probe of one endpoint (tlsprobe.fetch's result; ok False on failure)."""
        return _tlsprobe.probe(
            HOST, {endpoint: self.endpoints[endpoint]}, "127.0.0.1", timeout=timeout
        )[endpoint]

    def served_spki(self):
        """The SPKI SHA-256 (the TLSA 3 1 1 data) each endpoint serves."""
        results = _tlsprobe.probe(HOST, self.endpoints, "127.0.0.1", timeout=5)
        return {name: result.get("spki_sha256") for name, result in results.items()}

    def exec(self, service, *cmd):
        return self.containers[service].exec_run(list(cmd))

    def remove(self):
        for container in self.containers.values():
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

    def state_args(self, **extra):
        """Arguments of certsync.deployed for this stack."""
        endpoints = ",".join(f'"{name}": {port}' for name, port in self.endpoints.items())
        args = {
            "name": str(self.ssl_dir),
            "hostname": HOST,
            "mailcow_dir": str(self.root),
            "services": '["postfix-mailcow", "dovecot-mailcow", "nginx-mailcow"]',
            "endpoints": "{" + endpoints + "}",
            "probe_address": "127.0.0.1",
            "verify_timeout": "15",
        }
        args.update(extra)
        return args


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
