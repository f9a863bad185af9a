"""
A real smarthost for tests, like the SMTP2GO relay of the deployment we
replace: postfix in a container from the mailcow-like image, on port 2525,
STARTTLS required, SASL AUTH (PLAIN/LOGIN, by dovecot's auth service)
required to relay, and everything accepted is discarded, so nothing leaves.

It sits on a Docker network of its own under the name ``relay.example.test``;
the mailcow look-alike's postfix joins that network when the stack has a
relay (``MailcowStack(relay=...)``). Its port 2525 is also published on a
loopback address of its own (127.x.y.z), so checks from this host reach it
at the relay's real port.
"""

import contextlib
import pathlib
import re
import secrets
import time
import uuid

import docker

from harness.pki import write_pair

CONF_DIR = pathlib.Path(__file__).resolve().parents[2] / "harness" / "docker" / "relay"
NAME = "relay.example.test"
PORT = 2525
READY_TIMEOUT = 60


class SmtpRelay:
    """One smarthost container and its network."""

    def __init__(self, client, image, root, issued, username="certsync", password=None):
        self.client = client
        self.image = image
        self.root = pathlib.Path(root)
        self.issued = issued
        self.username = username
        self.password = password or secrets.token_urlsafe(12)
        suffix = uuid.uuid4().hex[:8]
        self.network_name = f"certsync-relay-{suffix}"
        self.container_name = f"certsync-relay-{suffix}"
        self.network = None
        self.container = None
        self.host_address = "127.{}.{}.{}".format(*(2 + secrets.randbelow(250) for _ in range(3)))

    @property
    def relayhost(self):
        """mailcow's relayhost, as postfix writes it: ``[host]:port``."""
        return f"[{NAME}]:{PORT}"

    def start(self):
        etc = self.root / "etc"
        write_pair(etc, self.issued)
        (etc / "users").write_text(f"{self.username}:{{PLAIN}}{self.password}\n")
        self.network = self.client.networks.create(self.network_name, driver="bridge")
        self.container = self.client.containers.run(
            self.image,
            ["/conf/run.sh"],
            name=self.container_name,
            detach=True,
            hostname="relay",
            network=self.network_name,
            networking_config={
                self.network_name: self.client.api.create_endpoint_config(aliases=[NAME])
            },
            volumes={
                str(etc): {"bind": "/etc/relay", "mode": "ro"},
                str(CONF_DIR): {"bind": "/conf", "mode": "ro"},
            },
            ports={f"{PORT}/tcp": (self.host_address, PORT)},
        )
        self._wait_ready()
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            self.container.reload()
            running = self.container.status == "running"
            if running and self.container.exec_run(["postfix", "status"]).exit_code == 0:
                return
            if (not running and self.container.status != "created") or time.monotonic() > deadline:
                logs = self.container.logs(tail=30).decode(errors="replace")
                raise RuntimeError(f"the test relay did not start:\n{logs}")
            time.sleep(0.3)

    def received(self):
        """Queue ids of messages the relay accepted from an authenticated client."""
        text = self.container.logs().decode(errors="replace")
        accepted = re.compile(r"postfix/smtpd\[\d+\]: (\w+): client=\S+, sasl_method=")
        return [found[1] for found in map(accepted.search, text.splitlines()) if found]

    def stop(self):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            if self.container is not None:
                self.container.remove(force=True)
            if self.network is not None:
                self.network.remove()
