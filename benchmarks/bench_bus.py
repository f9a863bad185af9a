"""
Renewal-to-served latency over the Salt bus, and how it grows with the number
of consumers: a real salt-master, the NPM minion and 1, 4 or 8 consumer
minions (the first with a mailcow-like stack in Docker, checked on the wire;
the others deploy files only). NPM's side is the real certbot with NPM's ini
and command lines against pebble on loopback (the source state makes it keep
the key). For each size, N renewals (NPM's ``certbot renew --force-renewal``),
each timed from the moment certbot has moved NPM's live/ links (certbot
returned) until every consumer has it and the stack serves it on all nine
endpoints (the end of the first handshake that got it, on the last endpoint;
the endpoints not seen serving it yet are probed every 0.1 s). Prints
p50/p95/max, and certbot's own run time apart.

``--others bare``: the floor of any design where each consumer runs a Salt job.
At size N only mailcow-0 is a consumer; the N-1 other minions get nothing of
certsync but a bare job (``test.ping``), which the benchmark publishes as soon
as the master's bus shows mailcow-0's deploy job: the cost that N-1 co-located
consumers add to the measured one however little their deploy job does.
``--others both`` runs each size > 1 both ways and prints N consumers
deploying over 1 consumer + N-1 bare jobs.

Each size also prints when each endpoint served the renewal, and certsync's own
CPU per deploy job: what a consumer's process spent on a renewal, less a bare
job that reads its one mine entry (``mine.get``), the least any deploy job
costs (that job's wall time, publication to return, is printed too).

``--publish N`` (default 100): the source's publication for N consumers whose
recipient keys are in the master's mine (accepted minion keys, entries in the
master's cache; the consumers need not run), each timed from the master's
``certsync_mine.publish`` call to its return, with the source minion's CPU seconds.

Needs a Docker engine, certbot and pebble (scripts/test-deps.sh). Run: scripts/bench.sh
"""

import argparse
import base64
import contextlib
import datetime
import math
import pathlib
import random
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness

import psutil  # noqa: E402
import salt.cache  # noqa: E402
import salt.client  # noqa: E402
import salt.utils.mine  # noqa: E402
import salt.version  # noqa: E402
import salt.wheel  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import x25519  # noqa: E402
from figures import figures  # noqa: E402

from harness.acme import NpmCertbot, Pebble  # noqa: E402
from harness.daemons import SaltDaemons  # noqa: E402
from harness.fleet import (  # noqa: E402
    HOST,
    BusRecorder,
    deployed_fingerprint,
    file_only_settings,
    stack_settings,
    wait_until,
    write_pillar,
)
from harness.mailcow_stack import NAMES, MailcowStack, build_image, docker_client  # noqa: E402
from harness.pki import TestCA, issue, write_pair  # noqa: E402


def _stamp(event):
    """When the master fired an event (its ``_stamp``, UTC), as a Unix time."""
    stamp = event["data"].get("_stamp", "")
    when = datetime.datetime.fromisoformat(stamp).replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def _first(events, match):
    return next((_stamp(e) for e in events if match(e["tag"], e["data"])), math.nan)


def _job_started(fun, minion):
    def match(tag, data):
        return (
            tag.startswith("salt/job/")
            and tag.endswith("/new")
            and data.get("fun") == fun
            and minion in data.get("minions", [])
        )

    return match


def timeline(events, source, consumer, fingerprint, began, installed, served, bare=None):
    """Seconds from certbot's return to each step of one renewal (with ``bare``, a
    minion given a bare job: when that job was published)."""
    steps = {
        "detected": _first(
            events, lambda tag, data: tag == f"salt/beacon/{source}/certsync/renewed"
        ),
        "published": _first(
            events,
            lambda tag, data: (
                tag == "certsync/published"
                and (data.get("data") or {}).get("fingerprint") == fingerprint
            ),
        ),
        "consumer started": _first(events, _job_started("certsync_deploy.deployed", consumer)),
        **({"bare jobs started": _first(events, _job_started("test.ping", bare))} if bare else {}),
        "installed": installed,
        "served": served,
    }
    return {step: when - began for step, when in steps.items()}


def _consumers(size, work, stack, snakeoil, others):
    """mailcow-0 with the stack; the others deploy files only (``others`` "deploy")
    or are no consumers ("bare"). Pillar settings, ssl dirs."""
    consumers, ssl_dirs = {"mailcow-0": stack_settings(stack)}, [stack.ssl_dir]
    for number in range(1, size if others == "deploy" else 1):
        checkout = work / f"mailcow-{number}"
        write_pair(checkout / "data" / "assets" / "ssl", snakeoil)
        (checkout / "mailcow.conf").write_text("SKIP_LETS_ENCRYPT=n\n")
        consumers[f"mailcow-{number}"] = file_only_settings(checkout)
        ssl_dirs.append(checkout / "data" / "assets" / "ssl")
    return consumers, ssl_dirs


def everywhere(stack, ssl_dirs, fingerprint, seen=None):
    """Deployed on every consumer and served on every endpoint of the stack. With
    ``seen`` ({endpoint: when it was first seen serving it}), probe only the others
    (the wait's own handshakes are load on the machine it measures) and note when
    each handshake that got it ended, not when the slowest probe of its round did."""
    if not all(deployed_fingerprint(d) == fingerprint for d in ssl_dirs):
        return False
    return stack.note_served(fingerprint, {} if seen is None else seen)


class BareJobs:
    """On the bus: as soon as a deploy job is published for ``consumer``, a bare
    job (``test.ping``) for ``minions``."""

    def __init__(self, opts, consumer, minions):
        self.client = salt.client.LocalClient(mopts=opts)
        self.started = _job_started("certsync_deploy.deployed", consumer)
        self.minions = minions

    def __call__(self, event):
        if self.started(event["tag"], event["data"]):
            self.client.cmd_async(self.minions, "test.ping", tgt_type="list")


def measure(size, renewals, image, work, certbot_times, others="deploy"):
    """Per renewal: seconds from certbot's return to served everywhere, its
    timeline, and the CPU seconds each daemon spent on it."""
    pebble = Pebble(work / "pebble", TestCA("bench pebble listener")).start()
    certbot = NpmCertbot(work / "npm", pebble)
    certbot.issue(5, NAMES)
    first, live_dir = certbot.current(5), certbot.live_dir
    snakeoil = issue(HOST, sans=[HOST], key_kind="rsa-2048")
    stack = MailcowStack(docker_client(), image, work / "mailcow-0", snakeoil).start()
    consumers, ssl_dirs = _consumers(size, work, stack, snakeoil, others)
    bystanders = [f"bare-{n}" for n in range(1, size)] if others == "bare" else []
    write_pillar(work / "pillar", "npm", consumers, live_dir, False)
    salt = SaltDaemons(work / "salt")
    salt.write_master(work / "pillar")
    bus = None
    try:
        pids = salt.start_converged("npm", list(consumers), bystanders)
        wait_until(
            lambda: everywhere(stack, ssl_dirs, first.fingerprint),
            180,
            interval=0.5,
            what="the first cert",
        )
        bare_jobs = BareJobs(salt.opts, "mailcow-0", bystanders) if bystanders else None
        bus = BusRecorder(salt.opts, bare_jobs).start()
        samples = []
        for _ in range(renewals):
            # the last run's jobs are done and reaped; then a random phase (against the
            # source beacon's 1 s interval, where the engine is not running)
            time.sleep(3 + random.random())  # noqa: S311 (a phase, not a secret)
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            mark, began = len(bus.events), time.monotonic()
            certbot.renew(5)
            wall = time.time()
            certbot_times.append(time.monotonic() - began)
            renewed, seen = certbot.current(5), {}
            wait_until(
                lambda r=renewed, seen=seen: everywhere(stack, ssl_dirs, r.fingerprint, seen),
                120,
                interval=0.1,
                what="the renewal everywhere",
            )
            # every consumer has it (each cert.pem written) and every endpoint serves it
            installs = [(pathlib.Path(d) / "cert.pem").stat().st_mtime for d in ssl_dirs]
            served = max(*seen.values(), *installs) - wall
            time.sleep(3)  # the jobs' processes exit and are reaped: their CPU time counts
            # a deploy that rolled back after the wait saw it is no figure
            if not everywhere(stack, ssl_dirs, renewed.fingerprint):
                raise RuntimeError(f"renewal {renewed.fingerprint[:16]} served, then not kept")
            steps = timeline(
                bus.events[mark:],
                "npm",
                "mailcow-0",
                renewed.fingerprint,
                wall,
                (stack.ssl_dir / "cert.pem").stat().st_mtime,
                wall + served,
                bystanders[0] if bystanders else None,
            )
            spent = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
            endpoints = {name: when - wall for name, when in seen.items()}
            samples.append({"total": served, "steps": steps, "cpu": spent, "endpoints": endpoints})
        return samples, bare_job_cost(salt, bus, pids, [*consumers, *bystanders], renewals)
    finally:
        if bus is not None:
            bus.stop()
        salt.stop()
        stack.remove()
        pebble.stop()


def bare_job_cost(salt, bus, pids, minions, runs):
    """What a bare job that reads one mine entry (``mine.get`` of mailcow-0's
    certificate entry, the size every consumer reads) costs each of ``minions``,
    p50 over ``runs``: CPU seconds, and seconds from its publication to its return
    on the master's bus. Salt's own share of every deploy job (the fork, the loaders
    it builds again, the mine read, the return), whatever certsync does in it."""
    spent, walls = [], []
    for _ in range(runs):
        before = {minion: cpu_seconds(pids[minion]) for minion in minions}
        mark = len(bus.events)
        salt.run("salt", "-L", ",".join(minions), "mine.get", "npm", "certsync_cert_mailcow-0")
        time.sleep(1)  # the jobs' processes exit and are reaped
        spent += [cpu_seconds(pids[minion]) - before[minion] for minion in minions]
        events = bus.events[mark:]
        new = next(
            (e for e in events if _job_started("mine.get", minions[0])(e["tag"], e["data"])), None
        )
        if new:
            returned = f"salt/job/{new['data']['jid']}/ret/"
            walls += [_stamp(e) - _stamp(new) for e in events if e["tag"].startswith(returned)]
    return _p50(spent), _p50(walls) if walls else math.nan


def cpu_seconds(pid):
    """CPU seconds of a process and all its descendants, live or reaped: a
    minion's jobs run in processes its process manager forks and reaps."""
    total = 0.0
    process = psutil.Process(pid)
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(member.cpu_times()[:4])  # user, system, reaped children's
    return total


def store_recipient_key(cache, consumer, source):
    """A consumer's recipient key in the master's mine, readable by ``source``, as
    the master stores what ``certsync_mine.publish_recipient_key`` sends."""
    public = x25519.X25519PrivateKey.generate().public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    entry = {"kem": "X25519", "public": base64.b64encode(raw).decode(), "id": consumer}
    data = {
        "certsync_recipient": salt.utils.mine.wrap_acl_structure(
            entry, allow_tgt=[source], allow_tgt_type="list"
        )
    }
    if salt.version.__saltstack_version__.major >= 3007:
        cache.store("mine", consumer, data)
    else:  # Salt 3006 keeps a minion's mine beside its grains and pillar
        cache.store(f"minions/{consumer}", "mine", data)


def measure_publish(count, runs, work):
    """Wall and source-minion CPU seconds of ``certsync_mine.publish`` for ``count`` consumers."""
    pair = issue(HOST, sans=[HOST], key_kind="ec-p384")
    fullchain, key = write_pair(work / "live", pair, "fullchain.pem", "privkey.pem")
    salt_daemons = SaltDaemons(work / "salt")
    salt_daemons.write_master(work / "pillar")
    try:
        salt_daemons.start_master()
        salt_daemons.start_minion("npm")
        wait_until(
            lambda: (salt_daemons.run("salt", "npm", "test.ping", check=False)[1] or {}).get("npm"),
            120,
            interval=1,
            what="the source minion",
        )
        salt_daemons.run("salt", "npm", "saltutil.sync_all")
        opts = salt_daemons.opts
        wheel, cache = salt.wheel.WheelClient(opts), salt.cache.factory(opts)
        consumers = [f"mailcow-{n:03d}" for n in range(count)]
        for consumer in consumers:
            wheel.cmd("key.gen_accept", [consumer], kwarg={"keysize": 2048}, print_event=False)
            store_recipient_key(cache, consumer, "npm")
        wheel.destroy()
        client = salt.client.LocalClient(mopts=opts)
        minion_pid = salt_daemons.procs[-1].pid
        walls, cpus = [], []
        for _ in range(runs):
            cpu_before, began = cpu_seconds(minion_pid), time.monotonic()
            done = client.cmd(
                "npm",
                "certsync_mine.publish",
                [str(fullchain), str(key), consumers, HOST],
                kwarg={"force": True},
                timeout=120,
            )["npm"]
            walls.append(time.monotonic() - began)
            time.sleep(0.5)  # the job's process is reaped: its CPU time counts
            cpus.append(cpu_seconds(minion_pid) - cpu_before)
            if not isinstance(done, dict) or len(done.get("consumers", [])) != count:
                raise RuntimeError(f"certsync_mine.publish did not publish for {count}: {done}")
        return walls, cpus
    finally:
        salt_daemons.stop()


def _p50(values):
    return statistics.median(values)


def report(size, samples, bare_job):
    """One size's figures: the total, its timeline, when each endpoint served it,
    CPU seconds per daemon (p50s), what a bare Salt job costs each consumer (CPU,
    wall), and certsync's own CPU beyond it."""
    totals = sorted(sample["total"] for sample in samples)
    p95 = totals[int(0.95 * (len(totals) - 1))]
    print(
        f"{size} consumer(s), {len(totals)} renewals: renewal -> served on all 9 endpoints "
        f"p50 {_p50(totals):.2f} s, p95 {p95:.2f} s, max {totals[-1]:.2f} s",
        flush=True,
    )
    steps = " | ".join(
        f"{step} {_p50([s['steps'][step] for s in samples]):.2f}" for step in samples[0]["steps"]
    )
    print(f"  timeline p50, s after certbot returned: {steps}")
    served = {
        name: _p50([s["endpoints"][name] for s in samples]) for name in samples[0]["endpoints"]
    }
    endpoints = " | ".join(
        f"{name} {when:.2f}" for name, when in sorted(served.items(), key=lambda i: i[1])
    )
    print(f"  served p50 by endpoint, s after certbot returned: {endpoints}")
    cpu = {name: _p50([s["cpu"][name] for s in samples]) for name in samples[0]["cpu"]}
    line = f"master {cpu['master']:.2f}, npm {cpu['npm']:.2f}, mailcow-0 {cpu['mailcow-0']:.2f}"
    for prefix, what in (("mailcow-", "other consumers"), ("bare-", "bare-job minions")):
        others = [v for name, v in cpu.items() if name.startswith(prefix) and name != "mailcow-0"]
        if others:
            line += f", {what} {_p50(others):.2f} each"
    print(f"  CPU s per renewal, p50: {line}", flush=True)
    bare_job, bare_wall = bare_job
    print(
        f"  a bare job with one mine read costs each minion {bare_job:.3f} CPU s, "
        f"and {bare_wall:.2f} s from its publication to its return, p50"
    )
    own = f"mailcow-0 (the stack: Docker API, 9 probes) {(cpu['mailcow-0'] - bare_job) * 1000:.0f}"
    files_only = [
        v for name, v in cpu.items() if name.startswith("mailcow-") and name != "mailcow-0"
    ]
    if files_only:
        own += f", a files-only consumer {(_p50(files_only) - bare_job) * 1000:.0f}"
    print(f"  certsync's own CPU per deploy job, beyond it: {own} ms", flush=True)


def report_scale(by_size, others):
    """Each size's p50 over the one-consumer p50: renewal to served, and detected to
    served (the beacon's phase, up to its 1 s interval, is the same at every size);
    with both ways measured, N consumers deploying over 1 consumer + N-1 bare jobs."""
    for size, samples in by_size.items():
        if size in by_size.get("bare", {}):
            deploying = _p50([s["total"] for s in samples])
            floor = _p50([s["total"] for s in by_size["bare"][size]])
            print(
                f"{size} consumers deploying / 1 consumer + {size - 1} bare jobs, p50: "
                f"{deploying / floor:.2f}x ({deploying:.2f} s / {floor:.2f} s)"
            )
    if 1 not in by_size:
        return

    def p50s(samples):
        return (
            _p50([s["total"] for s in samples]),
            _p50([s["total"] - s["steps"]["detected"] for s in samples]),
        )

    one_total, one_after = p50s(by_size[1])
    for size, samples in by_size.items():
        if size not in (1, "bare"):
            total, after = p50s(samples)
            what = f"{size} consumers"
            if others == "bare":
                what = f"1 consumer + {size - 1} bare jobs"
            print(
                f"{what} / 1 consumer, p50: renewal -> served {total / one_total:.2f}x; "
                f"detected -> served {after / one_after:.2f}x"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--renewals", type=int, default=10)
    parser.add_argument("--sizes", default="1,4,8")
    parser.add_argument("--publish", type=int, default=100, help="consumers (0: skip)")
    parser.add_argument(
        "--others",
        choices=("deploy", "bare", "both"),
        default="deploy",
        help="what the minions beside mailcow-0 run: the deploy, only a bare job, or both",
    )
    args = parser.parse_args()
    if args.publish:
        with tempfile.TemporaryDirectory(prefix="certsync-bench-") as tmp:
            walls, cpus = measure_publish(args.publish, args.renewals, pathlib.Path(tmp))
        print(
            f"publish for {args.publish} consumers, {len(walls)} runs: wall "
            f"p50 {statistics.median(walls):.2f} s, max {max(walls):.2f} s; source minion "
            f"CPU p50 {statistics.median(cpus):.2f} s",
            flush=True,
        )
    if not args.sizes:
        return
    image = build_image()
    certbot_times, by_size = [], {}
    ways = ("bare", "deploy") if args.others == "both" else (args.others,)
    for size in (int(n) for n in args.sizes.split(",")):
        for others in ways if size > 1 else ("deploy",):
            with tempfile.TemporaryDirectory(prefix="certsync-bench-") as tmp:
                samples, bare_job = measure(
                    size, args.renewals, image, pathlib.Path(tmp), certbot_times, others
                )
            if len(ways) > 1:
                print(f"(the minions beside mailcow-0: {others})")
            report(size, samples, bare_job)
            if others == "bare" and len(ways) > 1:
                by_size.setdefault("bare", {})[size] = samples
            else:
                by_size[size] = samples
    report_scale(by_size, "deploy" if args.others == "both" else args.others)

    spent = figures(t * 1000 for t in certbot_times)
    print(f"certbot renew itself (not in the figures above): {spent}")


if __name__ == "__main__":
    main()
