"""The ``service`` consumer kind on a host with systemd as PID 1 (a container):
Debian's postfix, dovecot, nginx and HAProxy 2.6 run as units and read the
certificate from files. From the consumer's pillar (``kind: service``), one deploy
writes each file in its layout, reloads postfix, dovecot and nginx through Salt's
service module (systemd), hands HAProxy its combined file through the runtime API
with no reload, and checks on the wire that every one serves the new certificate."""

import json

import pytest

from harness.pki import write_pair
from harness.systemd_host import SystemdHost

pytestmark = pytest.mark.one_release  # its subject is systemd's units, not the Salt release

HOST = "mail.example.test"
MINION = "mx1"
#: postfix (STARTTLS on 25), dovecot (POP3S on 995; its IMAP on 143 behind HAProxy),
#: nginx (HTTPS on 443), HAProxy (IMAPS on 993: TLS offload to dovecot).
SETUP = """
set -e
# At boot the unit failed (an unprivileged container has no mount namespaces for its
# /dev/log bind) and systemd may still be restarting it: stopped first, so that no
# start of it comes before its drop-in and dovecot's port change, or counts against
# its start limit.
systemctl stop haproxy
mkdir -p /etc/systemd/system/haproxy.service.d
printf '[Service]\nBindReadOnlyPaths=\n' > /etc/systemd/system/haproxy.service.d/container.conf
systemctl daemon-reload
mkdir -p /etc/ssl/mail /etc/haproxy/certs
install -m 644 {work}/old/fullchain.pem /etc/ssl/mail/fullchain.pem
install -m 600 {work}/old/privkey.pem /etc/ssl/mail/privkey.pem
cat {work}/old/fullchain.pem {work}/old/privkey.pem > /etc/haproxy/certs/mail.pem
chmod 600 /etc/haproxy/certs/mail.pem
postconf -e smtpd_tls_cert_file=/etc/ssl/mail/fullchain.pem \
    smtpd_tls_key_file=/etc/ssl/mail/privkey.pem smtpd_tls_security_level=may
cat > /etc/dovecot/conf.d/99-certsync.conf <<'EOF'
protocols = imap pop3
ssl = yes
ssl_cert = </etc/ssl/mail/fullchain.pem
ssl_key = </etc/ssl/mail/privkey.pem
service imap-login {{
  inet_listener imaps {{
    port = 0
  }}
}}
EOF
cat > /etc/nginx/sites-enabled/default <<'EOF'
server {{
  listen 443 ssl;
  ssl_certificate /etc/ssl/mail/fullchain.pem;
  ssl_certificate_key /etc/ssl/mail/privkey.pem;
  return 200 ok;
}}
EOF
cat >> /etc/haproxy/haproxy.cfg <<'EOF'
frontend imaps
    mode tcp
    option tcplog
    bind :993 ssl crt /etc/haproxy/certs/mail.pem
    default_backend dovecot_imap
backend dovecot_imap
    mode tcp
    server dovecot 127.0.0.1:143
EOF
systemctl restart postfix dovecot nginx
systemctl reset-failed haproxy
systemctl start haproxy
"""
ENDPOINTS = {"smtp": 25, "pop3s": 995, "https": 443, "imaps": 993}
FILES = [
    {"path": "/etc/ssl/mail/fullchain.pem", "contents": "fullchain"},
    {"path": "/etc/ssl/mail/privkey.pem", "contents": "key"},
    {"path": "/etc/haproxy/certs/mail.pem", "contents": "combined", "group": "haproxy",
     "mode": "0640"},
]  # fmt: skip
PILLAR = {
    "certsync": {
        "hostname": HOST,
        "source": {"minion": "npm"},
        "consumers": {
            MINION: {
                "kind": "service",
                "files": FILES,
                "units": {"postfix": ["smtp"], "dovecot": ["pop3s"], "nginx": ["https"]},
                "haproxy_socket": "/run/haproxy/admin.sock",
                "endpoints": ENDPOINTS,
                "verify_timeout": 20,
            }
        },
    }
}


@pytest.fixture(scope="module")
def host(docker_engine, tmp_path_factory, ca):
    work = tmp_path_factory.mktemp("service-host")
    machine = SystemdHost(docker_engine, work).start()
    try:
        machine.old = ca.leaf(HOST)
        write_pair(work / "old", machine.old, "fullchain.pem", "privkey.pem")
        done = machine.sh(SETUP.format(work=work))
        assert done.exit_code == 0, done.output.decode()
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
