"""
What certsync costs a host while nothing renews: real daemons side by side on
one master, idle for ``--seconds`` after the formula converged them:

- ``bare``: a minion without certsync (no modules synced, no beacons);
- ``npm``: the source, as the formula leaves it: the beacon every second and
  the certsync_watch engine (NPM's tree made by the real certbot);
- ``mailcow-0``: a consumer with a mailcow-like stack in Docker, its
  monitoring beacon checking every ``--check-interval`` seconds (the formula's
  default is 300; shorter here to count enough checks).

Prints, per minion, the CPU seconds of its processes over the idle time, per
hour, and over the bare minion's (certsync's share); the engine's process
apart; the consumer's CPU per check (its share over the bare minion's, by the
number of checks); and the memory of each minion's processes (RSS, and USS:
the pages that are the process's alone).

Needs a Docker engine, certbot and pebble (scripts/test-deps.sh). Run:
scripts/bench.sh, or ``.venv/salt3008/bin/python benchmarks/bench_idle.py``.
"""

import argparse
import contextlib
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness

import psutil  # noqa: E402

from harness.acme import NpmCertbot, Pebble  # noqa: E402
from harness.daemons import SaltDaemons  # noqa: E402
from harness.fleet import deployed_fingerprint, stack_settings, wait_until, write_pillar  # noqa: E402
from harness.mailcow_stack import NAMES, MailcowStack, build_image, docker_client  # noqa: E402
from harness.pki import TestCA, issue  # noqa: E402

MINIONS = ("bare", "npm", "mailcow-0")


def tree(pid):
    """A minion's processes: the main one and its children (engines, process managers)."""
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def cpu(processes):
    """CPU seconds (user + system) of each process still there, by pid."""
    spent = {}
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            spent[process.pid] = times.user + times.system
    return spent


def memory(processes):
    """RSS and USS in MiB, summed over ``processes``."""
    rss = uss = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            info = process.memory_full_info()
            rss, uss = rss + info.rss, uss + info.uss
    return rss / 2**20, uss / 2**20


def is_engine(process):
    with contextlib.suppress(psutil.NoSuchProcess):
        return "certsync_watch" in " ".join(process.cmdline())
    return False


def converge(salt, stack, first):
    salt.start_converged("npm", ["mailcow-0"], bystanders=["bare"])
    wait_until(
        lambda: deployed_fingerprint(stack.ssl_dir) == first.fingerprint,
        180,
        interval=1,
        what="the first certificate on the consumer",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=int, default=600, help="idle time measured")
    parser.add_argument("--check-interval", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="certsync-bench-") as tmp_name:
        work = pathlib.Path(tmp_name)
        pebble = Pebble(work / "pebble", TestCA("bench pebble listener")).start()
        certbot = NpmCertbot(work / "npm", pebble)
        certbot.issue(5, NAMES)
        first = certbot.current(5)
        snakeoil = issue(NAMES[0], sans=[NAMES[0]], key_kind="rsa-2048")
        stack = MailcowStack(docker_client(), build_image(), work / "mailcow-0", snakeoil).start()
        alerts = {"days": 21, "interval": args.check_interval, "grace": 600}
        consumer = {**stack_settings(stack), "alerts": alerts}
        write_pillar(work / "pillar", "npm", {"mailcow-0": consumer}, certbot.live_dir, False)
        salt = SaltDaemons(work / "salt")
        salt.write_master(work / "pillar")
        try:
            converge(salt, stack, first)
            time.sleep(15)  # the convergence's jobs are done and reaped
            trees = {m: tree(salt.minions[m].pid) for m in MINIONS}
            before = {m: cpu(procs) for m, procs in trees.items()}
            time.sleep(args.seconds)
            after = {m: cpu(procs) for m, procs in trees.items()}
            report(args, trees, before, after)
        finally:
            salt.stop()
            stack.remove()
            pebble.stop()


def report(args, trees, before, after):
    hour = 3600 / args.seconds
    spent = {m: sum(after[m][p] - before[m].get(p, 0.0) for p in after[m]) for m in MINIONS}
    print(f"idle {args.seconds} s after convergence; CPU seconds per hour, and memory now:")
    for minion in MINIONS:
        rss, uss = memory(trees[minion])
        share = (spent[minion] - spent["bare"]) * hour
        print(
            f"  {minion:<10} CPU {spent[minion] * hour:7.2f} s/h ({share:+.2f} s/h over bare); "
            f"RSS {rss:6.1f} MiB, USS {uss:6.1f} MiB in {len(trees[minion])} processes"
        )
    engine = [p for p in trees["npm"] if is_engine(p)]
    if engine:
        used = sum(after["npm"].get(p.pid, 0.0) - before["npm"].get(p.pid, 0.0) for p in engine)
        rss, uss = memory(engine)
        print(
            f"  certsync_watch engine (in npm): CPU {used * hour:.3f} s/h; "
            f"RSS {rss:.1f} MiB, USS {uss:.1f} MiB"
        )
    else:
        print("  certsync_watch engine: no such process in npm's tree")
    checks = args.seconds / args.check_interval
    per_check = (spent["mailcow-0"] - spent["bare"]) / checks
    print(
        f"  consumer's monitoring beacon: {per_check * 1000:.0f} ms CPU per check "
        f"({checks:.0f} checks of 9 endpoints; at the formula's 300 s: "
        f"{per_check * 12:.2f} s/h)"
    )


if __name__ == "__main__":
    main()
