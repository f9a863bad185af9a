"""
The fault campaign, part two: the consumer's world misbehaves during a deploy
(``salt-call`` runs ``certsync.deployed``, the look-alike serves). A full
destination, postfix's container stopped during the wire check, the consumer's
clock a day off, a second deploy arriving during one. Every time: the pair on
disk is a whole pair, what is served matches one of the two certificates, the
user reads what happened, and the next run converges.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from harness.mailcow_stack import HOST, NAMES
from harness.pki import DAY, NOW, write_pair

pytestmark = pytest.mark.one_release
FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


def _pair(directory):
    return (directory / "cert.pem").read_bytes(), (directory / "key.pem").read_bytes()


def _held(directory, *issued):
    """Which of ``issued`` ``directory`` holds as a whole pair (None: none, or mixed)."""
    pair = _pair(directory)
    return next((i for i in issued if pair == (i.fullchain_pem(), i.key_pem())), None)


@contextlib.contextmanager
def _tmpfs(path, size):
    path.mkdir()
    mount = ["/usr/bin/mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    subprocess.run(mount, check=True)
    try:
        yield path
    finally:
        subprocess.run(["/usr/bin/umount", "-l", str(path)], check=False)


def test_a_full_destination_changes_nothing_and_says_so(salt_call, tmp_path, ca, good):
    serving = ca.leaf(HOST)
    source = write_pair(tmp_path / "src", good, "fullchain.pem", "privkey.pem")[0]
    with _tmpfs(tmp_path / "ssl", "64k") as dest:
        write_pair(dest, serving)
        free = os.statvfs(dest)
        filler = dest / "filler"
        filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 2048))
        code, ret = salt_call.state(
            name=str(dest), hostname=HOST, source=os.path.dirname(source), min_days=1
        )
        assert (code != 0, ret["result"], ret["changes"]) == (True, False, {}), ret
        assert "No space left on device" in ret["comment"], ret["comment"]
        assert _held(dest, serving) is serving
        assert [p.name for p in dest.iterdir() if re.match(r"\.(cert|key)\.pem", p.name)] == []

        filler.unlink()
        code, ret = salt_call.state(
            name=str(dest), hostname=HOST, source=os.path.dirname(source), min_days=1
        )
        assert (code, ret["result"]) == (0, True), ret["comment"]
        assert _held(dest, good) is good


def test_postfix_stopped_during_the_wire_check(salt_call, make_stack, ca, tmp_path):
    old = ca.leaf(HOST, sans=NAMES)
    new = ca.leaf(HOST, sans=NAMES, key_kind="ec-p384")
    stack = make_stack(old)
    source = os.path.dirname(write_pair(tmp_path / "src", new, "fullchain.pem", "privkey.pem")[0])
    postfix = stack.service_container("postfix-mailcow")
    installed = threading.Event()

    def stop_postfix_once_installed():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _pair(stack.ssl_dir)[0] == new.fullchain_pem():
                postfix.stop(timeout=0)
                installed.set()
                return
            time.sleep(0.005)

    saboteur = threading.Thread(target=stop_postfix_once_installed, daemon=True)
    saboteur.start()
    code, ret = salt_call.state(**stack.state_args(source=source))
    saboteur.join(60)
    assert installed.is_set(), "the install was never seen"
    print(f"postfix stopped during the check: result {ret['result']}: {ret['comment']}")
    held = _held(stack.ssl_dir, old, new)
    assert held is not None, "a mixed pair on disk"
    postfix.reload()
    if ret["result"]:  # certsync's restart brought postfix back with the new pair
        assert held is new and postfix.status == "running"
        assert set(stack.served().values()) == {new.fingerprint}
    else:  # rolled back: the old pair, named failure
        assert held is old and ret["changes"] == {}
    if postfix.status != "running":
        postfix.start()
    code, ret = salt_call.state(**stack.state_args(source=source))
    assert (code, ret["result"]) == (0, True), ret["comment"]
    assert set(stack.served().values()) == {new.fingerprint}


@pytest.mark.parametrize(
    ("skew", "deployed"), [("+1d", True), ("-1d", False)], ids=["a-day-ahead", "a-day-behind"]
)
def test_the_consumers_clock_a_day_off(salt_call, make_stack, ca, tmp_path, skew, deployed):
    """The source's certificate was issued an hour ago (Let's Encrypt backdates one
    hour): a consumer a day behind sees it as not yet valid and keeps the old one."""
    old = ca.leaf(HOST, sans=NAMES)
    new = ca.leaf(HOST, sans=NAMES, key_kind="ec-p384", not_before=NOW - DAY / 24)
    stack = make_stack(old)
    source = os.path.dirname(write_pair(tmp_path / "src", new, "fullchain.pem", "privkey.pem")[0])
    env = {**os.environ, "LD_PRELOAD": FAKETIME, "FAKETIME": skew}
    code, ret = salt_call.state(env=env, **stack.state_args(source=source))
    print(f"clock {skew}: {ret['comment'].splitlines()[0]}")
    if deployed:
        assert (code, ret["result"]) == (0, True), ret["comment"]
        assert _held(stack.ssl_dir, new) is new
        assert set(stack.served().values()) == {new.fingerprint}
    else:
        assert (ret["result"], ret["changes"]) == (False, {}), ret
        assert "is not valid before" in ret["comment"]
        assert _held(stack.ssl_dir, old) is old
        assert set(stack.served().values()) == {old.fingerprint}
        code, ret = salt_call.state(**stack.state_args(source=source))  # the clock mended
        assert (code, ret["result"]) == (0, True), ret["comment"]


def _own_salt_call(salt_call, *args):
    """``salt-call --local`` as a process of its own (one saltfactories CLI object runs
    one process at a time: a second run from it ends the first)."""
    command = [
        os.path.join(os.path.dirname(sys.executable), "salt-call"),
        f"--config-dir={os.path.dirname(salt_call.config_file)}",
        "--local",
        "--out=json",
        "--log-level=quiet",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    return json.loads(done.stdout)


def test_a_second_deploy_during_one_waits_its_turn(salt_call, make_stack, ca, tmp_path):
    old = ca.leaf(HOST, sans=NAMES)
    new = ca.leaf(HOST, sans=NAMES, key_kind="ec-p384")
    stack = make_stack(old)
    sources = {
        label: os.path.dirname(write_pair(tmp_path / label, i, "fullchain.pem", "privkey.pem")[0])
        for label, i in (("old", old), ("new", new))
    }
    results = {}

    def scheduled_run():  # the consumer's scheduled state run, deploying "new"
        results["state"] = salt_call.state(**stack.state_args(source=sources["new"]))[1]

    first = threading.Thread(target=scheduled_run)
    first.start()
    time.sleep(0.3)
    # the reactor's job arriving meanwhile, deploying "old": no state run, so Salt's own
    # "state.single is running" guard does not hold it: certsync's deploy lock does
    args = stack.state_args(source=sources["old"])
    job = _own_salt_call(
        salt_call,
        "certsync_deploy.deployed",
        args.pop("name"),
        *(f"{k}={v}" for k, v in args.items()),
    )
    first.join(120)
    (results["job"],) = job["local"].values()
    for label, ret in results.items():
        assert ret["result"] is True, (label, ret["comment"])
    held = _held(stack.ssl_dir, old, new)
    assert held is not None
    assert set(stack.served().values()) == {held.fingerprint}


def _restart_dockerd(docker_engine):
    """Stop the running dockerd and start it again with the same command line."""
    (pid,) = [p for p in os.listdir("/proc") if p.isdigit() and _comm(p) == "dockerd"][:1]
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        argv = [part.decode() for part in handle.read().split(b"\0") if part]
    os.kill(int(pid), signal.SIGTERM)
    deadline = time.monotonic() + 60
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    for _ in range(600):  # bounded: 60 s
        with contextlib.suppress(Exception):
            if docker_engine.ping():
                return
        time.sleep(0.1)
    raise AssertionError("dockerd did not come back within 60 s")


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None


def test_the_docker_daemon_restarted_during_the_reload(
    salt_call, make_stack, ca, tmp_path, docker_engine
):
    if not docker_engine.info().get("LiveRestoreEnabled"):
        pytest.skip("dockerd runs without --live-restore: a restart would stop every container")
    old = ca.leaf(HOST, sans=NAMES)
    new = ca.leaf(HOST, sans=NAMES, key_kind="ec-p384")
    stack = make_stack(old)
    source = os.path.dirname(write_pair(tmp_path / "src", new, "fullchain.pem", "privkey.pem")[0])
    restarted = threading.Event()

    def restart_once_installed():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _pair(stack.ssl_dir)[0] == new.fullchain_pem():
                _restart_dockerd(docker_engine)
                restarted.set()
                return
            time.sleep(0.005)

    saboteur = threading.Thread(target=restart_once_installed, daemon=True)
    saboteur.start()
    code, ret = salt_call.state(**stack.state_args(source=source))
    saboteur.join(90)
    assert restarted.is_set(), "the install was never seen"
    print(f"dockerd restarted during the reload: result {ret['result']}: {ret['comment']}")
    held = _held(stack.ssl_dir, old, new)
    assert held is not None, "a mixed pair on disk"
    served = set(stack.served().values())
    assert served <= {old.fingerprint, new.fingerprint}, served
    if ret["result"] is False:
        assert ret["changes"] == {} and held is old
    code, ret = salt_call.state(**stack.state_args(source=source))
    assert (code, ret["result"]) == (0, True), ret["comment"]
    assert set(stack.served().values()) == {new.fingerprint}
