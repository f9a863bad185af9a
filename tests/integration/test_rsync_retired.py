"""Migration from the deployment certsync replaces (SLS certsync.rsync_retired) on a
host with systemd as PID 1 (a container): Salt's service states stop and disable the
old timers for real, and file.replace takes every forced-command rsync line for the
staging dir out of the certsync user's real authorized_keys, every other line kept."""

import pathlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from harness.systemd_host import SystemdHost

pytestmark = pytest.mark.one_release  # its subject does not change with the Salt release

OLD = pathlib.Path(__file__).resolve().parents[1] / "support" / "rsync_deployment"
PUSH = ["mailcow-cert-push.timer", "mailcow-cert-push.service"]
DEPLOY = ["mailcow-cert-deploy.timer", "mailcow-cert-deploy.service"]
KEYS = "/home/certsync/.ssh/authorized_keys"


def _public_key(comment):
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    openssh = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{openssh.decode()} {comment}"


@pytest.fixture(scope="module")
def host(docker_engine, tmp_path_factory):
    """The old deployment on one host: both timers enabled and waiting, the certsync
    user with its forced-command key among others, its staging dir."""
    work = tmp_path_factory.mktemp("systemd-host")
    machine = SystemdHost(docker_engine, work).start()
    kept = [
        f"{_public_key('admin@laptop')}\n",
        f'restrict,command="/usr/bin/true" {_public_key("backup@nas")}\n',
    ]
    forced = (
        'command="rsync --server -logDtprLze.iLsfxCIvu . /home/certsync/incoming/",restrict '
        f"{_public_key('root@npm')}\n"
    )
    # a second key for the staging dir, with other rsync flags: it must go too
    forced_too = (
        'restrict,command="rsync --server -vlogDtpre.iLsfxC . /home/certsync/incoming" '
        f"{_public_key('root@npm-old')}\n"
    )
    (work / "authorized_keys").write_text(kept[0] + forced + kept[1] + forced_too)
    setup = (
        f"cp {OLD}/*.service {OLD}/*.timer /etc/systemd/system/ && systemctl daemon-reload"
        f" && systemctl enable --now {PUSH[0]} {DEPLOY[0]}"
        " && useradd -m certsync && mkdir -p /home/certsync/incoming"
        f" && install -D -m 600 {work}/authorized_keys {KEYS}"
    )
    done = machine.sh(setup)
    assert done.exit_code == 0, done.output.decode()
    machine.kept = "".join(kept)
    for minion, role in (("mailcow", "consumer"), ("npm", "source")):
        code, synced = machine.salt_call(minion, _pillar(minion, role), "saltutil.sync_all")
        assert code == 0, synced
    try:
        yield machine
    finally:
        machine.remove()


def _unit(host, verb, unit):
    return host.sh(f"systemctl {verb} {unit}").output.decode().strip()


def _pillar(minion, role):
    certsync = {"hostname": "mail.example.test"}
    if role == "source":
        certsync.update(source={"minion": minion}, consumers={"mailcow": {}})
    else:
        certsync.update(source={"minion": "npm"}, consumers={minion: {}})
    return {"certsync": certsync}


def _states(ret):
    """The states of a return, without the settings check every SLS begins with."""
    states = {key.split("_|-")[1]: value for key, value in ret.items()}
    assert states.pop("certsync-settings")["result"] in (True, None), ret
    return states


def test_the_consumer_stops_and_disables_the_deploy_timer_and_drops_the_rsync_key(host):
    assert _unit(host, "is-active", DEPLOY[0]) == "active"
    code, dry = host.salt_call(
        "mailcow",
        _pillar("mailcow", "consumer"),
        "state.apply",
        "certsync.rsync_retired",
        "test=True",
    )
    assert code == 0, dry
    assert (
        _states(dry)["certsync-rsync-retired-mailcow-cert-deploy.timer-stopped"]["result"] is None
    )
    assert _unit(host, "is-active", DEPLOY[0]) == "active"
    code, ret = host.salt_call(
        "mailcow", _pillar("mailcow", "consumer"), "state.apply", "certsync.rsync_retired"
    )
    states = _states(ret)
    assert code == 0, ret
    assert sorted(states) == sorted(
        [f"certsync-rsync-retired-{u}-{step}" for u in DEPLOY for step in ("stopped", "disabled")]
        + ["certsync-rsync-retired-forced-command", "certsync-rsync-retired-staging-left"]
    )
    assert states["certsync-rsync-retired-mailcow-cert-deploy.timer-stopped"]["changes"], ret
    assert _unit(host, "is-active", DEPLOY[0]) == "inactive"
    assert _unit(host, "is-enabled", DEPLOY[0]) == "disabled"
    assert _unit(host, "is-active", PUSH[0]) == "active"  # the source's: not this role's
    assert host.sh(f"cat {KEYS}").output.decode() == host.kept
    assert (
        "/home/certsync/incoming is left"
        in states["certsync-rsync-retired-staging-left"]["comment"]
    )
    assert host.sh("test -d /home/certsync/incoming").exit_code == 0
    _, again = host.salt_call(
        "mailcow", _pillar("mailcow", "consumer"), "state.apply", "certsync.rsync_retired"
    )
    assert not [s for s in again.values() if s["changes"]], again


def test_the_source_stops_and_disables_the_push_timer(host):
    code, ret = host.salt_call(
        "npm", _pillar("npm", "source"), "state.apply", "certsync.rsync_retired"
    )
    assert code == 0, ret
    assert sorted(_states(ret)) == sorted(
        f"certsync-rsync-retired-{u}-{step}" for u in PUSH for step in ("stopped", "disabled")
    )
    assert _unit(host, "is-active", PUSH[0]) == "inactive"
    assert _unit(host, "is-enabled", PUSH[0]) == "disabled"


def test_a_minion_of_both_roles_retires_both_timers(host):
    """The source of one route and a consumer of another: both roles' units."""
    pillar = {
        "certsync": {
            "hostname": "mail.example.test",
            "source": {"minion": "both"},
            "consumers": {"mailcow": {}},
            "certificates": {
                "b": {
                    "hostname": "mail.b.example.test",
                    "source": {"minion": "npm"},
                    "consumers": {"both": {}},
                }
            },
        }
    }
    code, synced = host.salt_call("both", pillar, "saltutil.sync_all")
    assert code == 0, synced
    code, ret = host.salt_call("both", pillar, "state.apply", "certsync.rsync_retired", "test=True")
    assert code == 0, ret
    units = {key.rsplit("-", 1)[0] for key in _states(ret) if key.endswith("-stopped")}
    assert units == {f"certsync-rsync-retired-{u}" for u in PUSH + DEPLOY}, ret


def test_nothing_to_retire_where_the_old_units_never_were(host):
    done = host.sh(f"rm /etc/systemd/system/{PUSH[0]} /etc/systemd/system/{PUSH[1]}")
    assert done.exit_code == 0
    host.sh("systemctl daemon-reload")
    for extra in (["test=True"], []):
        code, ret = host.salt_call(
            "npm", _pillar("npm", "source"), "state.apply", "certsync.rsync_retired", *extra
        )
        assert code == 0, ret
        (only,) = _states(ret).values()
        assert only["result"] is True and only["changes"] == {}
        assert only["comment"].startswith("nothing to retire: no unit")
