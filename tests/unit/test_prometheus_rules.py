"""
The Prometheus alert rules people drop in (prometheus/certsync.rules.yml):
valid for promtool, unit-tested with promtool against series that fire and
series that stay quiet, and covering every metric the monitor writes.
"""

import pathlib
import shutil
import subprocess

import pytest
import yaml

from harness.loader import monitor_mod

RULES_DIR = pathlib.Path(__file__).resolve().parents[2] / "prometheus"
RULES = RULES_DIR / "certsync.rules.yml"


@pytest.fixture(scope="module")
def promtool():
    binary = shutil.which("promtool")
    if not binary:
        pytest.fail("promtool is missing: scripts/test-deps.sh installs Debian's prometheus")
    return binary


def _promtool(promtool, *args):
    return subprocess.run(
        [promtool, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_are_valid(promtool):
    proc = _promtool(promtool, "check", "rules", RULES.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 16 rules found" in proc.stdout


def test_rules_unit_tests_pass(promtool):
    proc = _promtool(promtool, "test", "rules", "certsync.rules.test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_metric_has_a_rule_and_every_rule_is_tested():
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    exprs = " ".join(rule["expr"] for rule in rules)
    assert [name for name in monitor_mod.METRICS if name not in exprs] == []
    tests = yaml.safe_load((RULES_DIR / "certsync.rules.test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in rules} - fired == set()
