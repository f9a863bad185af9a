"""The in-process benchmarks still run: they load the repo's loader modules by hand,
so a module that gains a dependency (a consumer kind, the monitor's records) breaks
them where no other test looks. Their figures are theirs to print, not asserted here."""

import pathlib
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.functional, pytest.mark.one_release]

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script, *args):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_bench_certsync_runs():
    out = _run("bench_certsync.py", "--runs", "1", "--salt-call-runs", "1")
    assert "deployed no-op, in-process" in out and "source beacon tick" in out


def test_bench_haproxy_deploys_both_ways_with_no_failed_session():
    out = _run("bench_haproxy.py", "--changes", "1")
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for way in ("runtime", "reload"):
        assert " failed 0 " in lines[way], out
    assert "long sessions kept 8/8" in lines["runtime"], out
    assert "worker changed 0/1" in lines["runtime"], out
