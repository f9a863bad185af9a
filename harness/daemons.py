"""salt-master and salt-minion daemons for the demo and the benchmarks, started
with their own configs under a work dir and driven with the salt CLIs."""

import json
import os
import pathlib
import subprocess
import sys

from .fleet import master_config, wait_until
from .mailcow_stack import free_ports

BIN = pathlib.Path(sys.executable).parent
#: Seconds the set-up's salt calls wait for their returns (the CLI's own: 5).
SETUP_TIMEOUT = 120


class SaltDaemons:
    """A master and its minions, as daemons, driven with the salt CLIs."""

    def __init__(self, work):
        self.work = work
        self.master_dir = work / "master"
        self.procs, self.minions = [], {}

    def write_master(self, pillar_dir, interface="127.0.0.1"):
        """The master's configuration; it listens on ``interface`` (loopback, or this
        host's address on Docker's bridge when a minion runs in a container)."""
        config = master_config(pillar_dir)
        ports = dict(zip(("publish_port", "ret_port"), free_ports(2), strict=True))
        self.interface = interface
        config.update(
            root_dir=str(self.master_dir),
            user="root",
            interface=interface,
            # Demo only: the minions are ours, made a moment ago on this host.
            auto_accept=True,
            log_file=str(self.master_dir / "master.log"),
            **ports,
        )
        self.ports = ports
        self.master_dir.mkdir(parents=True)
        (self.master_dir / "master").write_text(json.dumps(config))

    def start_master(self):
        self._spawn("salt-master", self.master_dir)
        self.opts = self._master_opts()

    def start_minion(self, minion_id):
        directory = self.work / minion_id
        directory.mkdir(parents=True)
        (directory / "minion").write_text(
            json.dumps(
                {
                    "id": minion_id,
                    "root_dir": str(directory),
                    "master": self.interface,
                    "master_port": self.ports["ret_port"],
                    "publish_port": self.ports["publish_port"],
                    "log_file": str(directory / "minion.log"),
                    "log_level_logfile": "info",
                }
            )
        )
        self.minions[minion_id] = self._spawn("salt-minion", directory)

    def restart_minion(self, minion_id):
        """Stop a minion and start it again with its configuration as it is now
        (an engine the formula wrote into minion.d starts with it); returns when
        it answers."""
        proc = self.minions[minion_id]
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        self.procs.remove(proc)
        self.minions[minion_id] = self._spawn("salt-minion", self.work / minion_id)
        wait_until(lambda: minion_id in self.pinged(), 120, interval=1, what=f"{minion_id} back")

    def pinged(self):
        """The minions that answer a test.ping now."""
        return (self.run("salt", "*", "test.ping", check=False)[1] or {}).keys()

    def start_converged(self, source, consumers, bystanders=()):
        """Master and minions started, the formula applied on both roles (the
        ``bystanders`` get nothing of certsync); the source minion restarted with
        the certsync_watch engine the formula wrote into its configuration (a
        salt-minion service is restarted by the formula itself). Each daemon's pid."""
        self.start_master()
        for minion_id in [source, *consumers, *bystanders]:
            self.start_minion(minion_id)
        everyone = {source, *consumers, *bystanders}
        wait_until(lambda: self.pinged() >= everyone, 120, interval=1, what="every minion")
        self.run("salt-run", "saltutil.sync_all")
        # On a loaded host (bench_bus at 8 consumers, 2 cores) these return later than
        # the salt CLI's 5 s, after which it gives up ("No return received"): wait.
        wait = f"--timeout={SETUP_TIMEOUT}"
        self.run("salt", wait, "-L", ",".join([source, *consumers]), "saltutil.sync_all")
        self.run("salt", wait, "-L", ",".join(consumers), "state.apply", "certsync")
        # queued behind the publication the consumers' new recipient keys set off
        self.run("salt", wait, source, "state.apply", "certsync", "queue=True")
        self.restart_minion(source)
        return {"master": self.procs[0].pid, **{m: p.pid for m, p in self.minions.items()}}

    def _spawn(self, daemon, config_dir):
        log = open(config_dir / f"{daemon}.out", "wb")  # noqa: SIM115 (lives with the daemon)
        # As a service runs: Python caches the bytecode of the synced modules, so a job's
        # process loads them instead of compiling them (a shell's PYTHONDONTWRITEBYTECODE
        # would make every job compile every module it loads).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        proc = subprocess.Popen(
            [str(BIN / daemon), "-c", str(config_dir), "-l", "quiet"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.procs.append(proc)
        return proc

    def _master_opts(self):
        import salt.config

        return salt.config.master_config(str(self.master_dir / "master"))

    def run(self, cli, *args, check=True):
        proc = subprocess.run(
            [
                str(BIN / cli),
                "-c",
                str(self.master_dir),
                "--out=json",
                *(["--static"] if cli == "salt" else []),
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        try:
            data = json.loads(proc.stdout) if proc.stdout.strip() else None
        except ValueError:
            data = proc.stdout
        if check and proc.returncode not in (0, 1):
            raise RuntimeError(f"{cli} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc.returncode, data

    def stop(self):
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
