"""Unit tests of the mailcow and tlsprobe modules' input handling (loader mocked)."""

import os
import socket
from unittest.mock import patch

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError
from support.tlsserver import TLSServer

from harness.loader import certsync_mod, mailcow_mod, mailcow_state, tlsprobe_mod
from harness.pki import write_pair

CONF = (
    "# mailcow.conf\nMAILCOW_HOSTNAME=mail.example.test\nSKIP_LETS_ENCRYPT=n\n# ENABLE_SSL_SNI=y\n"
)


@pytest.fixture
def configure_loader_modules():
    return {
        mailcow_mod: {"__context__": {}, "__opts__": {}, "__salt__": {}},
        tlsprobe_mod: {"__context__": {}},
        mailcow_state: {
            "__salt__": {"mailcow.conf_set": mailcow_mod.conf_set},
            "__opts__": {"test": False},
        },
    }


@pytest.fixture
def checkout(tmp_path):
    (tmp_path / "mailcow.conf").write_text(CONF)
    os.chmod(tmp_path / "mailcow.conf", 0o600)
    return tmp_path


def test_conf_get_reads_keys_and_ignores_comments(checkout):
    assert mailcow_mod.conf_get("SKIP_LETS_ENCRYPT", str(checkout)) == "n"
    assert mailcow_mod.conf_get("ENABLE_SSL_SNI", str(checkout)) is None
    # no COMPOSE_PROJECT_NAME: Compose's default, from the directory's name
    assert mailcow_mod.project_name(str(checkout)) == checkout.name.lower().replace(".", "")


@pytest.mark.parametrize(
    ("dirname", "conf", "expected"),
    [
        ("mailcow-dockerized", "", "mailcow-dockerized"),
        ("Mail.Cow_2", "", "mailcow_2"),
        ("x", "COMPOSE_PROJECT_NAME=MailcowDockerized\n", "mailcowdockerized"),
    ],
)
def test_the_project_name_as_compose_and_mailcow_make_it(tmp_path, dirname, conf, expected):
    checkout = tmp_path / dirname
    checkout.mkdir()
    (checkout / "mailcow.conf").write_text(conf)
    assert mailcow_mod.project_name(str(checkout)) == expected


def test_endpoints_come_from_mailcow_conf(checkout):
    with open(checkout / "mailcow.conf", "a") as conf:
        conf.write(
            "SMTP_PORT=192.0.2.7:2525\nIMAPS_PORT=10993\nPOP_PORT=0.0.0.0:1110\n"
            "HTTPS_PORT=8443\nHTTPS_BIND=127.0.0.1\nSIEVE_PORT=[::1]:14190\n"
        )
    assert mailcow_mod.endpoints(str(checkout)) == {
        "smtp": "192.0.2.7:2525",
        "submission": 587,
        "smtps": 465,
        "imap": 143,
        "imaps": 10993,
        "pop3": 1110,
        "pop3s": 995,
        "sieve": "::1:14190",
        "https": "127.0.0.1:8443",
    }
    assert mailcow_mod.endpoints(str(checkout), ["smtp", "https"]) == {
        "smtp": "192.0.2.7:2525",
        "https": "127.0.0.1:8443",
    }
    assert tlsprobe_mod._endpoint_list(mailcow_mod.endpoints(str(checkout)))[7] == (
        "sieve",
        14190,
        "::1",
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("SMTP_PORT=abc", "SMTP_PORT='abc' is not a port"),
        ("IMAP_PORT=1.2.3.4:0", "IMAP_PORT=.1.2.3.4:0. is not a port"),
        ("SMTP_PORT=2\u00b2", "SMTP_PORT='2\u00b2' is not a port"),  # isdigit() took it
        ("SMTP_PORT=\u0662\u0665", "SMTP_PORT='\u0662\u0665' is not a port"),  # Arabic 25
        ("SMTPS_PORT=127.0.0.1:99999", "SMTPS_PORT='127.0.0.1:99999' is not a port"),
    ],
)
def test_a_bad_port_in_mailcow_conf_names_the_file(checkout, line, message):
    with open(checkout / "mailcow.conf", "a") as conf:
        conf.write(line + "\n")
    with pytest.raises(CommandExecutionError, match=f"mailcow.conf: {message}"):
        mailcow_mod.endpoints(str(checkout))


def test_the_names_mailcow_serves_with_the_top_level_pair(checkout):
    assert mailcow_mod.served_names(str(checkout), ["example.test", "example.org"]) == [
        "mail.example.test",
        "autodiscover.example.test",
        "autoconfig.example.test",
        "autodiscover.example.org",
        "autoconfig.example.org",
    ]
    with open(checkout / "mailcow.conf", "a") as conf:
        conf.write("ADDITIONAL_SAN=imap.*,webmail.example.test\nAUTODISCOVER_SAN=n\n")
    assert mailcow_mod.served_names(str(checkout), ["example.test"]) == [
        "mail.example.test",
        "imap.example.test",
        "webmail.example.test",
    ]
    with patch.dict(mailcow_mod.__salt__, {"certsync.name_matches": certsync_mod.name_matches}):
        missing = mailcow_mod.missing_names(["*.example.test"], str(checkout), ["example.test"])
    assert missing == []
    with patch.dict(mailcow_mod.__salt__, {"certsync.name_matches": certsync_mod.name_matches}):
        missing = mailcow_mod.missing_names(["mail.example.test"], str(checkout), ["example.test"])
    assert missing == ["imap.example.test", "webmail.example.test"]


def test_conf_set_replaces_in_place_and_keeps_the_rest(checkout):
    ret = mailcow_mod.conf_set("SKIP_LETS_ENCRYPT", "y", str(checkout))
    assert ret == {"changed": True, "old": "n", "new": "y"}
    text = (checkout / "mailcow.conf").read_text()
    assert text == CONF.replace("SKIP_LETS_ENCRYPT=n", "SKIP_LETS_ENCRYPT=y")
    assert os.stat(checkout / "mailcow.conf").st_mode & 0o777 == 0o600
    assert mailcow_mod.conf_set("SKIP_LETS_ENCRYPT", "y", str(checkout))["changed"] is False
    mailcow_mod.conf_set("ENABLE_SSL_SNI", "y", str(checkout))
    assert (
        (checkout / "mailcow.conf").read_text().endswith("# ENABLE_SSL_SNI=y\nENABLE_SSL_SNI=y\n")
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("SKIP LETS", "y", "is not a valid mailcow.conf key"),
        ("SKIP_LETS_ENCRYPT", "y\nEVIL=1", "only letters, digits"),
        ("SKIP_LETS_ENCRYPT", "$(reboot)", "only letters, digits"),
        ("SKIP_LETS_ENCRYPT", "y\n", "only letters, digits"),  # $ matched before a \n
        ("SKIP_LETS_ENCRYPT", " y", "only letters, digits"),
        ("SKIP_LETS_ENCRYPT\n", "y", "is not a valid mailcow.conf key"),
        (" SKIP_LETS_ENCRYPT", "y", "is not a valid mailcow.conf key"),
        ("SKIP_LETS_ENCRYPT=x", "y", "is not a valid mailcow.conf key"),
        (7, "y", "is not a valid mailcow.conf key"),
    ],
)
def test_conf_set_refuses_hostile_input(checkout, key, value, message):
    with pytest.raises(SaltInvocationError, match=message):
        mailcow_mod.conf_set(key, value, str(checkout))
    assert (checkout / "mailcow.conf").read_text() == CONF


def test_a_leftover_temp_file_of_a_killed_run_is_not_in_the_way(checkout):
    for name in (f"mailcow.conf.certsync-{os.getpid()}", f".mailcow.conf.certsync-{os.getpid()}"):
        (checkout / name).write_text("left by a killed run\n")
    assert mailcow_mod.conf_set("SKIP_LETS_ENCRYPT", "y", str(checkout))["changed"] is True
    assert "SKIP_LETS_ENCRYPT=y" in (checkout / "mailcow.conf").read_text()


def test_conf_missing_names_the_file(tmp_path):
    with pytest.raises(CommandExecutionError, match=r"mailcow.conf: no such file"):
        mailcow_mod.conf_get("X", str(tmp_path))


def test_conf_state_test_mode_and_booleans(checkout):
    with patch.dict(mailcow_state.__opts__, {"test": True}):
        ret = mailcow_state.conf_set(str(checkout), {"SKIP_LETS_ENCRYPT": True})
    assert ret["result"] is None
    assert ret["changes"] == {"SKIP_LETS_ENCRYPT": {"old": "n", "new": "y"}}
    assert (checkout / "mailcow.conf").read_text() == CONF
    ret = mailcow_state.conf_set(str(checkout), {"SKIP_LETS_ENCRYPT": True})
    assert ret["result"] is True
    assert "docker compose up -d" in ret["comment"]


def test_unreachable_docker_is_a_clear_error():
    with (
        patch.dict(mailcow_mod.__opts__, {"mailcow.docker_url": "unix:///nonexistent.sock"}),
        pytest.raises(CommandExecutionError, match=r"Docker daemon at unix:///nonexistent\.sock"),
    ):
        mailcow_mod.containers()


def test_reload_refuses_an_unknown_service():
    with pytest.raises(SaltInvocationError, match="no reload command known for rspamd-mailcow"):
        mailcow_mod.reload(["rspamd-mailcow"])


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        (["imaps", "smtp"], [("imaps", 993, None), ("smtp", 25, None)]),
        ("imaps:10993,sieve", [("imaps", 10993, None), ("sieve", 4190, None)]),
        ({"https": 8443}, [("https", 8443, None)]),
        ({"smtp": "192.0.2.7:2525"}, [("smtp", 2525, "192.0.2.7")]),
        ({"imaps": "[::1]:993"}, [("imaps", 993, "::1")]),
    ],
)
def test_endpoint_forms(endpoints, expected):
    assert tlsprobe_mod._endpoint_list(endpoints) == expected


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        (["gopher"], "unknown protocol 'gopher'"),
        ({"imaps": "x"}, "port of imaps must be a number"),
        ({"imaps": 70000}, "port of imaps out of range"),
        ({"smtp": "mail.example.com:25"}, "address of smtp must be an IP address"),
        ({"smtp": "1.2.3.4:x"}, "port of smtp must be a number"),
        ([], "no endpoint to probe"),
    ],
)
def test_endpoint_errors(endpoints, message):
    with pytest.raises(SaltInvocationError, match=message):
        tlsprobe_mod._endpoint_list(endpoints)


@pytest.mark.parametrize(
    ("names", "message"),
    [([], "non-empty list"), (["bad name"], "is not a DNS name"), ({"a": 1}, "non-empty list")],
)
def test_sni_name_errors(names, message):
    with pytest.raises(SaltInvocationError, match=message):
        tlsprobe_mod.probe("mail.example.test", ["smtp"], names=names)


def test_closed_port_is_a_failed_probe_not_an_exception():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ret = tlsprobe_mod.fetch("mail.example.test", "imaps", port, "127.0.0.1", timeout=2)
    assert ret["ok"] is False
    assert ret["error"].startswith("ConnectionRefusedError")


def test_a_silent_server_times_out_within_the_bound():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        ret = tlsprobe_mod.fetch("mail.example.test", "smtp", port, "127.0.0.1", timeout=0.5)
    assert ret["ok"] is False
    assert "timed out" in ret["error"]
    assert ret["elapsed_ms"] < 5000


def _server(tmp_path, pair, name):
    cert, key = write_pair(tmp_path / name, pair, "cert.pem", "key.pem")
    return TLSServer(cert, key)


def test_wait_for_probes_again_only_what_is_still_stale(tmp_path, ca, good):
    old = ca.leaf("mail.example.test")
    with _server(tmp_path, good, "new") as ready, _server(tmp_path, old, "old") as lagging:
        pauses = []

        def reloaded(seconds):  # the lagging service picks the new pair up while we wait
            pauses.append(seconds)
            lagging.context = ready.context

        endpoints = {"https": f"127.0.0.1:{ready.port}", "imaps": f"127.0.0.1:{lagging.port}"}
        with patch.object(tlsprobe_mod.time, "sleep", reloaded):
            ret = tlsprobe_mod.wait_for(
                "mail.example.test", good.fingerprint, endpoints, "127.0.0.1", timeout=30
            )
    assert ret["ok"] is True
    assert (ret["rounds"], ret["probes"], pauses) == (2, 3, [tlsprobe_mod.FIRST_PAUSE])
    assert {r["fingerprint"] for r in ret["served"].values()} == {good.fingerprint}
    assert "retcode" not in tlsprobe_mod.__context__


def test_wait_for_gives_up_within_its_rounds_and_says_what_is_stale(tmp_path, ca, good):
    old = ca.leaf("mail.example.test")
    with _server(tmp_path, old, "old") as stale:
        pauses = []
        with patch.object(tlsprobe_mod.time, "sleep", pauses.append):
            ret = tlsprobe_mod.wait_for(
                "mail.example.test",
                good.fingerprint,
                {"https": f"127.0.0.1:{stale.port}"},
                "127.0.0.1",
                timeout=10,
                interval=4,
            )
    assert ret["ok"] is False
    # pauses 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 fit in 10 s, another 4 would not
    assert ret["rounds"] == tlsprobe_mod._max_rounds(10, 4) == 7
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    assert ret["served"]["https"]["fingerprint"] == old.fingerprint
    assert tlsprobe_mod.__context__["retcode"] == 1


def test_wait_for_probes_the_hostname_everywhere_before_the_other_names(tmp_path, ca, good):
    old = ca.leaf("mail.example.test")
    with _server(tmp_path, good, "new") as ready, _server(tmp_path, old, "old") as lagging:
        rounds, pauses = [], []
        run_probes = tlsprobe_mod._run_probes

        def recorded(hostname, plan, *args):
            rounds.append(sorted(plan))
            return run_probes(hostname, plan, *args)

        def reloaded(seconds):
            pauses.append(seconds)
            lagging.context = ready.context

        endpoints = {"https": f"127.0.0.1:{ready.port}", "imaps": f"127.0.0.1:{lagging.port}"}
        with (
            patch.object(tlsprobe_mod, "_run_probes", recorded),
            patch.object(tlsprobe_mod.time, "sleep", reloaded),
        ):
            ret = tlsprobe_mod.wait_for(
                "mail.example.test",
                good.fingerprint,
                endpoints,
                "127.0.0.1",
                names=["mail.example.test", "autoconfig.example.test"],
            )
    assert ret["ok"] is True
    assert rounds == [
        ["https/mail.example.test", "imaps/mail.example.test"],
        ["imaps/mail.example.test"],  # after a pause; then the other names at once
        ["https/autoconfig.example.test", "imaps/autoconfig.example.test"],
    ]
    assert (ret["rounds"], ret["probes"], pauses) == (3, 5, [tlsprobe_mod.FIRST_PAUSE])
    assert {r["fingerprint"] for r in ret["served"].values()} == {good.fingerprint}


def test_wait_for_reports_the_other_names_not_probed_while_the_hostname_is_stale(
    tmp_path, ca, good
):
    old = ca.leaf("mail.example.test")
    with (
        _server(tmp_path, old, "old") as stale,
        patch.object(tlsprobe_mod.time, "sleep", lambda _: None),
    ):
        ret = tlsprobe_mod.wait_for(
            "mail.example.test",
            good.fingerprint,
            {"smtps": f"127.0.0.1:{stale.port}"},
            "127.0.0.1",
            timeout=1,
            names=["mail.example.test", ""],
        )
    assert ret["ok"] is False
    assert ret["rounds"] == tlsprobe_mod._max_rounds(1, 1)
    assert ret["served"]["smtps/mail.example.test"]["fingerprint"] == old.fingerprint
    assert ret["served"]["smtps/-"] == {
        "protocol": "smtps",
        "address": "127.0.0.1",
        "port": stale.port,
        "sni": "",
        "ok": False,
        "probed": False,
        "error": "not probed: mail.example.test was not served on every endpoint yet",
    }
    assert tlsprobe_mod.__context__["retcode"] == 1
