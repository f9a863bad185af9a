"""The certsync module and state run for real through salt-call --local."""

import os

import pytest
import salt.version
from support import cases
from support.tlsserver import TLSServer

from harness.pki import write_npm_tree, write_pair

pytestmark = pytest.mark.functional
HOST = cases.HOST


@pytest.fixture(scope="module")
def serving(ca):
    return ca.leaf(HOST, key_kind="rsa-2048")


def test_salt_call_runs_the_salt_release_under_test(salt_call):
    assert salt_call("test.version").data == salt.version.__version__


def test_info_find_and_tlsa_from_the_cli(salt_call, tmp_path, good):
    live_dir = tmp_path / "live"
    write_npm_tree(live_dir, 5, good)
    found = salt_call("certsync_source_npm.find", HOST, str(live_dir))
    assert found.returncode == 0, found
    assert found.data["dir"] == str(live_dir / "npm-5")
    info = salt_call("certsync.info", found.data["fullchain"])
    assert info.data["fingerprint"] == good.fingerprint
    assert info.data["key_curve"] == "P-384"
    tlsa = salt_call("certsync.tlsa", found.data["fullchain"])
    assert tlsa.data == f"3 1 1 {info.data['spki_sha256']}"


def test_validate_exits_non_zero_when_invalid(salt_call, tmp_path, ca, good):
    fullchain, key = write_pair(tmp_path, good, "fullchain.pem", "privkey.pem")
    ok = salt_call("certsync.validate", fullchain, key, HOST)
    assert ok.returncode == 0
    assert ok.data["valid"] is True
    bad = salt_call("certsync.validate", fullchain, key, "www.example.test")
    assert bad.returncode == 1
    assert bad.data["problems"] == [
        f"{fullchain}: the certificate does not cover www.example.test "
        "(SANs: mail.example.test, autodiscover.example.test)"
    ]


def test_a_cli_error_names_the_file(salt_call, tmp_path):
    missing = tmp_path / "nope.pem"
    ret = salt_call("certsync.info", str(missing))
    assert ret.returncode != 0
    assert f"{missing}: no such file" in ret.stderr


def test_deployed_installs_renews_and_is_idempotent(salt_call, tmp_path, ca, good, serving):
    layout = cases.make_layout(tmp_path, ca, serving)
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    args = {"name": layout.dest, "hostname": HOST, "source": layout.source}

    code, ret = salt_call.state(test=True, **args)
    assert ret["result"] is None
    assert ret["changes"]["new"]["fingerprint"] == good.fingerprint
    code, ret = salt_call.state(**args)
    assert code == 0
    assert ret["result"] is True
    assert ret["changes"]["old"]["fingerprint"] == serving.fingerprint
    code, ret = salt_call.state(**args)
    assert (code, ret["result"], ret["changes"]) == (0, True, {})

    renewed = ca.leaf(HOST, key=good.key)  # same key, new certificate
    write_pair(layout.source, renewed, "fullchain.pem", "privkey.pem")
    code, ret = salt_call.state(**args)
    assert ret["result"] is True
    assert ret["changes"]["new"]["fingerprint"] == renewed.fingerprint
    with open(os.path.join(layout.dest, "cert.pem"), "rb") as handle:
        assert handle.read() == renewed.fullchain_pem()


def _served_pair(dest):
    with open(os.path.join(dest, "cert.pem"), "rb") as handle:
        return handle.read()


def test_the_renewal_deploy_is_the_states_deploy_without_a_state_run(
    salt_call, tmp_path, ca, good, serving
):
    """certsync_deploy.deployed (what the runner sends a consumer on a renewal) runs the
    deploy the state runs: the same plan with test=True, install, record, refusal."""
    layout = cases.make_layout(tmp_path, ca, serving)
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    args = [layout.dest, f"hostname={HOST}", f"source={layout.source}"]

    def deploy(*more):
        ret = salt_call("certsync_deploy.deployed", *args, *more)
        (state,) = ret.data.values() if isinstance(ret.data, dict) else [{}]
        return ret, state

    planned, state = deploy("test=True")
    assert (planned.returncode, state["result"]) == (0, None), planned
    assert state["changes"]["new"]["fingerprint"] == good.fingerprint
    assert _served_pair(layout.dest) == serving.fullchain_pem()
    done, state = deploy()
    assert (done.returncode, state["result"]) == (0, True), done
    assert state["changes"]["old"]["fingerprint"] == serving.fingerprint
    assert _served_pair(layout.dest) == good.fullchain_pem()
    assert "PRIVATE KEY" not in done.stdout
    record = salt_call("certsync_monitor.last_deploy", layout.dest).data
    assert (record["result"], record["installed"]) == (True, True), record

    write_pair(layout.source, ca.leaf("www.example.test"), "fullchain.pem", "privkey.pem")
    refused, state = deploy()
    assert (refused.returncode, state["result"]) == (1, False), refused
    assert "does not cover mail.example.test" in state["comment"]
    assert _served_pair(layout.dest) == good.fullchain_pem()
    assert salt_call("certsync_monitor.last_deploy", layout.dest).data["result"] is False
    unknown, state = deploy("colour=blue")
    assert (unknown.returncode, state["result"]) == (1, False), unknown
    assert state["comment"].startswith("Nothing deployed: colour: not a setting of the mailcow")


def test_deployed_from_an_sls_with_live_dir(salt_call, tmp_path, ca, good, serving):
    layout = cases.make_layout(tmp_path, ca, serving)
    live_dir = os.path.dirname(layout.source)
    os.rmdir(layout.source)
    write_npm_tree(live_dir, 3, ca.leaf("www.example.test"))
    write_npm_tree(live_dir, 5, good)
    (salt_call.sls_dir / "certsync_functional.sls").write_text(
        "mailcow-certificate:\n"
        "  certsync.deployed:\n"
        f"    - name: {layout.dest}\n"
        f"    - hostname: {HOST}\n"
        f"    - live_dir: {live_dir}\n"
        "    - min_days: 14\n"
    )
    ret = salt_call("state.apply", "certsync_functional")
    assert ret.returncode == 0, ret
    (state_ret,) = ret.data.values()
    assert state_ret["changes"]["new"]["fingerprint"] == good.fingerprint


@pytest.mark.parametrize("name", sorted(cases.CASES))
def test_bad_input_through_salt_call(name, salt_call, tmp_path, ca, good, serving):
    layout, args, expect = cases.build(name, tmp_path, ca, good, serving)
    before = cases.snapshot(layout.root)
    code, ret = salt_call.state(**args)
    assert code != 0
    assert ret["result"] is False
    assert expect in ret["comment"]
    assert cases.snapshot(layout.root) == before


def test_probes_in_threads_still_reach_the_loaders_dunders(salt_call, tmp_path, good):
    """tlsprobe probes from a thread pool; through Salt's loader (not the unit tests'
    plain modules) each probe must still see __utils__ (the SPKI hash)."""
    cert, key = write_pair(tmp_path, good, "cert.pem", "key.pem")
    with TLSServer(cert, key) as server:
        endpoints = f'{{"https": "127.0.0.1:{server.port}", "imaps": "127.0.0.1:{server.port}"}}'
        ret = salt_call("tlsprobe.probe", HOST, endpoints)
    assert ret.returncode == 0, ret
    spki = salt_call("certsync.info", cert).data["spki_sha256"]
    assert {r["spki_sha256"] for r in ret.data.values()} == {spki}, ret


def test_the_table_outputter_falls_back_to_nested_for_real(salt_call, tmp_path, good):
    """--out=certsync_table on returns it has no table for (certsync.info, a minion with no
    certsync role): Salt's nested outputter prints them. Asked for by name with the
    command line's options, Salt handed back certsync_table itself: RecursionError."""
    fullchain = write_pair(tmp_path, good, "fullchain.pem", "privkey.pem")[0]
    for args in (["certsync.info", fullchain], ["certsync_status.report"], ["test.ping"]):
        ret = salt_call("--out=certsync_table", *args)
        assert "RecursionError" not in ret.stdout + ret.stderr, ret
        assert ret.stdout.startswith("local:"), ret.stdout[:300]
    info = salt_call("--out=certsync_table", "certsync.info", fullchain)
    assert good.fingerprint in info.stdout


def test_the_table_outputter_prints_every_shape_a_public_function_returns(
    salt_call, tmp_path, ca, good, serving
):
    """One function per return shape of the certsync modules: a mapping, a list, a list
    of lists, a string, a boolean, None, a nested mapping, an error: each printed (a
    table where one exists, Salt's nested outputter otherwise), never a traceback."""
    layout = cases.make_layout(tmp_path, ca, serving)
    fullchain, key = write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    calls = [
        ["certsync.info", fullchain],  # a mapping
        ["certsync.validate", fullchain, key, HOST],  # a mapping with a list
        ["certsync.leftovers", layout.dest],  # a list
        ["certsync.sni_inventory", layout.dest],  # a mapping, maybe empty
        ["tlsprobe.endpoint_list", "smtp,imaps"],  # a list of lists
        ["certsync.tlsa", fullchain],  # a string
        ["certsync_settings.check"],  # nested, with a None role
        ["certsync_monitor.paused", layout.dest],  # None
        ["certsync.rollback_plan", layout.dest],  # an error: nothing kept to restore
        ["certsync_status.report"],  # no role on this minion: a table row with the reason
    ]
    for args in calls:
        ret = salt_call("--out=certsync_table", *args)
        printed = ret.stdout + ret.stderr
        assert "Traceback" not in printed and "RecursionError" not in printed, (args, printed)
        assert printed.strip(), args


def test_a_missing_docker_sdk_says_how_to_install_it(salt_call, tmp_path, ca, good, serving):
    """The Docker SDK hidden from the minion's Python: the states that need it say what
    to install, where Salt alone would say `'mailcow' __virtual__ returned False`."""
    shadow = tmp_path / "no-docker" / "docker"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("hidden by the test")\n')
    env = {"PYTHONPATH": str(shadow.parent)}
    layout = cases.make_layout(tmp_path, ca, serving)
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    _, ret = salt_call.state(
        env=env, name=layout.dest, hostname=HOST, source=layout.source, services="postfix-mailcow"
    )
    assert ret["result"] is False
    assert "install docker (salt-pip install docker)" in ret["comment"], ret["comment"]
    sls = salt_call.sls_dir / "certsync_no_docker.sls"
    sls.write_text(f"conf:\n  mailcow.conf_set:\n    - name: {tmp_path}\n    - settings: {{A: b}}")
    conf = salt_call("state.apply", "certsync_no_docker", env=env)
    assert conf.returncode != 0
    assert "'mailcow' __virtual__ returned False: the mailcow execution module is not " in str(
        conf.data
    ), conf
    assert "install docker (salt-pip install docker)" in str(conf.data), conf
