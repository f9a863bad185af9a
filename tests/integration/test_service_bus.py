"""
The ``service`` consumer kind over the Salt bus: a master with the reactor, the
NPM minion whose real certbot holds the lineage, and a salt-minion daemon on a
host with systemd as PID 1 (a container) where Debian's postfix, dovecot, nginx
and HAProxy 2.6 run as units and read the certificate from files. Its first
deploy and a renewal each reach it through the bus: the files written, postfix,
dovecot and nginx reloaded through Salt's service module, HAProxy given the pair
through its runtime API, and every unit serving the new certificate on the wire.
"""

import pytest
from saltfactories.utils import random_string

from harness.acme import NpmCertbot
from harness.fleet import (
    MINION_CONFIG,
    BusRecorder,
    certsync_returns,
    master_config,
    wait_until,
    write_pillar,
)
from harness.pki import write_pair
from harness.systemd_host import SystemdHost, bridge_gateway, mail_consumer

# its subject is systemd's units, not the Salt release
pytestmark = pytest.mark.one_release

HOST = "mail.example.test"
LINEAGE = 5
CONVERGE_TIMEOUT = 180


@pytest.fixture(scope="module")
def fleet(salt_factories, tmp_path_factory, docker_engine, ca, pebble):
    root = tmp_path_factory.mktemp("service-bus")
    certbot = NpmCertbot(root / "npm", pebble)
    certbot.issue(LINEAGE, [HOST])
    host = SystemdHost(docker_engine, root / "host").start()
    ids = {"npm": random_string("npm-"), "mx": random_string("mx-")}
    gateway = bridge_gateway(docker_engine)
    pillar_dir = root / "pillar"
    write_pillar(pillar_dir, ids["npm"], {ids["mx"]: mail_consumer()}, certbot.live_dir)
    master = salt_factories.salt_master_daemon(
        random_string("master-"), overrides={**master_config(pillar_dir), "interface": gateway}
    )
    npm = master.salt_minion_daemon(ids["npm"], overrides={**MINION_CONFIG, "master": gateway})

    def salt(minion, *args):
        return master.salt_cli(timeout=180).run(*args, minion_tgt=minion)

    try:
        write_pair(root / "host" / "old", ca.leaf(HOST), "fullchain.pem", "privkey.pem")
        host.set_up_mail(root / "host" / "old")
        with master.started(), npm.started():
            bus = BusRecorder(master.config).start()
            ports = {key: master.config[key] for key in ("ret_port", "publish_port")}
            host.start_minion(ids["mx"], gateway, ports)
            # the factory's master accepts its key; a ping sent before it listened is lost
            ping = master.salt_cli(timeout=10)
            wait_until(
                lambda: ping.run("test.ping", minion_tgt=ids["mx"]).data is True,
                120,
                interval=2,
                what="the minion in the container to answer",
            )
            master.salt_run_cli().run("saltutil.sync_all")
            for minion_id in ids.values():
                assert salt(minion_id, "saltutil.sync_all").returncode == 0
            try:
                yield {"ids": ids, "certbot": certbot, "host": host, "salt": salt, "bus": bus}
            finally:
                bus.stop()
    finally:
        host.remove()


def _wait_served(fleet, fingerprint):
    host = fleet["host"]
    try:
        wait_until(
            lambda: set(host.served(HOST).values()) == {fingerprint},
            CONVERGE_TIMEOUT,
            interval=1,
            what=f"every unit to serve {fingerprint[:16]}",
        )
    except AssertionError as exc:
        deploys = certsync_returns(fleet["bus"].events)
        raise AssertionError(f"{exc}\nserved: {host.served(HOST)}\ndeploys:\n{deploys}") from None


def _deploy_jobs_done(fleet):
    """The returns of certsync_deploy.deployed jobs (the reactor's) from the minion in
    the container that succeeded, on the master's bus."""
    mx = fleet["ids"]["mx"]
    return [
        event
        for event in list(fleet["bus"].events)
        if event["tag"].endswith(f"/ret/{mx}")
        and event["data"].get("fun") == "certsync_deploy.deployed"
        and event["data"].get("success") is True
    ]


def _main_pids(host):
    return {
        unit: host.sh(f"systemctl show -p MainPID --value {unit}").output.decode().strip()
        for unit in ("postfix", "dovecot", "nginx", "haproxy")
    }


def test_the_first_deploy_comes_over_the_bus(fleet):
    salt, ids, host = fleet["salt"], fleet["ids"], fleet["host"]
    salt(ids["npm"], "state.apply", "certsync")  # no recipient key yet: the consumer's next
    applied = salt(ids["mx"], "state.apply", "certsync")  # its recipient key: the publication
    assert applied.returncode in (0, 1), applied.stdout
    _wait_served(fleet, fleet["certbot"].current(LINEAGE).fingerprint)
    # the reactor's job: it installs the pair, or finds it installed by the state run
    # that made the recipient key (on a slow host the publication is there before its
    # certsync-deployed state), its deploy taking its turn behind that one
    wait_until(
        lambda: _deploy_jobs_done(fleet),
        CONVERGE_TIMEOUT,
        what="the reactor's certsync_deploy.deployed to return from the minion in the container",
    )
    assert host.sh("stat -c '%a %G' /etc/haproxy/certs/mail.pem").output.decode().split() == [
        "640",
        "haproxy",
    ]


def test_a_renewal_reloads_the_units_and_hands_haproxy_the_pair(fleet):
    certbot, host = fleet["certbot"], fleet["host"]
    pids, before = _main_pids(host), certbot.current(LINEAGE).fingerprint
    seen = len(fleet["bus"].events)
    certbot.renew(LINEAGE)
    renewed = certbot.current(LINEAGE).fingerprint
    assert renewed != before
    _wait_served(fleet, renewed)

    def reloaded():  # the deploy's return comes after the wire shows the new pair
        return [
            line
            for line in certsync_returns(fleet["bus"].events[seen:]).splitlines()
            if "certsync_deploy.deployed" in line
            and renewed in line
            and line.endswith("reloaded haproxy runtime API, postfix, dovecot, nginx")
        ]

    wait_until(reloaded, CONVERGE_TIMEOUT, what="the renewal's deploy to return, units reloaded")
    assert _main_pids(host) == pids  # reloads (HAProxy not even that): no unit restarted
