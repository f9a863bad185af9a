"""
Time certsync's hot operations and print the figures (no pass/fail):

- certsync.validate and certsync.info, in-process, per key type;
- a no-op certsync.deployed run in-process (the state a schedule repeats);
- the source beacon's tick when nothing changed (what the formula's 1 s
  beacon interval costs the NPM minion);
- hostile input: a 256 KiB file of 14,000 BEGIN lines (and one of BEGIN/END
  fragments) refused, and the npm lineage search over 4 live/ dirs of such files;
- the same no-op run through a real `salt-call --local` (process start included).

Run: scripts/bench.sh  (or .venv/salt3008/bin/python benchmarks/bench_certsync.py)
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness

from salt.exceptions import CommandExecutionError  # noqa: E402

from harness.loader import (  # noqa: E402
    UTILS,
    certsync_beacon,
    certsync_mod,
    consumer_mod,
    deploy_functions,
    deploy_mod,
    load_loader_module,
    mailcow_consumer_mod,
    monitor_mod,
    npm_source_mod,
    source_mod,
)
from harness.pki import TestCA, write_pair  # noqa: E402

HOST = "mail.example.test"
#: The largest PEM file certsync reads (salt/_utils/certsync_pem.py).
MAX_PEM_BYTES = load_loader_module("utils", "certsync_pem").MAX_PEM_BYTES


def timed(func, runs):
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {
        "runs": runs,
        "p50_ms": round(statistics.median(samples), 3),
        "p95_ms": round(samples[int(0.95 * (runs - 1))], 3),
        "mean_ms": round(statistics.fmean(samples), 3),
    }


def _refused(func):
    try:
        func()
    except CommandExecutionError:
        return
    raise AssertionError("hostile input was accepted")


def hostile(tmp, runs):
    """Parsing is linear: hostile files up to the size cap are refused fast."""
    files = {
        "14,000 BEGIN lines": b"-----BEGIN X-----\n" * 14000,
        "BEGIN/END fragments": (b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END X-----\n") * 5000,
    }
    found = {}
    live = tmp / "hostile-live"
    for number, (label, data) in enumerate(files.items()):
        path = tmp / f"hostile-{number}.pem"
        path.write_bytes(data[:MAX_PEM_BYTES])
        found[f"refuse {len(data[:MAX_PEM_BYTES]) // 1024} KiB of {label}"] = timed(
            lambda p=path: _refused(lambda: UTILS["certsync_pem.read_certs"](str(p))), runs
        )
    for number in range(4):
        (live / f"npm-{number}").mkdir(parents=True)
        (live / f"npm-{number}" / "fullchain.pem").write_bytes(files["14,000 BEGIN lines"])
    found["npm lineage search over 4 hostile dirs"] = timed(
        lambda: _refused(lambda: npm_source_mod.find(HOST, str(live))), runs
    )
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--salt-call-runs", type=int, default=5)
    args = parser.parse_args()

    certsync_mod.__context__ = {}
    certsync_mod.__opts__ = {"test": False}
    deploy_mod.__opts__ = {"test": False}
    functions = deploy_functions()  # one minion's __salt__: the deploy and the source kinds
    for module in (
        deploy_mod,
        source_mod,
        npm_source_mod,
        consumer_mod,
        mailcow_consumer_mod,
        certsync_beacon,
    ):
        module.__salt__ = functions
    ca = TestCA()
    results = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        deploy_mod.__opts__["cachedir"] = str(tmp / "deploy-cache")  # its minion lock
        for kind in ("rsa-2048", "rsa-4096", "ec-p256", "ec-p384"):
            leaf = ca.leaf(HOST, key_kind=kind)
            fullchain, key = write_pair(tmp / kind, leaf, "fullchain.pem", "privkey.pem")
            results[f"validate {kind}"] = timed(
                lambda f=fullchain, k=key: certsync_mod.validate(f, k, HOST), args.runs
            )
            results[f"info {kind}"] = timed(lambda f=fullchain: certsync_mod.info(f), args.runs)

        results.update(hostile(tmp, args.runs // 10 or 1))

        leaf = ca.leaf(HOST, key_kind="ec-p384")
        source = tmp / "live" / "npm-5"
        write_pair(source, leaf, "fullchain.pem", "privkey.pem")
        dest = tmp / "ssl"
        write_pair(dest, leaf)
        noop = deploy_mod.deploy(str(dest), HOST, source=str(source))
        assert noop["result"] is True and not noop["changes"], noop
        results["deployed no-op, in-process"] = timed(
            lambda: deploy_mod.deploy(str(dest), HOST, source=str(source)), args.runs
        )

        certsync_beacon.__context__ = {}
        certsync_beacon.__opts__ = {"cachedir": str(tmp / "beacon-cache")}
        monitor_mod.__opts__ = certsync_beacon.__opts__  # the beacon's records are the monitor's
        watch = [{"hostname": HOST}, {"source": str(source)}]
        assert certsync_beacon.beacon(watch)[0]["tag"] == "renewed"
        assert certsync_beacon.beacon(watch) == []
        results["source beacon tick, nothing renewed"] = timed(
            lambda: certsync_beacon.beacon(watch), args.runs
        )

        config = tmp / "salt-config"
        config.mkdir()
        (config / "minion").write_text(
            json.dumps(
                {
                    "root_dir": str(tmp / "salt-root"),
                    "file_client": "local",
                    "file_roots": {"base": [str(REPO / "salt")]},
                    "log_file": str(tmp / "salt.log"),
                }
            )
        )
        salt_call = [
            str(pathlib.Path(sys.executable).parent / "salt-call"),
            "--local",
            "-c",
            str(config),
        ]
        subprocess.run([*salt_call, "saltutil.sync_all"], check=True, stdout=subprocess.DEVNULL)
        results["deployed no-op, salt-call --local"] = timed(
            lambda: subprocess.run(
                [
                    *salt_call,
                    "state.single",
                    "certsync.deployed",
                    f"name={dest}",
                    f"hostname={HOST}",
                    f"source={source}",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            ),
            args.salt_call_runs,
        )

    width = max(len(name) for name in results)
    print(f"{'operation':<{width}}  {'runs':>5}  {'p50 ms':>9}  {'p95 ms':>9}  {'mean ms':>9}")
    for name, r in results.items():
        print(
            f"{name:<{width}}  {r['runs']:>5}  {r['p50_ms']:>9.3f}  {r['p95_ms']:>9.3f}"
            f"  {r['mean_ms']:>9.3f}"
        )


if __name__ == "__main__":
    main()
