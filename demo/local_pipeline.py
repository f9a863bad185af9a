"""
A local run of certsync's deploy step, end to end, with real salt-call:

1. a test CA issues mail.example.test; NPM-style live/npm-5 -> archive/ links;
2. mailcow's data/assets/ssl holds a self-signed pair, as on a new install;
3. certsync.deployed (test=True, then for real, then again: idempotent);
4. NPM renews (new archive version, live links moved): deployed again;
5. NPM publishes a certificate for the wrong name: refused, nothing changes.

Everything lives in one work dir (argument 1); nothing leaves this host.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support.pki import TestCA, issue, write_npm_tree, write_pair  # noqa: E402

HOST = "mail.example.test"
START = time.monotonic()


def say(text):
    print(f"[{time.monotonic() - START:6.2f}s] {text}", flush=True)


class SaltCall:
    """salt-call --local with file_roots at the repo's salt/ tree."""

    def __init__(self, work):
        self.config_dir = work / "salt-config"
        self.config_dir.mkdir(parents=True)
        (self.config_dir / "minion").write_text(
            json.dumps(
                {
                    "id": "demo-mailcow",
                    "root_dir": str(work / "salt-root"),
                    "file_client": "local",
                    "file_roots": {"base": [str(REPO / "salt")]},
                    "log_file": str(work / "salt-call.log"),
                }
            )
        )

    def __call__(self, *args):
        cmd = [
            str(pathlib.Path(sys.executable).parent / "salt-call"),
            "--local",
            "-c",
            str(self.config_dir),
            "--out=json",
            "--retcode-passthrough",
            *args,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        try:
            return proc.returncode, json.loads(proc.stdout)["local"]
        except (ValueError, KeyError):
            sys.exit(f"salt-call {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def show(state):
    print(f"         result: {state['result']}")
    for line in state["comment"].splitlines():
        print(f"         comment: {line}")
    for key in ("old", "new"):
        if key in state["changes"]:
            c = state["changes"][key]
            print(
                f"         {key}: {c['fingerprint'] and c['fingerprint'][:16]}... "
                f"not_after={c['not_after']} sans={c['sans']}"
            )


def deploy(salt_call, dest, live_dir, test=False):
    args = [
        "state.single",
        "certsync.deployed",
        f"name={dest}",
        f"hostname={HOST}",
        f"live_dir={live_dir}",
    ]
    if test:
        args.append("test=True")
    code, ret = salt_call(*args)
    (state,) = ret.values()
    show(state)
    return code, state


def main(work):
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    salt_call = SaltCall(work)
    ca = TestCA("demo")
    live_dir = work / "npm" / "letsencrypt" / "live"
    dest = work / "opt" / "mailcow-dockerized" / "data" / "assets" / "ssl"

    say("NPM holds a certificate for another site (npm-2) and one for the mail host (npm-5)")
    write_npm_tree(live_dir, 2, ca.leaf("www.example.test"))
    first = ca.leaf(HOST, sans=[HOST, "autodiscover.example.test"], key_kind="ec-p384")
    write_npm_tree(live_dir, 5, first)
    say("mailcow starts with its own self-signed pair")
    write_pair(dest, issue(HOST, sans=[HOST], key_kind="rsa-2048"))

    say("sync certsync's modules from file_roots")
    code, synced = salt_call("saltutil.sync_all")
    print(f"         modules: {synced['modules']}, states: {synced['states']}")
    code, found = salt_call("certsync.find_source", HOST, str(live_dir))
    say(f"certsync.find_source {HOST}: {found['name']} ({found['fingerprint'][:16]}...)")

    say("certsync.deployed test=True: the plan")
    deploy(salt_call, dest, live_dir, test=True)
    say("certsync.deployed: install")
    deploy(salt_call, dest, live_dir)
    say("certsync.deployed again: nothing to do")
    deploy(salt_call, dest, live_dir)

    say("NPM renews npm-5 (same key, new certificate: archive/npm-5/*2.pem)")
    renewed = ca.leaf(HOST, sans=[HOST, "autodiscover.example.test"], key=first.key)
    write_npm_tree(live_dir, 5, renewed, version=2)
    deploy(salt_call, dest, live_dir)
    code, info = salt_call("certsync.info", str(dest / "cert.pem"))
    code, tlsa = salt_call("certsync.tlsa", str(dest / "cert.pem"))
    say(
        f"deployed: {info['fingerprint'][:16]}... {info['key_type']} {info['key_curve']}, "
        f"{info['days_left']} days left; _25._tcp.{HOST} TLSA {tlsa}"
    )

    say("NPM's npm-5 now holds a certificate for the wrong name: certsync refuses")
    write_npm_tree(live_dir, 5, ca.leaf("webmail.example.test"), version=3)
    before = (dest / "cert.pem").read_bytes()
    code, state = deploy(salt_call, dest, live_dir)
    unchanged = (dest / "cert.pem").read_bytes() == before
    say(f"salt-call exit code {code}; the serving pair unchanged: {unchanged}")
    if state["result"] is not False or not unchanged:
        sys.exit("demo: the bad certificate was not refused")
    say(f"done; work dir {work}, salt log {work / 'salt-call.log'}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else REPO / ".cache" / "demo").resolve())
