"""The ``service`` consumer kind on a host with systemd as PID 1 (a container):
Debian's postfix, dovecot, nginx and HAProxy 2.6 run as units and read the
certificate from files. From the consumer's pillar (``kind: service``), one deploy
writes each file in its layout, reloads postfix, dovecot and nginx through Salt's
service module (systemd), hands HAProxy its combined file through the runtime API
with no reload, and checks on the wire that every one serves the new certificate."""

import json

import pytest

from harness.pki import write_pair
from harness.systemd_host import ENDPOINTS, FILES, SystemdHost, mail_consumer

pytestmark = pytest.mark.one_release  # its subject is systemd's units, not the Salt release

HOST = "mail.example.test"
MINION = "mx1"
PILLAR = {
    "certsync": {
        "hostname": HOST,
        "source": {"minion": "npm"},
        "consumers": {MINION: mail_consumer()},
    }
}


@pytest.fixture(scope="module")
def host(docker_engine, tmp_path_factory, ca):
    work = tmp_path_factory.mktemp("service-host")
    machine = SystemdHost(docker_engine, work).start()
    try:
        machine.old = ca.leaf(HOST)
        write_pair(work / "old", machine.old, "fullchain.pem", "privkey.pem")
        machine.set_up_mail(work / "old")
        code, synced = machine.salt_call(MINION, PILLAR, "saltutil.sync_all")
        assert code == 0, synced
        machine.work = work
        yield machine
    finally:
        machine.remove()


def _served(host):
    code, probed = host.salt_call(
        MINION, PILLAR, "tlsprobe.probe", HOST, json.dumps(ENDPOINTS), "127.0.0.1"
    )
    assert code == 0, probed
    return {endpoint: result.get("fingerprint") for endpoint, result in probed.items()}


def _main_pid(host, unit):
    return host.sh(f"systemctl show -p MainPID --value {unit}").output.decode().strip()


def _call(host, function, args):
    return host.salt_call(
        MINION, PILLAR, function, *(f"{k}={json.dumps(v)}" for k, v in args.items())
    )


def _deploy_args(host, issued, directory):
    """The deploy's arguments from the pillar, with a local source instead of the mine."""
    write_pair(host.work / directory, issued, "fullchain.pem", "privkey.pem")
    code, args = host.salt_call(MINION, PILLAR, "certsync_settings.deploy_args")
    assert code == 0, args
    del args["source_minion"]
    return {**args, "source": str(host.work / directory)}


def test_one_deploy_from_the_pillar_serves_the_new_pair_on_every_unit(host, ca):
    assert set(_served(host).values()) == {host.old.fingerprint}
    new = host.new = ca.leaf(HOST)
    args = _deploy_args(host, new, "new")
    assert (args["consumer"], args["name"]) == ("service", f"/etc/certsync/{HOST}")
    assert args["files"] == FILES and "services" not in args and "mailcow_dir" not in args
    host.sh(f"mkdir -p {args['name']}")
    haproxy = _main_pid(host, "haproxy")
    code, ret = _call(host, "certsync_deploy.deploy", args)
    assert code == 0 and ret["result"] is True, ret["comment"]
    assert "reloaded haproxy runtime API, postfix, dovecot, nginx" in ret["comment"]
    assert {key.split("/")[0] for key in ret["changes"]["served"]} == set(ENDPOINTS)
    assert set(_served(host).values()) == {new.fingerprint}
    assert _main_pid(host, "haproxy") == haproxy  # HAProxy was not reloaded
    code, status = host.salt_call(MINION, PILLAR, "certsync_status.report")
    assert code == 0 and status["deployed"] == new.fingerprint, status
    assert set(status["served"].values()) == {new.fingerprint}, status
    shown = host.sh("stat -c '%a %G' /etc/haproxy/certs/mail.pem").output.decode().split()
    assert shown == ["640", "haproxy"]
    assert "PRIVATE KEY" not in json.dumps(ret)


def test_a_reload_that_does_not_take_is_followed_by_one_restart(host, ca):
    newer = ca.leaf(HOST)
    args = _deploy_args(host, newer, "newer")
    args["reload_commands"] = {"nginx": ["/bin/true"]}  # a reload that re-reads nothing
    nginx = _main_pid(host, "nginx")
    code, ret = _call(host, "certsync_deploy.deploy", args)
    assert code == 0 and ret["result"] is True, ret["comment"]
    assert ret["comment"].endswith("reloaded haproxy runtime API, postfix, dovecot, nginx; "
                                   "restarted nginx"), ret["comment"]  # fmt: skip
    assert _main_pid(host, "nginx") != nginx
    assert set(_served(host).values()) == {newer.fingerprint}


def test_a_roll_back_serves_the_previous_pair_on_every_unit(host):
    code, args = host.salt_call(MINION, PILLAR, "certsync_settings.rollback_args")
    assert code == 0, args
    haproxy = _main_pid(host, "haproxy")
    code, ret = _call(host, "certsync_deploy.roll_back", args)
    assert code == 0 and ret["result"] is True, ret["comment"]
    assert set(_served(host).values()) == {host.new.fingerprint}
    assert _main_pid(host, "haproxy") == haproxy
    code, ret = host.salt_call(MINION, PILLAR, "certsync_monitor.resume", args["name"])
    assert code == 0 and ret["reason"].startswith("rolled back"), ret
