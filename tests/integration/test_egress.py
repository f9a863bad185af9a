"""
The egress check and the formula's firewall rules, between two hosts in
network namespaces (tests/support/netns.py): the mail host runs the check and
its firewall (nftables, or Debian's ufw with a state of its own:
tests/support/ufw.py); the peer runs a smarthost (STARTTLS and AUTH required)
and listeners on the Salt master's ports. salt-call --local runs inside the
mail host's namespace, with the repo's salt/ tree.
"""

import json
import pathlib
import select
import subprocess
import sys

import pytest
import yaml
from support.netns import HostPair
from support.relay import NAME
from support.ufw import PrivateUfw

from harness.pki import TestCA, write_pair

pytestmark = pytest.mark.one_release  # its subject does not change with the Salt release

TESTS = pathlib.Path(__file__).resolve().parents[1]
PORT = 2525
DENY_OUTBOUND = """
table inet filter {
  chain output {
    type filter hook output priority 0; policy drop;
    oif "lo" accept
  }
}
"""
READY_TIMEOUT = 30


@pytest.fixture
def master_ports(salt_call):
    config = yaml.safe_load(pathlib.Path(salt_call.config_file).read_text())
    return [int(config.get("publish_port", 4505)), int(config.get("master_port", 4506))]


@pytest.fixture
def hosts(tmp_path, ca, master_ports):
    pair = HostPair().start()
    write_pair(tmp_path / "relay", ca.leaf(NAME))
    peer = pair.popen(
        pair.peer,
        [
            sys.executable,
            "-m",
            "support.egress_peer",
            "--address",
            pair.peer_address,
            "--cert",
            str(tmp_path / "relay" / "cert.pem"),
            "--key",
            str(tmp_path / "relay" / "key.pem"),
            "--relay-port",
            str(PORT),
            "--tcp",
            *map(str, master_ports),
            "--login",
            "certsync:not-used-by-the-check",
        ],
        cwd=TESTS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([peer.stdout], [], [], READY_TIMEOUT)
        if not ready or peer.stdout.readline().strip() != "ready":
            peer.kill()
            pytest.fail(f"the egress peer did not start: {peer.communicate(timeout=10)[1]}")
        (tmp_path / "ca.pem").write_bytes(ca.root_pem())
        yield pair
    finally:
        peer.kill()
        peer.wait(timeout=10)
        pair.stop()


def _salt_call(salt_call, hosts, *args, ufw=None):
    """salt-call on the mail host (with ``ufw``'s state in place, when given)."""
    argv = [
        str(pathlib.Path(sys.executable).parent / "salt-call"),
        f"--config-dir={pathlib.Path(salt_call.config_file).parent}",
        "--local",
        "--retcode-passthrough",
        "--out=json",
        "--log-level=quiet",
        *args,
    ]
    proc = hosts.run(hosts.mail, ufw.wrap(argv) if ufw else argv)
    data = json.loads(proc.stdout)["local"] if proc.stdout.strip() else None
    return proc.returncode, data, proc.stderr


def _check(salt_call, hosts, cafile, *extra, ufw=None):
    return _salt_call(
        salt_call,
        hosts,
        "certsync_egress.check",
        f"relay={NAME}:{PORT}",
        f"relay_address={hosts.peer_address}",
        f"cafile={cafile}",
        f"master={hosts.peer_address}",
        "timeout=2",
        *extra,
        ufw=ufw,
    )


def test_open_then_blocked_by_the_firewall_then_allowed_by_the_formula(
    salt_call, hosts, tmp_path, master_ports
):
    cafile = tmp_path / "ca.pem"
    code, report, err = _check(salt_call, hosts, cafile)
    assert report is not None, err
    assert (code, report["ok"]) == (0, True), (report, err)
    assert sorted((r["target"], r["port"]) for r in report["checks"]) == sorted(
        [("relay", PORT)] + [("master", port) for port in master_ports]
    )

    hosts.run(hosts.mail, ["nft", "-f", "-"], input=DENY_OUTBOUND, check=True)
    code, report, _ = _check(salt_call, hosts, cafile)
    assert (code, report["ok"]) == (1, False)
    for row in report["checks"]:
        assert row["ok"] is False
        assert row["error"].startswith("timed out after 2 s")
        assert row["rule"] == (
            f"nft add rule inet filter output ip daddr {hosts.peer_address} "
            f"tcp dport {row['port']} accept"
        )

    pillar = {
        "certsync": {
            "hostname": "mail.example.test",
            "consumers": {
                "certsync-functional": {
                    "relay": {
                        "host": NAME,
                        "port": PORT,
                        "address": hosts.peer_address,
                        "cafile": str(cafile),
                        "master_address": hosts.peer_address,
                        "firewall": {"manage": True},
                    }
                }
            },
        }
    }
    code, ret, err = _salt_call(
        salt_call, hosts, "state.apply", "certsync.egress", f"pillar={json.dumps(pillar)}"
    )
    assert code == 0, (ret, err)
    results = {key.split("_|-")[1]: value for key, value in ret.items()}
    assert set(results) == {
        "certsync-settings",  # the gate every SLS begins with
        "certsync-egress",
        *(f"certsync-egress-allow-{port}" for port in [PORT, *master_ports]),
    }
    assert all(value["result"] is True for value in results.values())
    assert results["certsync-egress"]["comment"].startswith("reachable: relay")
    ruleset = hosts.run(
        hosts.mail, ["nft", "list", "chain", "inet", "filter", "output"], check=True
    ).stdout
    for port in [PORT, *master_ports]:
        assert f"tcp dport {port} accept" in ruleset
    code, report, _ = _check(salt_call, hosts, cafile)
    assert (code, report["ok"]) == (0, True)

    code, again, _ = _salt_call(
        salt_call, hosts, "state.apply", "certsync.egress", f"pillar={json.dumps(pillar)}"
    )
    assert code == 0
    assert all(not value["changes"] for value in again.values())  # idempotent


def _egress_pillar(hosts, cafile, **firewall):
    relay = {
        "host": NAME,
        "port": PORT,
        "address": hosts.peer_address,
        "cafile": str(cafile),
        "master_address": hosts.peer_address,
        "firewall": {"manage": True, **firewall},
    }
    return json.dumps(
        {
            "certsync": {
                "hostname": "mail.example.test",
                "consumers": {"certsync-functional": {"relay": relay}},
            }
        }
    )


def _ufw_status(hosts, ufw):
    out = hosts.run(hosts.mail, ufw.wrap(["ufw", "status"]), check=True).stdout
    return [line for line in out.splitlines() if " ALLOW OUT " in line]


def test_ufw_denies_outbound_then_the_formula_allows_it_through_ufw(
    salt_call, hosts, tmp_path, master_ports
):
    """The deployment we replace: `ufw default deny outgoing`, its rules by `ufw allow
    out`; the formula's `auto` backend finds ufw active and adds them through it."""
    cafile = tmp_path / "ca.pem"
    ufw = PrivateUfw(tmp_path / "ufw")
    for argv in (["ufw", "default", "deny", "outgoing"], ["ufw", "--force", "enable"]):
        hosts.run(hosts.mail, ufw.wrap(argv), check=True)
    code, report, err = _check(salt_call, hosts, cafile, ufw=ufw)
    assert (code, report["ok"]) == (1, False), err
    for row in report["checks"]:
        assert row["error"].startswith("timed out after 2 s"), row
        assert row["rule"] == (
            f"ufw allow out proto tcp to {hosts.peer_address} port {row['port']} comment certsync"
        )

    pillar = _egress_pillar(hosts, cafile)
    code, plan, err = _salt_call(
        salt_call,
        hosts,
        "state.apply",
        "certsync.egress",
        f"pillar={pillar}",
        "test=True",
        ufw=ufw,
    )
    planned = {k.split("_|-")[1]: v for k, v in plan.items()}
    relay_rule = planned[f"certsync-egress-allow-{PORT}"]
    assert relay_rule["result"] is None, (relay_rule, err)
    assert relay_rule["comment"] == (
        f"would run: ufw allow out proto tcp to {hosts.peer_address} port {PORT} "
        "comment 'certsync: relay'"
    )
    assert _ufw_status(hosts, ufw) == []  # test=True added nothing

    code, ret, err = _salt_call(
        salt_call, hosts, "state.apply", "certsync.egress", f"pillar={pillar}", ufw=ufw
    )
    assert code == 0, (ret, err)
    results = {k.split("_|-")[1]: v for k, v in ret.items()}
    assert set(results) == {
        "certsync-settings",  # the gate every SLS begins with
        "certsync-egress",
        *(f"certsync-egress-allow-{port}" for port in [PORT, *master_ports]),
    }
    assert all(v["result"] is True for v in results.values()), results
    assert results["certsync-egress"]["comment"].startswith("reachable: relay")
    rules = _ufw_status(hosts, ufw)
    assert len(rules) == 3, rules
    assert any(f"{hosts.peer_address} {PORT}/tcp" in r and "# certsync: relay" in r for r in rules)
    for port in master_ports:
        assert any(f"{port}/tcp" in r and "# certsync: salt master" in r for r in rules)

    code, again, _ = _salt_call(
        salt_call, hosts, "state.apply", "certsync.egress", f"pillar={pillar}", ufw=ufw
    )
    assert code == 0
    assert all(not v["changes"] for v in again.values())  # idempotent
    assert _ufw_status(hosts, ufw) == rules  # no duplicate
    code, report, _ = _check(salt_call, hosts, cafile, ufw=ufw)
    assert (code, report["ok"]) == (0, True)


def test_a_relay_certificate_not_trusted_is_named(salt_call, hosts, tmp_path):
    other = tmp_path / "other-ca.pem"
    other.write_bytes(TestCA("not the relay's").root_pem())
    code, report, _ = _check(salt_call, hosts, other, "master=False")
    assert (code, report["ok"]) == (1, False)
    (row,) = report["checks"]
    assert row["error"].startswith(f"the relay's certificate is not verified for {NAME}:")
    assert "rule" not in row  # reachable; the firewall is not the problem


def test_the_check_state_names_what_is_blocked(salt_call, hosts, tmp_path):
    code, ret, _ = _salt_call(
        salt_call,
        hosts,
        "state.single",
        "certsync_egress.reachable",
        "name=way-out",
        f"relay={NAME}:{PORT + 1}",
        f"relay_address={hosts.peer_address}",
        "master=False",
        "timeout=2",
    )
    assert code != 0
    (state,) = ret.values()
    assert state["result"] is False
    assert state["comment"] == (
        f"relay {NAME} ({hosts.peer_address}:{PORT + 1}) is blocked: connection refused "
        "(rejected by a firewall, or nothing listens); allow it with: nft add rule inet filter "
        f"output ip daddr {hosts.peer_address} tcp dport {PORT + 1} accept"
    )
