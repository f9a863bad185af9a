"""
A host with systemd as PID 1, in a container (docker/build-image.sh
systemd-host), where salt-call runs from this run's own Salt: the test's
virtualenv and its Python are bind-mounted at their paths, so the container
runs the same Salt release as the host. For Salt's service states, which need
a running systemd.
"""

import json
import pathlib
import sys

from .fleet import MINION_CONFIG, wait_until
from .mailcow_stack import build_image, tlsprobe

REPO = pathlib.Path(__file__).resolve().parents[1]

#: postfix (STARTTLS on 25), dovecot (POP3S on 995; its IMAP on 143 behind HAProxy),
#: nginx (HTTPS on 443), HAProxy (IMAPS on 993: TLS offload to dovecot).
MAIL_SETUP = """
set -e
# At boot the unit failed (an unprivileged container has no mount namespaces for its
# /dev/log bind) and systemd may still be restarting it: stopped first, so that no
# start of it comes before its drop-in and dovecot's port change, or counts against
# its start limit.
systemctl stop haproxy
mkdir -p /etc/systemd/system/haproxy.service.d
printf '[Service]\nBindReadOnlyPaths=\n' > /etc/systemd/system/haproxy.service.d/container.conf
systemctl daemon-reload
mkdir -p /etc/ssl/mail /etc/haproxy/certs
install -m 644 {old}/fullchain.pem /etc/ssl/mail/fullchain.pem
install -m 600 {old}/privkey.pem /etc/ssl/mail/privkey.pem
cat {old}/fullchain.pem {old}/privkey.pem > /etc/haproxy/certs/mail.pem
chmod 600 /etc/haproxy/certs/mail.pem
postconf -e smtpd_tls_cert_file=/etc/ssl/mail/fullchain.pem \
    smtpd_tls_key_file=/etc/ssl/mail/privkey.pem smtpd_tls_security_level=may
cat > /etc/dovecot/conf.d/99-certsync.conf <<'EOF'
protocols = imap pop3
ssl = yes
ssl_cert = </etc/ssl/mail/fullchain.pem
ssl_key = </etc/ssl/mail/privkey.pem
service imap-login {{
  inet_listener imaps {{
    port = 0
  }}
}}
EOF
cat > /etc/nginx/sites-enabled/default <<'EOF'
server {{
  listen 443 ssl;
  ssl_certificate /etc/ssl/mail/fullchain.pem;
  ssl_certificate_key /etc/ssl/mail/privkey.pem;
  return 200 ok;
}}
EOF
cat >> /etc/haproxy/haproxy.cfg <<'EOF'
frontend imaps
    mode tcp
    option tcplog
    bind :993 ssl crt /etc/haproxy/certs/mail.pem
    default_backend dovecot_imap
backend dovecot_imap
    mode tcp
    server dovecot 127.0.0.1:143
EOF
systemctl restart postfix dovecot nginx
systemctl reset-failed haproxy
systemctl start haproxy
"""
ENDPOINTS = {"smtp": 25, "pop3s": 995, "https": 443, "imaps": 993}
FILES = [
    {"path": "/etc/ssl/mail/fullchain.pem", "contents": "fullchain"},
    {"path": "/etc/ssl/mail/privkey.pem", "contents": "key"},
    {"path": "/etc/haproxy/certs/mail.pem", "contents": "combined", "group": "haproxy",
     "mode": "0640"},
]  # fmt: skip


def bridge_gateway(client):
    """This host's address on Docker's bridge: a master listening there is reached by
    a minion in the container and by the minions on this host."""
    return client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]


def mail_consumer(verify_timeout=20):
    """The ``service`` consumer settings of the units MAIL_SETUP runs."""
    return {
        "kind": "service",
        "files": FILES,
        "units": {"postfix": ["smtp"], "dovecot": ["pop3s"], "nginx": ["https"]},
        "haproxy_socket": "/run/haproxy/admin.sock",
        "endpoints": ENDPOINTS,
        "verify_timeout": verify_timeout,
    }


class SystemdHost:
    """One container booted with systemd; ``salt_call`` runs salt-call --local in it."""

    def __init__(self, client, workdir):
        self.client = client
        self.workdir = pathlib.Path(workdir)
        self.container = None

    def start(self):
        mounts = {str(REPO): {"bind": str(REPO), "mode": "ro"}}
        mounts[str(self.workdir)] = {"bind": str(self.workdir), "mode": "rw"}
        base = pathlib.Path(sys.base_prefix).resolve()
        if not str(base).startswith("/usr"):  # a Python of its own (pyenv): at its path
            mounts[str(base)] = {"bind": str(base), "mode": "ro"}
        mounts["/sys/fs/cgroup"] = {"bind": "/sys/fs/cgroup", "mode": "rw"}
        self.container = self.client.containers.run(
            build_image("systemd-host"),
            detach=True,
            cgroupns="host",
            tmpfs={"/run": "", "/run/lock": ""},
            volumes=mounts,
            labels={"certsync.test": "systemd-host"},
        )
        wait_until(
            lambda: (
                self.sh("systemctl is-system-running").output.strip() in (b"running", b"degraded")
            ),
            60,
            what="systemd to boot in the container",
        )
        return self

    def set_up_mail(self, old):
        """Postfix, dovecot, nginx and HAProxy as units (MAIL_SETUP), serving the pair
        in the directory ``old`` (fullchain.pem, privkey.pem; in the work dir)."""
        done = self.sh(MAIL_SETUP.format(old=old))
        if done.exit_code != 0:
            raise RuntimeError(f"the mail units did not start: {done.output.decode()}")

    @property
    def address(self):
        """The container's address on Docker's bridge."""
        self.container.reload()
        return self.container.attrs["NetworkSettings"]["IPAddress"]

    def served(self, hostname, timeout=5):
        """What each of ENDPOINTS serves, probed from this host: {endpoint: fingerprint}."""
        found = tlsprobe.probe(hostname, ENDPOINTS, self.address, timeout=timeout)
        return {key: result.get("fingerprint") for key, result in found.items()}

    def start_minion(self, minion_id, master, ports):
        """A salt-minion daemon of this run's Salt as the unit salt-minion, connected
        to the master at ``master`` (its address on Docker's bridge) and ``ports``
        (its publish_port and ret_port)."""
        conf = self.workdir / minion_id / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        own = self.workdir / minion_id
        minion = {
            "id": minion_id,
            # its files in the work dir, but its event bus's sockets where the unix
            # socket's path stays within its 107 bytes (Salt puts each under root_dir)
            "root_dir": "/",
            "pki_dir": str(own / "pki"),
            "cachedir": str(own / "cache"),
            "sock_dir": f"/run/salt-{minion_id}",
            "pidfile": f"/run/salt-{minion_id}.pid",
            "log_file": str(own / "minion.log"),
            "master": master,
            "master_port": ports["ret_port"],
            "publish_port": ports["publish_port"],
            **MINION_CONFIG,
        }
        (conf / "minion").write_text(json.dumps(minion))
        salt_minion = pathlib.Path(sys.executable).parent / "salt-minion"
        done = self.container.exec_run(
            ["systemd-run", "--unit=salt-minion", str(salt_minion), f"--config-dir={conf}"]
        )
        if done.exit_code != 0:
            raise RuntimeError(f"salt-minion did not start: {done.output.decode()}")

    def sh(self, command):
        """Run a shell command as root in the container: (exit_code, output bytes)."""
        return self.container.exec_run(["sh", "-c", command])

    def salt_call(self, minion_id, pillar, *args):
        """salt-call --local as ``minion_id`` with this ``pillar``, the repo's salt/ tree
        as file_roots: the parsed JSON return and the exit code."""
        conf = self.workdir / minion_id / "conf"
        pillar_dir = self.workdir / minion_id / "pillar"
        for directory in (conf, pillar_dir):
            directory.mkdir(parents=True, exist_ok=True)
        (pillar_dir / "top.sls").write_text(json.dumps({"base": {"*": ["certsync"]}}))
        (pillar_dir / "certsync.sls").write_text(json.dumps(pillar))
        minion = {
            "id": minion_id,
            "file_client": "local",
            "root_dir": str(self.workdir / minion_id / "root"),
            "file_roots": {"base": [str(REPO / "salt")]},
            "pillar_roots": {"base": [str(pillar_dir)]},
        }
        (conf / "minion").write_text(json.dumps(minion))
        salt_call = pathlib.Path(sys.executable).parent / "salt-call"
        done = self.container.exec_run(
            [
                str(salt_call),
                f"--config-dir={conf}",
                "--local",
                "--out=json",
                "--retcode-passthrough",
                "--log-level=quiet",
                *args,
            ],
            demux=True,  # the JSON from stdout; Python's warnings go to stderr
        )
        out, err = done.output
        text = (out or b"").decode()
        if not text.strip():
            text = (err or b"").decode()
        try:
            return done.exit_code, json.loads(text)["local"]
        except (ValueError, KeyError):
            raise AssertionError(f"salt-call {' '.join(args)} in the container: {text}") from None

    def remove(self):
        if self.container is not None:
            self.container.remove(force=True)
