"""
The routes the reactor follows, read from the pillar the master compiles
(Salt's own pillar compiler on a master config rooted here; no daemons). The
LocalClient that would run the jobs is a recorder.
"""

import json

import pytest
import salt.config

from harness.fleet import SALT_TREE
from harness.loader import load_loader_module

pytestmark = pytest.mark.functional
runner = load_loader_module("runners", "certsync")


class Pillar:
    """A pillar tree: top.sls gives every minion the certsync pillar."""

    def __init__(self, root):
        self.root = root
        root.mkdir()

    def write(self, source, consumers, minions=None, **source_settings):
        top = {"base": {m: ["certsync"] for m in minions or [source, *consumers]}}
        pillar = {
            "certsync": {
                "hostname": "mail.example.test",
                "source": {"minion": source, **source_settings},
                "consumers": consumers,
            }
        }
        (self.root / "top.sls").write_text(json.dumps(top))
        (self.root / "certsync.sls").write_text(json.dumps(pillar))


JID = "20261126000000000000"


class Jobs:
    """What the runner asks the master to run."""

    def __init__(self):
        self.sent = []

    def cmd_async(self, targets, fun, args, tgt_type, kwarg):
        self.sent.append((sorted(targets), fun, args, tgt_type, kwarg))
        return JID


@pytest.fixture
def pillar(tmp_path, monkeypatch):
    tree = Pillar(tmp_path / "pillar")
    config = tmp_path / "master"
    config.write_text(
        json.dumps(
            {
                "root_dir": str(tmp_path / "root"),
                "pillar_roots": {"base": [str(tree.root)]},
                "file_roots": {"base": [str(SALT_TREE)]},  # the formula's defaults.yaml
            }
        )
    )
    runner.__opts__ = salt.config.master_config(str(config))
    runner.__context__ = {}  # what the runner keeps between calls: a fresh master
    tree.jobs = Jobs()
    monkeypatch.setattr(runner.salt.client, "get_local_client", lambda **_: tree.jobs)
    return tree


def test_the_routes_follow_the_pillar(pillar):
    pillar.write("npm", {"mailcow": {}, "mailcow-2": {}})
    assert runner.routes("npm") == {"npm": ["mailcow", "mailcow-2"]}
    pillar.write("npm", {"mailcow-2": {}, "mailcow-3": {"services": []}})
    assert runner.routes("npm") == {"npm": ["mailcow-2", "mailcow-3"]}


def test_a_publication_reaches_exactly_the_consumers_of_the_pillar(pillar):
    pillar.write("npm", {"mailcow": {}, "mailcow-2": {"mailcow_dir": "/srv/mailcow"}})
    done = runner.on_published("npm", "ab" * 32)
    assert done == {"targets": ["mailcow", "mailcow-2"], "jobs": {JID: ["mailcow", "mailcow-2"]}}
    # the deploy alone, no state run, one job: each consumer takes its settings from its
    # own pillar (certsync_settings.deploy_args, as the SLS does); the job names the
    # publication only
    deploy = {"source_minion": "npm", "fingerprint": "ab" * 32}
    assert pillar.jobs.sent == [
        (["mailcow", "mailcow-2"], "certsync_deploy.deployed", [], "list", deploy)
    ]


def test_a_minion_that_is_no_source_reaches_nobody(pillar):
    pillar.write("npm", {"mailcow": {}})
    names_npm = "mailcow's certsync pillar names 'npm' as certsync:source:minion"
    assert runner.on_published("mailcow") == {"targets": [], "jobs": {}, "why": names_npm}
    assert runner.on_renewed("mailcow") == {"targets": [], "jid": None, "why": names_npm}
    assert runner.on_renewed("intruder") == {
        "targets": [],
        "jid": None,
        "why": "the master compiles no certsync pillar for intruder: is it assigned to that "
        "minion id in the pillar's top.sls?",
    }
    assert pillar.jobs.sent == []


def test_a_consumer_keyed_by_another_id_is_told_why_nothing_moves(pillar):
    """Salt's default minion id is the FQDN; the pillar says mailcow."""
    pillar.write("npm", {"mailcow": {}}, minions=["npm", "mailcow", "mail.example.test"])
    assert runner.on_recipient("mail.example.test")["why"] == (
        "npm's certsync pillar does not name mail.example.test under certsync:consumers "
        "(it names mailcow)"
    )
    pillar.write("npm", {}, minions=["npm", "mailcow"])
    assert runner.on_recipient("mailcow")["why"] == (
        "npm's certsync pillar names no consumer under certsync:consumers"
    )
    assert pillar.jobs.sent == []


def test_a_renewal_and_a_new_recipient_key_make_the_source_publish(pillar):
    pillar.write("npm", {"mailcow": {}, "mailcow-2": {}})
    assert runner.on_renewed("npm")["targets"] == ["npm"]
    assert runner.on_recipient("mailcow")["targets"] == ["npm"]
    # the publication alone, no state run, with the pillar over the formula's defaults
    publication = {
        "hostname": "mail.example.test",
        "consumers": ["mailcow", "mailcow-2"],
        "kind": "npm",
        "live_dir": "/etc/letsencrypt/live",
        "keep_key": False,  # reuse_key auto, and no consumer has DANE on
    }
    assert (
        pillar.jobs.sent == [(["npm"], "certsync_mine.publish_source", [], "list", publication)] * 2
    )


@pytest.mark.parametrize(
    ("source", "consumers", "dns", "keep_key"),
    [
        ({}, {"mailcow": {}}, None, False),
        ({}, {"mailcow": {}, "mailcow-2": {"dane": True}}, None, True),
        ({}, {"mailcow": {"dane": {"port": 25}}}, None, True),
        ({"reuse_key": False}, {"mailcow": {"dane": True}}, None, False),
        ({"reuse_key": True}, {"mailcow": {}}, None, True),
        ({}, {"mailcow": {}}, {"tlsa_ports": [25]}, True),
    ],
    ids=[
        "auto-no-dane",
        "auto-one-dane",
        "auto-dane-mapping",
        "forced-off",
        "forced-on",
        "auto-tlsa-audit",
    ],
)
def test_reuse_key_follows_dane_unless_forced(pillar, source, consumers, dns, keep_key):
    """A new recipient key (the mailcow side) changes certbot's config only when the
    source's setting says so (auto: a TLSA record pins the key, by DANE or the audit)."""
    pillar.write("npm", consumers, **source)
    if dns:
        written = json.loads((pillar.root / "certsync.sls").read_text())
        written["certsync"]["dns"] = dns
        (pillar.root / "certsync.sls").write_text(json.dumps(written))
    runner.on_recipient("mailcow")
    (job,) = pillar.jobs.sent
    assert job[4]["keep_key"] is keep_key


def test_a_bad_reuse_key_setting_publishes_nothing_and_says_why(pillar):
    pillar.write("npm", {"mailcow": {}}, reuse_key="yes")
    assert runner.on_renewed("npm") == {
        "targets": [],
        "jid": None,
        "refused": "certsync:source:reuse_key must be true, false or auto, not 'yes'",
    }
    assert pillar.jobs.sent == []


def test_the_publication_takes_the_lineage_and_reuse_key_from_the_pillar(pillar):
    pillar.write(
        "npm", {"mailcow": {}}, live_dir="/etc/nginx/letsencrypt/live", dir="npm-5", reuse_key=False
    )
    runner.on_renewed("npm")
    (job,) = pillar.jobs.sent
    assert job[4] == {
        "hostname": "mail.example.test",
        "consumers": ["mailcow"],
        "kind": "npm",
        "live_dir": "/etc/nginx/letsencrypt/live",
        "dir": "npm-5",
        "keep_key": False,
    }


def test_a_consumer_the_source_does_not_name_moves_nothing(pillar):
    # its own pillar names npm, npm's does not name it back
    pillar.write("npm", {"mailcow": {}}, minions=["npm", "mailcow", "stranger"])
    assert runner.on_recipient("stranger") == {
        "targets": [],
        "jid": None,
        "why": "npm's certsync pillar does not name stranger under certsync:consumers "
        "(it names mailcow)",
    }
    assert pillar.jobs.sent == []


@pytest.mark.parametrize("fingerprint", [None, "zz", "AB" * 32, {"x": 1}, "ab" * 33], ids=repr)
def test_only_a_sha256_fingerprint_is_passed_on(pillar, fingerprint):
    pillar.write("npm", {"mailcow": {}})
    runner.on_published("npm", fingerprint)
    assert "fingerprint" not in pillar.jobs.sent[0][4]


@pytest.mark.parametrize("bad", ["-x", "a b", "", None, "x" * 300])
def test_a_malformed_id_in_the_pillar_or_the_event_is_ignored(pillar, bad):
    pillar.write("npm", {"mailcow": {}, **({bad: {}} if isinstance(bad, str) else {})})
    assert runner.routes("npm") == {"npm": ["mailcow"]}
    assert runner.on_renewed(bad)["targets"] == []


def test_the_job_carries_no_setting_of_a_consumer(pillar):
    """A consumer entry the check refuses, defaults that are no mapping: the runner does
    not read them (each consumer refuses its own, by key: certsync_deploy.deployed)."""
    pillar.write("npm", {"mailcow": ["not", "a", "mapping"], "mailcow-2": None})
    written = json.loads((pillar.root / "certsync.sls").read_text())
    written["certsync"]["consumer_defaults"] = "everything"
    (pillar.root / "certsync.sls").write_text(json.dumps(written))
    done = runner.on_published("npm", "ab" * 32)
    assert done["targets"] == ["mailcow", "mailcow-2"]
    ((_, _, _, _, kwarg),) = pillar.jobs.sent
    assert kwarg == {"source_minion": "npm", "fingerprint": "ab" * 32}


def test_a_pillar_compiler_is_kept_per_minion_and_grains(pillar, monkeypatch):
    """Made once per source and grains (it loads the execution modules a pillar SLS may
    call), it compiles the pillar as it is at each event."""
    pillar.write("npm", {"mailcow": {}})
    made = []
    real = runner.salt.pillar.get_pillar
    monkeypatch.setattr(
        runner.salt.pillar, "get_pillar", lambda *a, **kw: made.append(a[2]) or real(*a, **kw)
    )
    assert runner.routes("npm") == {"npm": ["mailcow"]}
    pillar.write("npm", {"mailcow": {}, "mailcow-2": {}})
    assert runner.routes("npm") == {"npm": ["mailcow", "mailcow-2"]}
    assert made == ["npm"]
    grains = {"os": "Debian"}
    monkeypatch.setattr(runner.salt.utils.minions, "get_minion_data", lambda *a: (None, grains))
    runner.routes("npm")
    assert made == ["npm", "npm"]  # other grains: another compiler
