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

from .fleet import wait_until
from .mailcow_stack import build_image

REPO = pathlib.Path(__file__).resolve().parents[1]


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
