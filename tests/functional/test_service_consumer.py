"""The ``service`` consumer kind through salt-call --local, against Debian's real
HAProxy on loopback: the pair goes into certsync's directory, the files a plain host's
services read are written from it in their layouts, HAProxy takes the combined file
through its runtime API (no reload, the same process), the wire check sees it; a file
that drifts is written again; a roll back brings the previous pair back the same way;
a bad setting changes nothing."""

import json
import os
import sys

import pytest
from support import cases

from harness.haproxy import HOST, HAProxy
from harness.pki import write_pair

pytestmark = pytest.mark.functional


@pytest.fixture
def host(tmp_path, ca):
    """HAProxy serving the old pair, certsync's directory, the services' directory."""
    (tmp_path / "haproxy").mkdir()
    (tmp_path / "pair").mkdir()
    (tmp_path / "tls").mkdir()
    server = HAProxy(tmp_path / "haproxy", ca.leaf(HOST))
    yield tmp_path, server
    server.stop()


def _files(root, crt):
    return [
        {"path": crt, "contents": "combined"},
        {"path": str(root / "tls" / "fullchain.pem"), "contents": "fullchain"},
        {"path": str(root / "tls" / "cert.pem"), "contents": "cert"},
        {"path": str(root / "tls" / "chain.pem"), "contents": "chain", "mode": "0640"},
        {"path": str(root / "tls" / "privkey.pem"), "contents": "key", "group": os.getgid()},
    ]


def _deploy(salt_call, root, server, source, fun="certsync.deployed", **extra):
    arguments = {
        "name": str(root / "pair"),
        "hostname": HOST,
        "consumer": "service",
        "files": json.dumps(_files(root, server.crt)),
        "haproxy_socket": server.socket,
        "reload_commands": json.dumps({"noted": [sys.executable, "-c", NOTE, str(root)]}),
        "units": json.dumps(["noted"]),
        "endpoints": json.dumps({"https": server.port}),
        "probe_address": "127.0.0.1",
        "verify_timeout": 10,
        **({"source": source} if source else {}),
        **extra,
    }
    return salt_call.state(fun, **arguments)


#: The "unit" whose reload is an argv: it notes each reload in a file (no shell).
NOTE = "import sys, pathlib; (pathlib.Path(sys.argv[1]) / 'reloads').open('a').write('x')"


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def test_a_service_host_gets_its_files_and_haproxy_the_pair_with_no_reload(
    salt_call, host, ca, tmp_path
):
    root, server = host
    new = ca.leaf(HOST)
    source = write_pair(tmp_path / "src", new, "fullchain.pem", "privkey.pem")[0]
    pid = server.proc.pid
    code, ret = _deploy(salt_call, root, server, os.path.dirname(source))
    assert code == 0 and ret["result"] is True, ret["comment"]
    assert "reloaded haproxy runtime API, noted" in ret["comment"]
    assert server.served_sha256() == new.fingerprint
    assert server.proc.pid == pid and server.proc.poll() is None  # no reload, no restart
    assert _read(server.crt) == new.fullchain_pem() + new.key_pem()
    assert _read(root / "tls" / "fullchain.pem") == new.fullchain_pem()
    assert _read(root / "tls" / "privkey.pem") == new.key_pem()
    assert _read(root / "tls" / "cert.pem") + _read(root / "tls" / "chain.pem") == (
        new.fullchain_pem()
    )
    modes = {
        name: os.stat(root / "tls" / name).st_mode & 0o777 for name in os.listdir(root / "tls")
    }
    assert modes == {"fullchain.pem": 0o644, "cert.pem": 0o644, "chain.pem": 0o640,
                     "privkey.pem": 0o600}  # fmt: skip
    assert os.stat(server.crt).st_mode & 0o777 == 0o600
    assert _read(root / "reloads") == b"x"
    assert "PRIVATE KEY" not in json.dumps(ret)

    os.chmod(root / "tls" / "privkey.pem", 0o644)  # a hand's chmod: written again
    code, ret = _deploy(salt_call, root, server, os.path.dirname(source))
    assert code == 0 and ret["result"] is True, ret["comment"]
    assert ret["changes"] == {"rewritten": [f"{root}/tls/privkey.pem: mode 0644, not 0600"]}
    assert os.stat(root / "tls" / "privkey.pem").st_mode & 0o777 == 0o600
    code, ret = _deploy(salt_call, root, server, os.path.dirname(source))
    assert code == 0 and ret["changes"] == {}, ret["comment"]
    assert "served on every endpoint" in ret["comment"]


def test_a_roll_back_serves_the_previous_pair_through_the_api(salt_call, host, ca, tmp_path):
    root, server = host
    first, second = ca.leaf(HOST), ca.leaf(HOST)
    for issued in (first, second):
        source = write_pair(tmp_path / "src", issued, "fullchain.pem", "privkey.pem")[0]
        code, ret = _deploy(salt_call, root, server, os.path.dirname(source))
        assert code == 0 and ret["result"] is True, ret["comment"]
    assert server.served_sha256() == second.fingerprint
    code, ret = _deploy(salt_call, root, server, None, fun="certsync.rolled_back")
    assert code == 0 and ret["result"] is True, ret["comment"]
    assert server.served_sha256() == first.fingerprint
    assert _read(root / "tls" / "fullchain.pem") == first.fullchain_pem()
    code, ret = salt_call.state("certsync.resumed", name=str(root / "pair"))
    assert code == 0 and ret["changes"] == {"paused": {"old": True, "new": False}}


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ([{"path": "relative.pem", "contents": "key"}], "the path must be absolute"),
        ([{"path": "/nonexistent-dir/x.pem", "contents": "key"}],
         "its directory /nonexistent-dir does not exist"),
        ([{"path": "{tls}/k.pem", "contents": "key", "mode": "0644"}],
         "mode 0644 lets others read the private key"),
        ([{"path": "{tls}/k.pem", "contents": "keys"}], "contents 'keys' is not one of"),
        ([{"path": "{tls}/k.pem", "contents": "key", "owner": "no-such-user-x"}],
         "no user 'no-such-user-x' on this host"),
        ([{"path": "{tls}/k.pem", "contents": "key"}, {"path": "{tls}/k.pem", "contents": "cert"}],
         "is listed more than once"),
    ],
)  # fmt: skip
def test_a_bad_file_setting_is_named_and_nothing_changes(salt_call, host, ca, tmp_path, files, why):
    root, server = host
    served = server.served_sha256()
    source = write_pair(tmp_path / "src", ca.leaf(HOST), "fullchain.pem", "privkey.pem")[0]
    files = json.loads(json.dumps(files).replace("{tls}", str(root / "tls")))
    before = cases.snapshot(root)
    code, ret = _deploy(salt_call, root, server, os.path.dirname(source), files=json.dumps(files))
    assert code != 0 and ret["result"] is False
    assert ret["comment"].startswith("Nothing deployed: files") and why in ret["comment"]
    assert cases.snapshot(root) == before
    assert server.served_sha256() == served
