"""
certsync.deployed against real postfix, dovecot and nginx in Docker, through
salt-call --local: reload, verify on the wire, restart fallback, rollback,
on a look-alike that behaves as mailcow does (per-name dirs by their
`domains` file, postfix's SNI map built by postmap -F, ports from
mailcow.conf, acme-mailcow).
"""

import json
import os
import pathlib
import threading
import time

import pytest

from harness.fleet import stack_settings
from harness.mail_clients import LongSession
from harness.mailcow_stack import HOST, NAMES, free_port
from harness.pki import TestCA, write_pair, write_sni_dir

#: The look-alike's wire under deploys: its subject does not change with the Salt
#: release (the deploy's logic runs on both in the functional tests).
pytestmark = pytest.mark.one_release

ALL = ["smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "sieve", "https"]
MAIL = ["smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "sieve"]
#: Every probe the state makes: each endpoint for each name of the updated dirs
#: (here the hostname's), and without SNI (the top-level pair).
EVERY_NAME = [*NAMES, ""]


def _keys(endpoints, names):
    return sorted(f"{e}/{n or '-'}" for e in endpoints for n in names)


@pytest.fixture(scope="module")
def old(ca):
    return ca.leaf(HOST, sans=NAMES, key_kind="ec-p384")


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "npm" / "live" / "npm-5"
    path.mkdir(parents=True)
    return path


def _renew(source, issued):
    write_pair(source, issued, "fullchain.pem", "privkey.pem")
    return str(source)


def test_renewal_is_served_on_every_name_and_endpoint_with_no_restart(
    salt_call, make_stack, source, ca, old
):
    stack = make_stack(old)
    assert set(stack.served_names(EVERY_NAME).values()) == {old.fingerprint}
    started = stack.started_at()
    new = ca.leaf(HOST, sans=NAMES, key=old.key)
    code, ret = salt_call.state(**stack.state_args(source=_renew(source, new)))
    assert (code, ret["result"]) == (0, True), ret["comment"]
    assert stack.served_names(EVERY_NAME) == dict.fromkeys(_keys(ALL, EVERY_NAME), new.fingerprint)
    assert "reloaded postfix-mailcow, dovecot-mailcow, nginx-mailcow" in ret["comment"]
    assert "restarted" not in ret["comment"]
    assert stack.started_at() == started
    assert ret["changes"]["served"] == _keys(ALL, EVERY_NAME)
    assert ret["changes"]["dirs"] == [str(stack.ssl_dir), str(stack.ssl_dir / HOST)]
    assert ret["changes"]["new"]["fingerprint"] == new.fingerprint
    _, again = salt_call.state(**stack.state_args(source=str(source)))
    assert (again["result"], again["changes"]) == (True, {})
    assert again["comment"].endswith("and served on every endpoint")


def test_test_mode_reports_reload_and_what_is_served(salt_call, make_stack, source, ca, old):
    stack = make_stack(old)
    new = ca.leaf(HOST, sans=NAMES, key_kind="ec-p256")
    _, ret = salt_call.state(test=True, **stack.state_args(source=_renew(source, new)))
    assert ret["result"] is None
    assert "Would reload postfix-mailcow, dovecot-mailcow, nginx-mailcow" in ret["comment"]
    assert (
        f"imaps/{HOST} (127.0.0.1:{stack.endpoints['imaps']}): WRONG, serves "
        f"{old.fingerprint[:16]}" in (ret["comment"])
    )
    assert f"(the previous pair, also the pair in SNI dir {HOST})" in ret["comment"]
    assert stack.served() == dict.fromkeys(ALL, old.fingerprint)


def test_reload_that_does_not_take_falls_back_to_restart(salt_call, make_stack, source, ca, old):
    stack = make_stack(old)
    new = ca.leaf(HOST, sans=NAMES, key_kind="ec-p256")  # a new key as well
    args = stack.state_args(
        source=_renew(source, new),
        reload_commands=json.dumps({"dovecot-mailcow": ["true"]}),
        verify_timeout="5",
    )
    _, ret = salt_call.state(**args)
    assert ret["result"] is True, ret["comment"]
    assert "restarted dovecot-mailcow" in ret["comment"]
    assert "postfix-mailcow" not in ret["comment"].split("restarted")[1]
    assert stack.served() == dict.fromkeys(ALL, new.fingerprint)


def test_service_that_fails_with_the_new_pair_rolls_back(salt_call, make_stack, source, ca, old):
    """nginx at OpenSSL security level 3 refuses a 2048-bit RSA key that certsync accepts."""
    stack = make_stack(old, nginx_seclevel=3)
    new = ca.leaf(HOST, sans=NAMES, key_kind="rsa-2048")
    before = (stack.ssl_dir / "cert.pem").read_bytes()
    code, ret = salt_call.state(**stack.state_args(source=_renew(source, new), verify_timeout="5"))
    assert code != 0
    assert ret["result"] is False
    assert ret["changes"] == {}
    comment = ret["comment"]
    assert f"https/{HOST} (127.0.0.1:{stack.endpoints['https']}): " in comment
    assert "restarted nginx-mailcow (nginx-mailcow: container" in comment
    assert f"Restored the previous pair {old.fingerprint[:16]}..." in comment
    assert (
        f"The previous pair {old.fingerprint[:16]}... is served again on every endpoint" in comment
    )
    assert (stack.ssl_dir / "cert.pem").read_bytes() == before
    assert stack.served() == dict.fromkeys(ALL, old.fingerprint)


def test_a_port_that_is_off_on_purpose_is_reported_and_never_restarts_mail(
    salt_call, make_stack, source, ca, old
):
    """pop3 is off (nothing listens): the deploy, the dry run and the converging run
    name it and go on with the endpoints that answer; nothing is restarted for it."""
    stack = make_stack(old)
    started = stack.started_at()
    endpoints = {name: f"127.0.0.1:{port}" for name, port in stack.endpoints.items()}
    endpoints["pop3"] = f"127.0.0.1:{free_port()}"
    args = {"endpoints": json.dumps(endpoints), "verify_timeout": "5"}
    new = ca.leaf(HOST, sans=NAMES, key=old.key)
    code, ret = salt_call.state(**stack.state_args(source=_renew(source, new), **args))
    assert (code, ret["result"]) == (0, True), ret["comment"]
    assert f"Not reachable, not checked: pop3 ({endpoints['pop3']}: " in ret["comment"]
    assert "restarted" not in ret["comment"]
    assert ret["changes"]["served"] == _keys([e for e in ALL if e != "pop3"], EVERY_NAME)
    for test in (True, False):
        code, again = salt_call.state(test=test, **stack.state_args(source=str(source), **args))
        assert (code, again["result"], again["changes"]) == (0, True, {}), again["comment"]
        assert "already deployed and served on every endpoint that answers" in again["comment"]
        assert "Not reachable, not checked: pop3" in again["comment"]
        assert "reload" not in again["comment"]
    assert stack.started_at() == started


def test_every_endpoint_refusing_is_an_error_and_changes_nothing(
    salt_call, make_stack, source, ca, old
):
    stack = make_stack(old)
    before = (stack.ssl_dir / "cert.pem").read_bytes()
    refused = json.dumps({"smtps": f"127.0.0.1:{free_port()}", "https": free_port()})
    new = ca.leaf(HOST, sans=NAMES, key=old.key)
    _, ret = salt_call.state(**stack.state_args(source=_renew(source, new), endpoints=refused))
    assert ret["result"] is False
    assert ret["comment"].startswith(
        "Nothing deployed: no endpoint answers, so nothing could be verified: https ("
    )
    assert (stack.ssl_dir / "cert.pem").read_bytes() == before


def test_a_service_is_restarted_at_most_once_an_hour(salt_call, make_stack, source, ca, old):
    """A certificate that a reload does not bring: the first run restarts dovecot, the
    next within the hour does not, rolls back, and the pair that served keeps serving."""
    stack = make_stack(old)
    args = {"reload_commands": json.dumps({"dovecot-mailcow": ["true"]}), "verify_timeout": "5"}
    first = ca.leaf(HOST, sans=NAMES, key_kind="ec-p256")
    _, ret = salt_call.state(**stack.state_args(source=_renew(source, first), **args))
    assert ret["result"] is True, ret["comment"]
    assert "restarted dovecot-mailcow" in ret["comment"]
    started = stack.started_at()
    second = ca.leaf(HOST, sans=NAMES, key_kind="ec-p256")
    _, ret = salt_call.state(**stack.state_args(source=_renew(source, second), **args))
    assert ret["result"] is False
    assert "not restarted dovecot-mailcow: restarted at " in ret["comment"]
    assert "at most one restart per 3600 s" in ret["comment"]
    assert f"The previous pair {first.fingerprint[:16]}... is served again" in ret["comment"]
    assert stack.started_at() == started
    assert stack.served() == dict.fromkeys(ALL, first.fingerprint)


def test_a_rollback_undoes_the_whole_deploy_serves_it_and_pauses(
    salt_call, make_stack, source, ca, old
):
    """state.apply certsync.rollback: the top-level pair and the hostname's dir (both
    changed by the deploy) back as one step, reloaded, served on every endpoint and
    name; deploys paused until certsync.resumed."""
    stack = make_stack(old)
    new = ca.leaf(HOST, sans=NAMES, key_kind="ec-p256")
    _, ret = salt_call.state(**stack.state_args(source=_renew(source, new)))
    assert ret["result"] is True, ret["comment"]
    dirs = [str(stack.ssl_dir), str(stack.ssl_dir / HOST)]
    assert ret["changes"]["dirs"] == dirs
    consumer = {**stack_settings(stack), "verify_timeout": 15}
    pillar = {"certsync": {"hostname": HOST, "source": {"minion": "npm"}}}
    pillar["certsync"]["consumers"] = {salt_call.minion_id: consumer}
    with salt_call.pillar(pillar):
        dry = salt_call("state.apply", "certsync.rollback", "test=True")
        done = salt_call("state.apply", "certsync.rollback")
    (planned,) = [v for k, v in dry.data.items() if "certsync-settings" not in k]
    assert planned["result"] is None and planned["changes"] == {}, planned
    assert planned["comment"].startswith("Would roll back:\n")
    assert (
        f"{dirs[1]}: {new.fingerprint[:16]}... -> {old.fingerprint[:16]}..." in (planned["comment"])
    )
    (rolled,) = [v for k, v in done.data.items() if "certsync-settings" not in k]
    assert (done.returncode, rolled["result"]) == (0, True), rolled["comment"]
    assert rolled["changes"] == {
        "rolled_back": {"old": new.fingerprint, "new": old.fingerprint},
        "dirs": dirs,
        "paused": True,
    }
    assert "Deploys are paused" in rolled["comment"]
    for directory in dirs:
        assert (pathlib.Path(directory) / "cert.pem").read_bytes() == old.fullchain_pem()
    assert set(stack.served_names(EVERY_NAME).values()) == {old.fingerprint}

    _, held = salt_call.state(**stack.state_args(source=str(source)))
    assert (held["result"], held["changes"]) == (True, {})
    assert held["comment"].startswith("Paused since ")
    assert "state.apply certsync.resume" in held["comment"]
    assert (stack.ssl_dir / "cert.pem").read_bytes() == old.fullchain_pem()
    _, resumed = salt_call.state("certsync.resumed", name=str(stack.ssl_dir))
    assert resumed["changes"] == {"paused": {"old": True, "new": False}}
    _, again = salt_call.state(**stack.state_args(source=str(source)))
    assert again["result"] is True and again["changes"]["dirs"] == dirs, again["comment"]
    assert set(stack.served_names(EVERY_NAME).values()) == {new.fingerprint}


def test_postfix_reload_alone_keeps_the_sni_map_stale(salt_call, make_stack, source, ca, old):
    """As on real mailcow: the map holds the files' contents; only the slow path fixes it."""
    stack = make_stack(old)
    new = ca.leaf(HOST, sans=NAMES, key=old.key)
    reload_only = json.dumps({"postfix-mailcow": ["postfix", "reload"]})
    args = stack.state_args(source=_renew(source, new), reload_commands=reload_only)
    _, ret = salt_call.state(**{**args, "verify_timeout": "5"})
    assert ret["result"] is True, ret["comment"]
    assert "restarted postfix-mailcow" in ret["comment"]
    assert "dovecot-mailcow" not in ret["comment"].split("restarted")[1]
    assert set(stack.served_names(EVERY_NAME).values()) == {new.fingerprint}


def test_a_dir_with_names_not_covered_is_left_alone_and_reported(
    salt_call, make_stack, source, ca, old
):
    stack = make_stack(old)
    other_ca = TestCA("mailcow's own acme")
    theirs = other_ca.leaf(
        "mail.example.org", sans=["mail.example.org", "autodiscover.example.org"]
    )
    other = write_sni_dir(stack.ssl_dir, theirs, ["mail.example.org", "autodiscover.example.org"])
    stack.restart()
    before = {p.name: p.read_bytes() for p in pathlib.Path(other).iterdir()}
    new = ca.leaf(HOST, sans=NAMES, key=old.key)
    _, ret = salt_call.state(**stack.state_args(source=_renew(source, new)))
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["dirs"] == [str(stack.ssl_dir), str(stack.ssl_dir / HOST)]
    assert (
        "Left alone: SNI dir mail.example.org lists mail.example.org, autodiscover.example.org, "
        f"which the certificate does not cover; it keeps serving {theirs.fingerprint[:16]}..."
    ) in ret["comment"]
    assert {p.name: p.read_bytes() for p in pathlib.Path(other).iterdir()} == before
    served = stack.served_names(["mail.example.org"], ["smtp", "imaps", "https"])
    assert set(served.values()) == {theirs.fingerprint}
    assert set(stack.served_names(EVERY_NAME).values()) == {new.fingerprint}


@pytest.mark.parametrize("sni", [True, False], ids=["sni", "no-sni"])
def test_a_typical_mailcows_hostname_dir_is_taken_over_on_the_first_deploy(
    salt_call, make_stack, source, ca, old, sni
):
    """mailcow's ACME client left ssl/<hostname>/ listing the hostname, autodiscover and
    autoconfig, which postfix and dovecot serve for the hostname itself; NPM's certificate
    covers the hostname only. The first deploy takes the dir over and the hostname is
    served the new certificate everywhere, with and without SNI; nothing else changes."""
    stack = make_stack(old)  # ssl/<hostname>/ lists NAMES
    new = ca.leaf(HOST, sans=[HOST])  # and a new key
    others = {
        p: p.read_bytes() for p in [stack.root / "mailcow.conf", stack.ssl_dir / "dhparams.pem"]
    }
    args = stack.state_args(source=_renew(source, new), sni=str(sni))
    _, ret = salt_call.state(**args)
    assert ret["result"] is True, ret["comment"]
    dropped = [n for n in NAMES if n != HOST]
    assert (
        f"Warning: SNI dir {HOST} is mailcow's own for the hostname and is kept by certsync now"
    ) in ret["comment"]
    assert (
        f"its list had {', '.join(dropped)}, which the certificate does not cover"
        in (ret["comment"])
    )
    assert (stack.ssl_dir / HOST / "domains").read_text() == f"{HOST}\n"
    assert (stack.ssl_dir / HOST / "domains.mailcow").read_text().split() == NAMES
    assert set(stack.served_names([HOST, ""]).values()) == {new.fingerprint}
    assert {p: p.read_bytes() for p in others} == others
    status = salt_call(
        "certsync_consumer_mailcow.sni_plan",
        str(stack.ssl_dir),
        str(stack.ssl_dir / "cert.pem"),
        f"hostname={HOST}",
    ).data
    assert status["dropped"][HOST]["names"] == dropped and status["uncovered"] == {}


def test_a_certificate_lacking_names_mailcow_serves_is_flagged(salt_call, make_stack, source, ca):
    serving = ca.leaf(HOST)
    stack = make_stack(serving, names=[HOST])
    new = ca.leaf(HOST, key=serving.key)  # NPM's certificate for the host name only
    args = stack.state_args(source=_renew(source, new), mail_domains='["example.test"]')
    _, ret = salt_call.state(**args)
    assert ret["result"] is True, ret["comment"]
    assert (
        "Warning: the certificate lacks autodiscover.example.test, autoconfig.example.test, "
        "which mailcow's nginx serves with the top-level pair"
    ) in ret["comment"]


def test_mailcow_conf_naming_another_host_is_an_error(salt_call, make_stack, source, ca, old):
    stack = make_stack(old)
    conf = stack.root / "mailcow.conf"
    conf.write_text(
        conf.read_text().replace(f"MAILCOW_HOSTNAME={HOST}", "MAILCOW_HOSTNAME=mx.x.test")
    )
    new = ca.leaf(HOST, sans=NAMES, key=old.key)
    _, ret = salt_call.state(**stack.state_args(source=_renew(source, new)))
    assert ret["result"] is False
    assert ret["comment"].startswith(
        f"Nothing deployed: {conf}: MAILCOW_HOSTNAME='mx.x.test', but the certificate is "
        f"deployed for '{HOST}'"
    )


def test_acme_mailcow_is_stood_down_before_any_deploy(salt_call, make_stack, source, ca, old):
    stack = make_stack(old, acme=True)
    new = ca.leaf(HOST, sans=NAMES, key=old.key)
    before = (stack.ssl_dir / "cert.pem").read_bytes()
    _, ret = salt_call.state(**stack.state_args(source=_renew(source, new)))
    assert ret["result"] is False
    assert "acme-mailcow (" in ret["comment"]
    assert "runs without SKIP_LETS_ENCRYPT=y in its environment" in ret["comment"]
    assert f"run `docker compose up -d` in {stack.root}" in ret["comment"]
    assert (stack.ssl_dir / "cert.pem").read_bytes() == before

    # The fight: what acme-mailcow does to a pair written beside it.
    write_pair(stack.ssl_dir, new)
    time.sleep(5)
    assert (stack.ssl_dir / "cert.pem").read_bytes() == before

    salt_call("mailcow.conf_set", "SKIP_LETS_ENCRYPT", "y", f"path={stack.root}")
    code, done = salt_call.state("mailcow.acme_stood_down", name=str(stack.root))
    assert (code, done["result"]) == (0, True), done
    assert done["changes"] == {"acme-mailcow": "recreated"}
    assert "docker compose up -d --no-deps acme-mailcow" in done["comment"]
    env = stack.service_container("acme-mailcow").attrs["Config"]["Env"]
    assert "SKIP_LETS_ENCRYPT=y" in env
    _, again = salt_call.state("mailcow.acme_stood_down", name=str(stack.root))
    assert (again["result"], again["changes"]) == (True, {})
    assert again["comment"] == "acme-mailcow runs with SKIP_LETS_ENCRYPT=y"

    _, ret = salt_call.state(**stack.state_args(source=str(source)))
    assert ret["result"] is True, ret["comment"]
    time.sleep(5)  # more than two rounds of the old acme-mailcow's copying
    assert set(stack.served_names(EVERY_NAME).values()) == {new.fingerprint}


def test_a_dry_run_tells_what_the_real_run_does(salt_call, make_stack, source, ca, old):
    """acme-mailcow still active: the dry run plans the deploy and says it waits for
    acme-mailcow to be stood down (the formula's state before it does that); a service
    the compose project lacks fails the dry run as it fails the real run."""
    stack = make_stack(old, acme=True)
    new = ca.leaf(HOST, sans=NAMES, key=old.key)
    before = (stack.ssl_dir / "cert.pem").read_bytes()
    args = stack.state_args(source=_renew(source, new))
    code, ret = salt_call.state(test=True, **args)
    assert (code, ret["result"]) == (0, None), ret["comment"]
    assert ret["comment"].startswith(f"Would install the pair from {source}")
    assert "acme-mailcow (" in ret["comment"]
    assert "the real run deploys only once it is stood down" in ret["comment"]
    for test in (True, False):
        code, ret = salt_call.state(test=test, **{**args, "services": '["postfix"]'})
        assert (code != 0, ret["result"]) == (True, False), ret["comment"]
        assert f"no container for postfix in compose project {stack.project!r}" in ret["comment"]
    assert (stack.ssl_dir / "cert.pem").read_bytes() == before


def test_acme_mailcow_is_stopped_where_compose_cannot_recreate_it(salt_call, make_stack, old):
    stack = make_stack(old, acme=True)
    (stack.root / "docker-compose.yml").unlink()
    salt_call("mailcow.conf_set", "SKIP_LETS_ENCRYPT", "y", f"path={stack.root}")
    _, done = salt_call.state("mailcow.acme_stood_down", name=str(stack.root))
    assert done["result"] is True, done
    assert done["changes"] == {"acme-mailcow": "stopped"}
    assert "no compose file in the checkout" in done["comment"]
    assert f"run `docker compose up -d` in {stack.root} to recreate it" in done["comment"]
    stack.containers["acme-mailcow"].reload()
    assert stack.containers["acme-mailcow"].status == "exited"


def test_a_one_off_container_of_a_service_is_not_reloaded(salt_call, make_stack, old):
    stack = make_stack(old)
    one_off = stack.client.containers.create(
        stack.image,
        ["true"],
        labels={
            "com.docker.compose.project": stack.project,
            "com.docker.compose.service": "postfix-mailcow",
            "com.docker.compose.oneoff": "True",
        },
    )
    try:
        ret = salt_call("mailcow.containers", "services=postfix-mailcow", f"path={stack.root}")
        assert ret.data["postfix-mailcow"]["name"] == stack.containers["postfix-mailcow"].name
    finally:
        one_off.remove(force=True)


def test_stale_container_is_repaired_when_files_are_current(salt_call, make_stack, source, ca, old):
    stack = make_stack(old)
    new = ca.leaf(HOST, sans=NAMES, key=old.key)
    _renew(source, new)
    write_pair(stack.ssl_dir, new)  # files current, services not reloaded
    write_pair(stack.ssl_dir / HOST, new)
    _, ret = salt_call.state(**stack.state_args(source=str(source)))
    assert ret["result"] is True, ret["comment"]
    # dovecot and nginx read the files at (re)load, postfix's SNI map at start
    repaired = set(ret["changes"]["served"]["repaired"])
    assert repaired <= set(_keys(ALL, EVERY_NAME))
    assert set(_keys(["imaps", "https"], EVERY_NAME)) | set(_keys(["smtp"], NAMES)) <= repaired
    assert set(stack.served_names(EVERY_NAME).values()) == {new.fingerprint}


def test_docker_unreachable_changes_nothing(salt_call, make_stack, source, ca, old):
    stack = make_stack(old)
    before = (stack.ssl_dir / "cert.pem").read_bytes()
    new = ca.leaf(HOST, sans=NAMES, key=old.key)
    env = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    _, ret = salt_call.state(env=env, **stack.state_args(source=_renew(source, new)))
    assert ret["result"] is False
    assert "the Docker daemon at unix:///nonexistent/docker.sock is unreachable" in ret["comment"]
    assert ret["comment"].startswith("Nothing deployed")
    assert (stack.ssl_dir / "cert.pem").read_bytes() == before


def test_missing_container_changes_nothing(salt_call, make_stack, source, ca, old):
    stack = make_stack(old)
    before = (stack.ssl_dir / "cert.pem").read_bytes()
    stack.containers["dovecot-mailcow"].remove(force=True)
    new = ca.leaf(HOST, sans=NAMES, key=old.key)
    _, ret = salt_call.state(**stack.state_args(source=_renew(source, new)))
    assert ret["result"] is False
    assert (
        f"no container for dovecot-mailcow in compose project {stack.project!r}" in ret["comment"]
    )
    assert (stack.ssl_dir / "cert.pem").read_bytes() == before


def test_stopped_container_is_reported(salt_call, make_stack, old):
    stack = make_stack(old)
    stack.containers["nginx-mailcow"].stop(timeout=2)
    ret = salt_call("mailcow.reload", f"path={stack.root}")
    assert ret.returncode == 1
    assert ret.data["nginx-mailcow"] == {
        "ok": False,
        "error": f"container {stack.containers['nginx-mailcow'].name} is exited",
    }
    assert ret.data["postfix-mailcow"]["ok"] is True


def test_probe_reports_starttls_not_offered(salt_call, make_stack, old):
    stack = make_stack(old)
    done = stack.exec(
        "postfix-mailcow", "sh", "-c", "postconf -e smtpd_tls_security_level=none && postfix reload"
    )
    assert done.exit_code == 0, done.output
    ret = salt_call(
        "tlsprobe.fetch", HOST, "smtp", f"port={stack.endpoints['smtp']}", "address=127.0.0.1"
    )
    assert ret.data["ok"] is False
    assert ret.data["error"] == "the server does not offer STARTTLS"
    done = stack.exec(
        "dovecot-mailcow",
        "sh",
        "-c",
        "sed -i 's/^ssl = yes/ssl = no/' /etc/dovecot/dovecot.conf && doveadm reload",
    )
    assert done.exit_code == 0, done.output
    ret = salt_call(
        "tlsprobe.fetch", HOST, "imap", f"port={stack.endpoints['imap']}", "address=127.0.0.1"
    )
    assert ret.data["ok"] is False
    assert "STARTTLS" in ret.data["error"]


def test_probe_verifies_the_chain_as_sent(salt_call, make_stack, tmp_path, ca, old):
    stack = make_stack(old)
    bundle = tmp_path / "roots.pem"
    bundle.write_bytes(ca.root_pem())
    ret = salt_call(
        "tlsprobe.probe",
        HOST,
        f"endpoints=imaps:{stack.endpoints['imaps']},smtp:{stack.endpoints['smtp']}",
        "address=127.0.0.1",
        f"ca_file={bundle}",
    )
    assert ret.returncode == 0
    for result in ret.data.values():
        assert result["verified"] is True
        assert [c["fingerprint"] for c in result["chain"]] == [
            old.fingerprint,
            ca.intermediate.fingerprint,
        ]
        assert result["tls_version"] in ("TLSv1.2", "TLSv1.3")


def test_mailcow_conf_state(salt_call, make_stack, tmp_path, old):
    stack = make_stack(old)
    sls = salt_call.sls_dir / "certsync_mailcow_conf.sls"
    sls.write_text(
        "mailcow-conf:\n  mailcow.conf_set:\n"
        f"    - name: {stack.root}\n"
        "    - settings:\n        SKIP_LETS_ENCRYPT: y\n        ENABLE_SSL_SNI: true\n"
    )
    ret = salt_call("state.apply", "certsync_mailcow_conf", "test=True")
    (state,) = ret.data.values()
    assert state["result"] is None
    assert "SKIP_LETS_ENCRYPT=n" in (stack.root / "mailcow.conf").read_text()
    ret = salt_call("state.apply", "certsync_mailcow_conf")
    (state,) = ret.data.values()
    assert state["changes"] == {
        "SKIP_LETS_ENCRYPT": {"old": "n", "new": "y"},
        "ENABLE_SSL_SNI": {"old": "n", "new": "y"},
    }
    assert f"run `docker compose up -d` in {stack.root}" in state["comment"]
    text = (stack.root / "mailcow.conf").read_text()
    assert "SKIP_LETS_ENCRYPT=y\n" in text
    assert text.startswith("# mailcow.conf of a test stack\n")
    assert os.stat(stack.root / "mailcow.conf").st_mode & 0o777 == 0o644
    (state,) = salt_call("state.apply", "certsync_mailcow_conf").data.values()
    assert (state["result"], state["changes"]) == (True, {})


#: dovecot ends the processes of its old configuration this long after a reload
#: when shutdown_clients is yes (its SERVICE_DIE_TIMEOUT_MSECS, 6 s), and a margin
DOVECOT_DIE_AFTER = 8


def _logged_in_across_a_reload(salt_call, stack):
    """Which logged-in IMAP, POP3 and ManageSieve sessions still work once dovecot
    was reloaded (as a deploy reloads it) and its old processes had their time."""
    sessions = {
        endpoint: LongSession(endpoint, stack.endpoints[endpoint], HOST, user=f"u-{endpoint}")
        for endpoint in ("imaps", "pop3", "sieve")
    }
    reloaded = salt_call("mailcow.reload", '["dovecot-mailcow"]', str(stack.root))
    assert reloaded.returncode == 0, reloaded
    time.sleep(DOVECOT_DIE_AFTER)
    return {endpoint: session.use() for endpoint, session in sessions.items()}


def test_dovecot_keeps_logged_in_sessions_through_a_reload_with_the_formulas_block(
    salt_call, make_stack, old
):
    """certsync.dovecot writes shutdown_clients = no into mailcow's extra.conf (and
    reloads dovecot once): logged-in sessions then outlive a deploy's reload. Taken
    out again (dovecot_keep_sessions: false), dovecot's default ends them."""
    stack = make_stack(old)
    own = {"mailcow_dir": str(stack.root), "services": ["dovecot-mailcow"]}
    pillar = {
        "hostname": HOST,
        "source": {"minion": "npm"},
        "consumers": {salt_call.minion_id: own},
    }
    with salt_call.pillar({"certsync": pillar}):
        applied = salt_call("state.apply", "certsync.dovecot")
    assert applied.returncode == 0, applied
    (reloaded,) = (ret for key, ret in applied.data.items() if "certsync-dovecot-reloaded" in key)
    assert reloaded["changes"] == {"reloaded": ["dovecot-mailcow"]}
    assert "shutdown_clients = no" in (stack.dovecot_conf_dir / "extra.conf").read_text()
    assert _logged_in_across_a_reload(salt_call, stack) == dict.fromkeys(("imaps", "pop3", "sieve"))
    own["dovecot_keep_sessions"] = False
    with salt_call.pillar({"certsync": pillar}):
        assert salt_call("state.apply", "certsync.dovecot").returncode == 0
    assert "shutdown_clients" not in (stack.dovecot_conf_dir / "extra.conf").read_text()
    lost = _logged_in_across_a_reload(salt_call, stack)
    assert all(lost.values()), lost  # "Server shutting down", or closed


def test_probes_while_every_service_reloads_in_a_loop_never_raise(make_stack, old):
    """dovecot may greet with `* BYE` while it reloads, postfix and nginx drop
    connections: each is an unsuccessful probe, never an exception."""
    stack = make_stack(old)
    stop = threading.Event()
    reloads = {"postfix-mailcow": "postfix reload", "dovecot-mailcow": "doveadm reload"}
    reloads["nginx-mailcow"] = "nginx -s reload"

    def reload_loop():
        for _ in range(300):  # bounded; stopped when the probing is done
            for service, command in reloads.items():
                if stop.is_set():
                    return
                stack.exec(service, *command.split())

    thread = threading.Thread(target=reload_loop, daemon=True)
    thread.start()
    rounds = []
    try:
        for _ in range(25):
            rounds.append(stack.probe(names=[HOST, ""], timeout=2))
    finally:
        stop.set()
        thread.join(60)
    results = [result for found in rounds for result in found.values()]
    assert len(results) == 25 * 9 * 2
    assert all(isinstance(r["ok"], bool) for r in results)
    failed = [r["error"] for r in results if not r["ok"]]
    assert all(isinstance(e, str) and e for e in failed)
    print(f"{len(results)} probes during reloads: {len(failed)} failed cleanly: {set(failed)}")


def test_the_docker_api_version_is_negotiated_once_per_process(make_stack, old, caplog):
    """In-process, as a deploy's job runs it: the first client asks the daemon for its
    API version, the later ones (the reload's four) reuse it."""
    from harness.loader import mailcow_mod

    stack = make_stack(old)
    mailcow_mod.__context__, mailcow_mod.__opts__ = {}, {}
    with caplog.at_level("DEBUG", logger="urllib3.connectionpool"):
        mailcow_mod.containers(path=str(stack.root))
        asked = caplog.text.count('"GET /version ')
        reloaded = mailcow_mod.reload(path=str(stack.root))
    assert all(r["ok"] for r in reloaded.values()), reloaded
    assert asked == 1
    assert caplog.text.count('"GET /version ') == 1
