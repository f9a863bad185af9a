"""
certsync.deployed against real postfix, dovecot and nginx in Docker, through
salt-call --local: reload, verify on the wire, restart fallback, rollback.
"""

import json
import os

import pytest
from support.mailcow_stack import HOST
from support.pki import write_pair

ALL = ["smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "sieve", "https"]


@pytest.fixture(scope="module")
def old(ca):
    return ca.leaf(HOST, key_kind="ec-p384")


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "npm" / "live" / "npm-5"
    path.mkdir(parents=True)
    return path


def _renew(source, issued):
    write_pair(source, issued, "fullchain.pem", "privkey.pem")
    return str(source)


def test_renewal_is_served_on_every_endpoint(salt_call, make_stack, source, ca, old):
    stack = make_stack(old)
    assert set(stack.served().values()) == {old.fingerprint}
    new = ca.leaf(HOST, key=old.key)
    code, ret = salt_call.state(**stack.state_args(source=_renew(source, new)))
    assert (code, ret["result"]) == (0, True), ret["comment"]
    assert stack.served() == dict.fromkeys(ALL, new.fingerprint)
    assert "reloaded postfix-mailcow, dovecot-mailcow, nginx-mailcow" in ret["comment"]
    assert sorted(ret["changes"]["served"]) == sorted(ALL)
    assert ret["changes"]["new"]["fingerprint"] == new.fingerprint
    _, again = salt_call.state(**stack.state_args(source=str(source)))
    assert (again["result"], again["changes"]) == (True, {})
    assert again["comment"].endswith("and served on every endpoint")


def test_test_mode_reports_reload_and_what_is_served(salt_call, make_stack, source, ca, old):
    stack = make_stack(old)
    new = ca.leaf(HOST, key_kind="ec-p256")
    _, ret = salt_call.state(test=True, **stack.state_args(source=_renew(source, new)))
    assert ret["result"] is None
    assert "Would reload postfix-mailcow, dovecot-mailcow, nginx-mailcow" in ret["comment"]
    assert (
        f"imaps (127.0.0.1:{stack.endpoints['imaps']}): WRONG, serves {old.fingerprint[:16]}"
        in (ret["comment"])
    )
    assert "(the previous pair)" in ret["comment"]
    assert stack.served() == dict.fromkeys(ALL, old.fingerprint)


def test_reload_that_does_not_take_falls_back_to_restart(salt_call, make_stack, source, ca, old):
    stack = make_stack(old)
    new = ca.leaf(HOST, key_kind="ec-p256")  # a new key as well
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
    new = ca.leaf(HOST, key_kind="rsa-2048")
    before = (stack.ssl_dir / "cert.pem").read_bytes()
    code, ret = salt_call.state(**stack.state_args(source=_renew(source, new), verify_timeout="5"))
    assert code != 0
    assert ret["result"] is False
    assert ret["changes"] == {}
    comment = ret["comment"]
    assert f"https (127.0.0.1:{stack.endpoints['https']}): " in comment
    assert "restarted nginx-mailcow (nginx-mailcow: container" in comment
    assert f"Restored the previous pair {old.fingerprint[:16]}..." in comment
    assert (
        f"The previous pair {old.fingerprint[:16]}... is served again on every endpoint" in comment
    )
    assert (stack.ssl_dir / "cert.pem").read_bytes() == before
    assert stack.served() == dict.fromkeys(ALL, old.fingerprint)


def test_sni_dir_shadowing_the_top_level_pair_is_named(salt_call, make_stack, source, ca, old):
    stale = ca.leaf(HOST, key_kind="ec-p256")
    stack = make_stack(old)
    write_pair(stack.ssl_dir / HOST, stale)
    stack.containers["nginx-mailcow"].restart(timeout=5)
    stack.wait_ready()
    assert stack.served()["https"] == stale.fingerprint
    new = ca.leaf(HOST, key=old.key)
    args = stack.state_args(source=_renew(source, new), sni="False", verify_timeout="5")
    _, ret = salt_call.state(**args)
    assert ret["result"] is False
    assert (
        f"WRONG, serves {stale.fingerprint[:16]}... (the pair in SNI dir {HOST})" in ret["comment"]
    )
    assert stack.served()["imaps"] == old.fingerprint
    # With sni on (the default), the SNI dir is kept in step and all is served.
    _, ret = salt_call.state(**stack.state_args(source=str(source)))
    assert ret["result"] is True, ret["comment"]
    assert stack.served() == dict.fromkeys(ALL, new.fingerprint)


def test_stale_container_is_repaired_when_files_are_current(salt_call, make_stack, source, ca, old):
    stack = make_stack(old)
    new = ca.leaf(HOST, key=old.key)
    _renew(source, new)
    write_pair(stack.ssl_dir, new)  # files current, services not reloaded
    _, ret = salt_call.state(**stack.state_args(source=str(source)))
    assert ret["result"] is True, ret["comment"]
    assert sorted(ret["changes"]["served"]["repaired"]) == sorted(ALL)
    assert stack.served() == dict.fromkeys(ALL, new.fingerprint)


def test_docker_unreachable_changes_nothing(salt_call, make_stack, source, ca, old):
    stack = make_stack(old)
    before = (stack.ssl_dir / "cert.pem").read_bytes()
    new = ca.leaf(HOST, key=old.key)
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
    new = ca.leaf(HOST, key=old.key)
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
