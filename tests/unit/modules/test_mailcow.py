"""Unit tests of the mailcow module: mailcow.conf, the project name, endpoints,
errors by name (loader mocked)."""

import os
from unittest.mock import patch

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from harness.loader import certsync_mod, mailcow_mod, tlsprobe_mod


@pytest.fixture
def configure_loader_modules():
    return {
        mailcow_mod: {"__context__": {}, "__opts__": {}, "__salt__": {}},
        tlsprobe_mod: {"__context__": {}},  # what tlsprobe makes of mailcow's endpoints
    }


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
    before = (checkout / "mailcow.conf").read_text()
    ret = mailcow_mod.conf_set("SKIP_LETS_ENCRYPT", "y", str(checkout))
    assert ret == {"changed": True, "old": "n", "new": "y"}
    text = (checkout / "mailcow.conf").read_text()
    assert text == before.replace("SKIP_LETS_ENCRYPT=n", "SKIP_LETS_ENCRYPT=y")
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
    before = (checkout / "mailcow.conf").read_text()
    with pytest.raises(SaltInvocationError, match=message):
        mailcow_mod.conf_set(key, value, str(checkout))
    assert (checkout / "mailcow.conf").read_text() == before


def test_a_leftover_temp_file_of_a_killed_run_is_not_in_the_way(checkout):
    for name in (f"mailcow.conf.certsync-{os.getpid()}", f".mailcow.conf.certsync-{os.getpid()}"):
        (checkout / name).write_text("left by a killed run\n")
    assert mailcow_mod.conf_set("SKIP_LETS_ENCRYPT", "y", str(checkout))["changed"] is True
    assert "SKIP_LETS_ENCRYPT=y" in (checkout / "mailcow.conf").read_text()


def test_conf_missing_names_the_file(tmp_path):
    with pytest.raises(CommandExecutionError, match=r"mailcow.conf: no such file"):
        mailcow_mod.conf_get("X", str(tmp_path))


def test_unreachable_docker_is_a_clear_error():
    with (
        patch.dict(mailcow_mod.__opts__, {"mailcow.docker_url": "unix:///nonexistent.sock"}),
        pytest.raises(CommandExecutionError, match=r"Docker daemon at unix:///nonexistent\.sock"),
    ):
        mailcow_mod.containers()


def test_reload_refuses_an_unknown_service():
    with pytest.raises(SaltInvocationError, match="no reload command known for rspamd-mailcow"):
        mailcow_mod.reload(["rspamd-mailcow"])
