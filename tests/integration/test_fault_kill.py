"""
The fault campaign, part one: a deploy killed (SIGKILL) at 50 points spread through
install and reload. A real master and a real consumer minion run
``certsync_deploy.deployed`` (what the reactor sends on a renewal) against the
mailcow look-alike; a hook loaded into the minion (``support/fault_hook``) kills the
job process just before its N-th file operation in the destination, or some time
into the deploy (the reload and the wire check). After every kill the pair on disk
is a matching pair, the old or the new one, never a mix, in the top-level
directory and in the per-name one; every endpoint serves one of the two; the next
run converges.
"""

import json
import os
import pathlib
import re

import pytest
from saltfactories.utils import random_string

from harness.fleet import master_config, wait_until
from harness.mailcow_stack import HOST, NAMES
from harness.pki import write_pair

pytestmark = pytest.mark.one_release

HOOK = pathlib.Path(__file__).resolve().parents[1] / "support" / "fault_hook"
POINTS = 50
JOB_TIMEOUT = 90
#: Seconds an endpoint may answer nothing after a kill: the reload or the container
#: restart the killed job began finishing (a restart takes a few seconds).
ANSWER_TIMEOUT = 60


class Campaign:
    def __init__(self, master, minion, stack, root, pairs):
        self.master, self.minion, self.stack, self.root = master, minion, stack, root
        self.control = root / "control.json"
        self.log = root / "ops.log"
        self.pairs = pairs  # {"old": Issued, "new": Issued}
        self.sources = {}
        for label, issued in pairs.items():
            self.sources[label] = write_pair(root / label, issued, "fullchain.pem", "privkey.pem")[
                0
            ].rsplit("/", 1)[0]

    def arm(self, **kill):
        self.log.write_text("")
        self.control.write_text(
            json.dumps({"dest": str(self.stack.ssl_dir), "log": str(self.log), **kill})
        )

    def _args(self, label):
        args = self.stack.state_args(source=self.sources[label])
        name = args.pop("name")
        return ["certsync_deploy.deployed", name, *(f"{k}={v}" for k, v in args.items())]

    def deploy(self, label):
        """A whole deploy of ``label``'s pair, waited for: its state return."""
        self.arm()
        ret = self.master.salt_cli(timeout=JOB_TIMEOUT).run(
            *self._args(label), minion_tgt=self.minion.id
        )
        assert isinstance(ret.data, dict), ret
        (state,) = ret.data.values()
        return state

    def killed(self, label, **kill):
        """A deploy of ``label``'s pair killed as ``kill`` says; returns once the job
        process is gone, with the operations it logged."""
        self.arm(**kill)
        sent = self.master.salt_cli(timeout=30).run(
            "--async", *self._args(label), minion_tgt=self.minion.id
        )
        assert sent.returncode == 0, sent

        def dead_pid():
            lines = [line.split() for line in self.log.read_text().splitlines()]
            pids = {line[0] for line in lines}
            return next((pid for pid in pids if not os.path.exists(f"/proc/{pid}")), None)

        wait_until(dead_pid, 60, interval=0.05, what=f"the deploy job to be killed ({kill})")
        return [line.split() for line in self.log.read_text().splitlines()]

    def pair_on_disk(self, directory, suffix=""):
        """Which pair ``directory`` holds (``cert.pem<suffix>``, ``key.pem<suffix>``):
        'old', 'new', or what is wrong."""
        cert = (directory / f"cert.pem{suffix}").read_bytes()
        key = (directory / f"key.pem{suffix}").read_bytes()
        for label, issued in self.pairs.items():
            if cert == issued.fullchain_pem() and key == issued.key_pem():
                assert (directory / f"key.pem{suffix}").stat().st_mode & 0o777 == 0o600
                return label
        certs = {lb for lb, i in self.pairs.items() if cert == i.fullchain_pem()}
        keys = {lb for lb, i in self.pairs.items() if key == i.key_pem()}
        return f"mixed: cert {certs or 'unknown'}, key {keys or 'unknown'}"


def _between_the_two_renames(ops, directory):
    """Whether the kill came between the rename of cert.pem's new file in ``directory``
    and the rename of key.pem's: after cert.pem's rename only the read of the key.pem
    it replaces (kept to put cert.pem back should key.pem's rename fail) and, last,
    key.pem's rename itself (a kill before the N-th operation runs it) are logged."""

    def rename_of(op, name):
        _, _, call, path, _ = op
        base = os.path.basename(path)
        return (
            call == "replace"
            and base.startswith(f".{name}.certsync-")
            and not base.startswith(f".{name}.certsync-prev")
            and os.path.dirname(path) == str(directory)
        )

    def reads_key(op):  # the bytes key.pem's rename replaces, kept to put cert.pem back
        _, _, call, path, _ = op
        return call == "open" and path == os.path.join(str(directory), "key.pem")

    renamed = [i for i, op in enumerate(ops) if rename_of(op, "cert.pem")]
    if not renamed:
        return False
    after = ops[renamed[-1] + 1 :]
    if after and rename_of(after[-1], "key.pem"):
        after = after[:-1]
    return all(reads_key(op) for op in after)


def _answering(stack):
    """What each endpoint serves, once every one answers; None while one does not."""
    served = stack.served()
    return served if None not in served.values() else None


@pytest.fixture
def campaign(salt_factories, tmp_path, make_stack, ca):
    old = ca.leaf(HOST, sans=NAMES, key_kind="ec-p256")
    new = ca.leaf(HOST, sans=NAMES, key_kind="ec-p384")
    stack = make_stack(old)
    # the hostname's own per-name dir, listing names the certificates cover
    own = stack.ssl_dir / HOST
    write_pair(own, old)
    (own / "domains").write_text(" ".join(NAMES) + "\n")
    master = salt_factories.salt_master_daemon(
        random_string("master-"), overrides=master_config(tmp_path / "pillar")
    )
    minion = master.salt_minion_daemon(random_string("mailcow-"))
    minion.environ = {
        **minion.environ,
        "PYTHONPATH": str(HOOK),
        "CERTSYNC_FAULT_CONTROL": str(tmp_path / "control.json"),
    }
    with master.started(), minion.started():
        assert (
            master.salt_cli(timeout=120).run("saltutil.sync_all", minion_tgt=minion.id).returncode
            == 0
        )
        run = Campaign(master, minion, stack, tmp_path, {"old": old, "new": new})
        state = run.deploy("old")  # restart once so that the per-name map is in step
        assert state["result"] is True, state["comment"]
        yield run


def test_a_deploy_killed_at_50_points_leaves_a_whole_pair_and_converges(campaign):
    # a whole deploy each way, counted: the file operations in the destination, and
    # when (after the first) the last rename of the install and the last operation come
    counts, reload_spans = {}, []
    for label in ("new", "old"):
        campaign.arm(kill_at_op=0)
        state = campaign.deploy(label)
        assert state["result"] is True, state["comment"]
        ops = [line.split() for line in campaign.log.read_text().splitlines()]
        counts[label] = len(ops)
        times = [float(op[4]) - float(ops[0][4]) for op in ops]
        installed = max(i for i, op in enumerate(ops) if op[2] == "replace")
        reload_spans.append((times[installed], times[-1]))
    assert min(counts.values()) >= 16, counts  # two directories, two files each, and more
    # every operation, then the rest of the 50 points spread over the reload and the check
    at_ops = list(range(1, min(counts.values()) + 1))
    start = max(span[0] for span in reload_spans)
    end = min(span[1] for span in reload_spans)
    extra = POINTS - len(at_ops)
    after = [start + (end - start) * (i + 0.5) / extra for i in range(extra)]
    points = [{"kill_at_op": n} for n in at_ops] + [{"kill_after": s} for s in after]
    assert len(points) == POINTS, points

    rows, window, target = [], [], "new"  # the deploy before the campaign left "old" serving
    for point in points:
        ops = campaign.killed(target, **point)
        top = campaign.pair_on_disk(campaign.stack.ssl_dir)
        own = campaign.pair_on_disk(campaign.stack.ssl_dir / HOST)
        fingerprints = {label: issued.fingerprint for label, issued in campaign.pairs.items()}
        # a reload (or a container restart) the killed job began runs on in the container:
        # an endpoint may answer nothing for a moment; what it serves once it answers counts
        served = wait_until(
            lambda: _answering(campaign.stack),
            ANSWER_TIMEOUT,
            interval=0.25,
            what=f"every endpoint to answer after the kill ({point})",
        )
        odd = {ep: fp for ep, fp in served.items() if fp not in fingerprints.values()}
        label = {fp: lb for lb, fp in fingerprints.items()}
        rows.append(
            (point, len(ops), top, own, sorted({label.get(fp, str(fp)) for fp in served.values()}))
        )
        for directory, held in (
            (campaign.stack.ssl_dir, top),
            (campaign.stack.ssl_dir / HOST, own),
        ):
            if held not in ("old", "new"):
                # the one window two file names leave: between the rename of cert.pem and
                # the rename of key.pem, one after the other with nothing between them
                assert _between_the_two_renames(ops, directory), (rows[-1], ops[-3:])
                window.append(point)
                assert campaign.pair_on_disk(directory, ".certsync-prev") in ("old", "new")
        assert odd == {}, (point, served)
        state = campaign.deploy(target)
        assert state["result"] is True, (point, state["comment"])
        assert campaign.pair_on_disk(campaign.stack.ssl_dir) == target
        assert campaign.pair_on_disk(campaign.stack.ssl_dir / HOST) == target
        assert set(campaign.stack.served().values()) == {fingerprints[target]}, point
        for directory in (campaign.stack.ssl_dir, campaign.stack.ssl_dir / HOST):
            temps = [p.name for p in directory.iterdir() if re.match(r"\.(cert|key)\.pem", p.name)]
            assert temps == [], (point, temps)  # a killed run's temp files are gone
        target = "old" if target == "new" else "new"
    print(f"{len(rows)} kill points; operations per deploy {counts}; reload {reload_spans}")
    print(f"killed between the renames of cert.pem and key.pem (then repaired): {window}")
    for row in rows:
        print("kill", row)
