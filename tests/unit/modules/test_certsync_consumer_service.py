"""The service consumer kind (certsync_consumer_service, loader mocked): which units a
stale endpoint restarts, settings refused by name, and a file that cannot be written
after the install: the previous pair back in certsync's directory and in every file.
Its files, units and HAProxy for real: tests/functional/test_service_consumer.py and
tests/integration/test_service_host.py."""

import pytest
from salt.exceptions import SaltInvocationError

from harness.loader import certsync_mod, deploy_mod, service_consumer_mod
from harness.pki import write_pair

HOST = "mail.example.test"


@pytest.fixture
def configure_loader_modules(loader_modules):
    return loader_modules


def _prepared(tmp_path, **given):
    return service_consumer_mod.prepare(str(tmp_path / "pair"), HOST, None, given)


def test_a_stale_endpoint_restarts_the_units_that_serve_it(tmp_path):
    commands = {"postfix": ["postfix", "reload"], "nginx": ["nginx", "-s", "reload"]}
    units = {"postfix": ["smtp", "submission"], "nginx": ["https"]}
    mapped = _prepared(tmp_path, units=units, reload_commands=commands)
    assert mapped["units"] == ["postfix", "nginx"]
    assert service_consumer_mod.stale(["https"], mapped) == ["nginx"]
    assert service_consumer_mod.stale(["imaps"], mapped) == []
    listed = _prepared(tmp_path, units=["postfix", "nginx"], reload_commands=commands)
    assert service_consumer_mod.stale(["https"], listed) == ["postfix", "nginx"]
    assert service_consumer_mod.stale([], listed) == []


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ({"units": ["nginx"], "reload_commands": {"postfix": ["postfix", "reload"]}},
         "reload_commands: postfix is not in units (nginx)"),
        ({"units": ["nginx"], "reload_commands": {"nginx": "nginx -s reload"}},
         "reload_commands:nginx must be an argv list"),
        ({"haproxy_socket": "/run/haproxy/admin.sock"},
         "haproxy_socket is set but no file has contents: combined"),
        ({"haproxy_socket": "admin.sock", "files": []}, "haproxy_socket must be an absolute path"),
        ({"units": {"nginx": 443}}, "units:nginx must be a list of endpoint types"),
        ({"files": {"path": "/x"}}, "files must be a list of mappings"),
        ({"units": ["--force", "nginx"]}, "units: '--force' is not a systemd unit name"),
        ({"units": {"../x": ["https"]}}, "units: '../x' is not a systemd unit name"),
        ({"files": [{"path": "/tmp/x.pem", "contents": "key", "colour": 1}]},
         "files[0]: colour is no file setting"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_named(tmp_path, given, why):
    with pytest.raises(SaltInvocationError) as caught:
        _prepared(tmp_path, **given)
    assert why in str(caught.value)


@pytest.mark.parametrize(
    "argv", [["hook", "--token=s3cr3t-v4lue", ""], "hook --token=s3cr3t-v4lue"]
)
def test_a_bad_reload_command_is_named_without_its_arguments(tmp_path, argv):
    """An argument may hold a credential: the error names the key, not the value (in
    the state's comment, the job's return and the log)."""
    with pytest.raises(SaltInvocationError) as caught:
        _prepared(tmp_path, units=["nginx"], reload_commands={"nginx": argv})
    assert "reload_commands:nginx must be an argv list" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_a_file_that_cannot_be_written_brings_the_previous_pair_back_everywhere(tmp_path, ca):
    pair, tls = tmp_path / "pair", tmp_path / "tls"
    pair.mkdir()
    tls.mkdir()
    old, new = ca.leaf(HOST), ca.leaf(HOST)
    files = [
        {"path": str(tls / "fullchain.pem"), "contents": "fullchain"},
        {"path": str(tls / "blocked.pem"), "contents": "key"},
    ]
    write_pair(tmp_path / "old", old, "fullchain.pem", "privkey.pem")
    arguments = {"consumer": "service", "files": files}
    planned = deploy_mod.deploy(
        str(pair), HOST, source=str(tmp_path / "old"), test=True, **arguments
    )
    assert planned["result"] is None and not (tls / "fullchain.pem").exists()
    assert f"Would write {tls}/fullchain.pem, {tls}/blocked.pem" in planned["comment"]
    ret = deploy_mod.deploy(str(pair), HOST, source=str(tmp_path / "old"), **arguments)
    assert ret["result"] is True, ret["comment"]
    assert f"wrote {tls}/fullchain.pem, {tls}/blocked.pem" in ret["comment"]
    (tls / "blocked.pem").unlink()
    (tls / "blocked.pem").mkdir()  # a directory where the key file goes: the write fails
    write_pair(tmp_path / "new", new, "fullchain.pem", "privkey.pem")
    ret = deploy_mod.deploy(str(pair), HOST, source=str(tmp_path / "new"), **arguments)
    assert ret["result"] is False and ret["changes"] == {}
    assert f"{tls}/blocked.pem: cannot write" in ret["comment"]
    assert ret["comment"].endswith(f"serving it again failed: {tls}/blocked.pem: cannot write: "
                                   "Is a directory")  # fmt: skip
    assert certsync_mod.deployed_info(str(pair))["fingerprint"] == old.fingerprint
    assert (tls / "fullchain.pem").read_bytes() == old.fullchain_pem()
