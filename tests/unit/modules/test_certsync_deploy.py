"""Unit tests of certsync_deploy.deploy (loader mocked, the real certsync module behind it)."""

import os
import shutil
from unittest.mock import patch

import pytest
import yaml
from support import cases

from harness.loader import (
    SALT_TREE,
    UTILS,
    certsync_mod,
    deploy_mod,
    mailcow_consumer_mod,
    mailcow_mod,
    monitor_mod,
    salt_functions,
    tlsprobe_mod,
)
from harness.pki import write_npm_tree, write_pair, write_sni_dir

HOST = cases.HOST


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


@pytest.fixture
def configure_loader_modules(loader_modules):
    return loader_modules


@pytest.fixture(scope="module")
def serving(ca):
    """The pair mailcow serves before each run."""
    return ca.leaf(HOST, key_kind="ec-p256")


@pytest.fixture
def layout(tmp_path, ca, serving):
    return cases.make_layout(tmp_path, ca, serving)


@pytest.mark.parametrize("name", sorted(cases.CASES))
def test_bad_input_is_refused_and_nothing_changes(name, tmp_path, ca, good, serving):
    layout, args, expect = cases.build(name, tmp_path, ca, good, serving)
    before = cases.snapshot(layout.root)
    ret = deploy_mod.deploy(**args)
    assert ret["result"] is False, ret
    assert expect in ret["comment"]
    assert ret["changes"] == {}
    assert cases.snapshot(layout.root) == before


def test_installs_then_is_idempotent(layout, good, serving):
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source)
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"] == {
        "old": {
            "fingerprint": serving.fingerprint,
            "not_after": certsync_mod.info(os.path.join(layout.dest, "cert.pem.certsync-prev"))[
                "not_after"
            ],
            "sans": [HOST],
        },
        "new": {
            "fingerprint": good.fingerprint,
            "not_after": certsync_mod.info(os.path.join(layout.source, "fullchain.pem"))[
                "not_after"
            ],
            "sans": [HOST, "autodiscover.example.test"],
        },
        "dirs": [layout.dest],
    }
    assert _read(os.path.join(layout.dest, "cert.pem")) == good.fullchain_pem()
    again = deploy_mod.deploy(layout.dest, HOST, source=layout.source)
    assert again["result"] is True
    assert again["changes"] == {}
    assert "already deployed" in again["comment"]


def test_a_deploy_waits_for_any_other_deploy_on_the_minion(layout, good, monkeypatch):
    """Routes to one consumer share its services: while another route's deploy holds
    the minion's lock, a deploy to this destination waits for it, and gives up by name."""
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    before = cases.snapshot(layout.root)
    monkeypatch.setattr(deploy_mod, "MINION_LOCK_TIMEOUT", 0.3)
    lock = os.path.join(deploy_mod.__opts__["cachedir"], deploy_mod.MINION_LOCK)
    os.makedirs(os.path.dirname(lock))
    with UTILS["certsync_files.locked"](lock, 1, "the test"):
        ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source)
    assert ret["result"] is False
    assert "another certsync deploy on this minion held the lock for 0.3 s" in ret["comment"]
    assert cases.snapshot(layout.root) == before
    assert deploy_mod.deploy(layout.dest, HOST, source=layout.source)["result"] is True


def test_test_mode_reports_and_changes_nothing(layout, good, serving):
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    before = cases.snapshot(layout.root)
    ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source, test=True)
    assert ret["result"] is None
    assert ret["comment"].startswith(f"Would install the pair from {layout.source}")
    assert "cert.pem content differs" in ret["comment"]
    assert ret["changes"]["new"]["fingerprint"] == good.fingerprint
    assert ret["changes"]["old"]["fingerprint"] == serving.fingerprint
    assert cases.snapshot(layout.root) == before


def test_finds_the_source_by_san_in_live_dir(tmp_path, layout, ca, good):
    live_dir = os.path.join(layout.root, "npm", "live")
    os.rmdir(layout.source)
    write_npm_tree(live_dir, 2, ca.leaf("www.example.test"))
    write_npm_tree(live_dir, 5, good)
    ret = deploy_mod.deploy(layout.dest, HOST, live_dir=live_dir)
    assert ret["result"] is True, ret["comment"]
    assert f"from {live_dir}/npm-5 " in ret["comment"]
    assert _read(os.path.join(layout.dest, "cert.pem")) == good.fullchain_pem()


def test_sni_dirs_are_kept_in_step_by_their_domains(layout, ca, good, serving):
    """good covers mail. and autodiscover.example.test: a dir is updated when it covers all
    of the dir's names; otherwise left alone and reported; no domains file, not served."""
    sni = write_sni_dir(layout.dest, serving, ["autodiscover.example.test"])
    stranger = write_sni_dir(layout.dest, serving, ["other.example.test"])
    other = write_sni_dir(layout.dest, serving, ["www.example.test", "mail.example.org"])
    bare = os.path.join(layout.dest, "autodiscover.example.org")
    write_pair(bare, serving)  # no domains file: mailcow does not serve it
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source)
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["dirs"] == [layout.dest, sni]
    assert _read(os.path.join(sni, "cert.pem")) == good.fullchain_pem()
    for untouched in (stranger, other, bare):
        assert _read(os.path.join(untouched, "cert.pem")) == serving.fullchain_pem()
    assert (
        "Left alone: SNI dir www.example.test lists www.example.test, mail.example.org, which "
        f"the certificate does not cover; it keeps serving {serving.fingerprint[:16]}... (expires "
    ) in ret["comment"]
    assert "Left alone: SNI dir other.example.test lists other.example.test" in ret["comment"]
    assert "autodiscover.example.org" not in ret["comment"]


def test_the_hostnames_own_dir_is_taken_over(layout, ca, good, serving):
    """mailcow's ACME client left ssl/<hostname>/ listing names an NPM certificate does not
    cover: postfix and dovecot serve it for the hostname itself. certsync keeps it: the pair,
    a domains file of what the certificate covers, and a warning naming what it dropped."""
    own = write_sni_dir(
        layout.dest, serving, [HOST, "autoconfig.example.test", "autodiscover.example.test"]
    )
    mailcows = _read(os.path.join(own, "domains"))
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")  # mail., autodiscover.
    for sni in (True, False):  # served whatever ENABLE_SSL_SNI says: kept either way
        ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source, sni=sni)
        assert ret["result"] is True, ret["comment"]
        if sni:
            assert ret["changes"]["dirs"] == [layout.dest, own]
        else:
            assert ret["changes"] == {}, ret  # nothing more to do: the same plan
        assert _read(os.path.join(own, "cert.pem")) == good.fullchain_pem()
        assert (
            _read(os.path.join(own, "domains")) == b"mail.example.test autodiscover.example.test\n"
        )
        assert _read(os.path.join(own, "domains.mailcow")) == mailcows
        assert (
            f"Warning: SNI dir {HOST} is mailcow's own for the hostname and is kept by certsync now"
        ) in ret["comment"]
        assert "its list had autoconfig.example.test, which the certificate" in ret["comment"]
    # a rollback puts back the list it replaced, with the pair
    certsync_mod.restore_previous(own)
    assert _read(os.path.join(own, "domains")) == mailcows
    assert _read(os.path.join(own, "cert.pem")) == serving.fullchain_pem()


def test_sni_can_be_turned_off(layout, good, serving):
    sni = write_sni_dir(layout.dest, serving, ["autodiscover.example.test"])
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source, sni=False)
    assert ret["changes"]["dirs"] == [layout.dest]
    assert _read(os.path.join(sni, "cert.pem")) == serving.fullchain_pem()


def test_failure_in_an_sni_dir_restores_every_dir(layout, good, serving):
    sni = write_sni_dir(layout.dest, serving, ["autodiscover.example.test"])
    os.unlink(os.path.join(sni, "key.pem"))
    os.symlink("/nonexistent", os.path.join(sni, "key.pem"))
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    before = _read(os.path.join(layout.dest, "cert.pem"))
    ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source)
    assert ret["result"] is False
    assert "key.pem: is a symlink" in ret["comment"]
    assert _read(os.path.join(layout.dest, "cert.pem")) == before


def test_failure_midway_rolls_back_what_was_installed(layout, good, serving):
    """An install that fails after the first dir restores the first dir."""
    write_sni_dir(layout.dest, serving, ["autodiscover.example.test"])
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    before = cases.snapshot(layout.dest)
    real_install = certsync_mod.install
    calls = []

    def install_then_fail(fullchain, key, dest, **files):
        calls.append(dest)
        if len(calls) == 2:
            raise certsync_mod.CommandExecutionError(f"{dest}: install failed: disk full")
        return real_install(fullchain, key, dest, **files)

    with patch.dict(deploy_mod.__salt__, {"certsync.install": install_then_fail}):
        ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source)
    assert ret["result"] is False
    assert "disk full; restored the previous pair in: " + layout.dest in ret["comment"]
    after = cases.snapshot(layout.dest)
    for name in ("cert.pem", "key.pem", "autodiscover.example.test/cert.pem"):
        assert after[name] == before[name]


def test_a_source_of_another_kind_is_given_as_a_mapping(tmp_path, layout, ca, good):
    """Caddy's storage on the mail host itself: the kind and its settings, no NPM tree."""
    storage = tmp_path / "caddy"
    site = storage / "certificates" / "acme-issuer" / HOST
    site.mkdir(parents=True)
    (site / f"{HOST}.crt").write_bytes(good.fullchain_pem())
    (site / f"{HOST}.key").write_bytes(good.key_pem())
    ret = deploy_mod.deploy(layout.dest, HOST, source={"kind": "caddy", "storage": str(storage)})
    assert ret["result"] is True, ret["comment"]
    assert f"from {site} " in ret["comment"]
    assert _read(os.path.join(layout.dest, "cert.pem")) == good.fullchain_pem()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"kind": "caddy", "storag": "/x"}, "storag not a setting of the caddy source"),
        ({"kind": "caddy", "live_dir": "/x"}, "live_dir not a setting of the caddy source"),
        ({"kind": "nginx", "root": "/x"}, "unknown certificate source kind 'nginx'"),
        ({"kind": "caddy", "storage": "relative"}, "storage, Caddy's storage root"),
    ],
)
def test_a_source_mapping_is_refused_by_name(layout, source, message):
    before = _read(os.path.join(layout.dest, "cert.pem"))
    ret = deploy_mod.deploy(layout.dest, HOST, source=source)
    assert (ret["result"], ret["changes"]) == (False, {}), ret
    assert message in ret["comment"]
    assert _read(os.path.join(layout.dest, "cert.pem")) == before


def test_source_and_live_dir_are_exclusive(layout):
    ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source, live_dir="/x")
    assert ret["result"] is False
    assert ret["comment"] == "Nothing deployed: give either source or live_dir, not both"


def test_no_key_material_in_the_return(layout, good):
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    secret = good.key_pem().decode()
    body = "".join(secret.splitlines()[1:-1])
    for test in (True, False):
        ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source, test=test)
        assert body[:24] not in repr(ret)
        assert "PRIVATE KEY" not in repr(ret)


def test_runs_are_recorded_for_monitoring(tmp_path, layout, good):
    funcs = {"certsync_monitor.record_deploy": monitor_mod.record_deploy}
    opts = {"cachedir": str(tmp_path / "cache"), "id": "mailcow"}
    with (
        patch.object(monitor_mod, "__opts__", opts, create=True),
        patch.object(monitor_mod, "__pillar__", {}, create=True),
        patch.dict(deploy_mod.__salt__, funcs),
    ):
        deploy_mod.deploy(layout.dest, HOST, source=layout.source, test=True)
        assert monitor_mod.last_deploy(layout.dest) is None  # a dry run is not a run

        failed = deploy_mod.deploy(layout.dest, HOST, source=layout.source, min_days="x")
        record = monitor_mod.last_deploy(layout.dest)
        assert (record["result"], record["installed"]) == (False, False)
        assert record["summary"] == failed["comment"].splitlines()[0]
        assert record["last_success"] is None

        write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
        deploy_mod.deploy(layout.dest, HOST, source=layout.source)
        installed = monitor_mod.last_deploy(layout.dest)
        assert (installed["result"], installed["installed"]) == (True, True)
        assert installed["last_install"] == installed["last_success"] == installed["time"]

        deploy_mod.deploy(layout.dest, HOST, source=layout.source)
        again = monitor_mod.last_deploy(layout.dest)
        assert (again["result"], again["installed"]) == (True, False)
        assert again["last_install"] == installed["time"] < again["last_success"]


def test_an_older_publication_never_replaces_what_certsync_installed(tmp_path, ca, layout):
    """A restored master cache hands back a genuine, valid, but older entry."""
    from harness.pki import DAY, NOW

    older = ca.leaf(HOST, not_before=NOW - 20 * DAY)
    newer = ca.leaf(HOST, not_before=NOW - 1 * DAY)
    funcs = {
        "certsync_monitor.record_deploy": monitor_mod.record_deploy,
        "certsync_monitor.last_deploy": monitor_mod.last_deploy,
    }
    opts = {"cachedir": str(tmp_path / "cache"), "id": "mailcow"}
    with (
        patch.object(monitor_mod, "__opts__", opts, create=True),
        patch.object(monitor_mod, "__pillar__", {}, create=True),
        patch.dict(deploy_mod.__salt__, funcs),
    ):
        write_pair(layout.source, older, "fullchain.pem", "privkey.pem")
        # what mailcow served before certsync (issued later than the source's) is no
        # certsync install: the first deploy goes through
        assert deploy_mod.deploy(layout.dest, HOST, source=layout.source)["result"] is True
        write_pair(layout.source, newer, "fullchain.pem", "privkey.pem")
        assert deploy_mod.deploy(layout.dest, HOST, source=layout.source)["result"] is True
        assert monitor_mod.last_deploy(layout.dest)["certificate"]["fingerprint"] == (
            newer.fingerprint
        )

        write_pair(layout.source, older, "fullchain.pem", "privkey.pem")
        before = cases.snapshot(layout.dest)
        ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source)
        assert (ret["result"], ret["changes"]) == (False, {}), ret
        assert ret["comment"].startswith(
            f"Nothing deployed: the source's certificate {older.fingerprint[:16]}... was issued"
        )
        assert "allow_older: true" in ret["comment"]
        assert cases.snapshot(layout.dest) == before

        ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source, allow_older=True)
        assert ret["result"] is True, ret["comment"]
        assert ret["changes"]["new"]["fingerprint"] == older.fingerprint


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"services": 5}, "services must be a list of compose service names, not 5"),
        ({"services": ["postfix-mailcow", ""]}, "services must be a list of compose service"),
        (
            {"reload_commands": {"postfix-mailcow": "postfix reload"}},
            "reload_commands:postfix-mailcow must be an argv list",
        ),
        (
            {"reload_commands": ["postfix"]},
            "reload_commands must map service names to argv lists, not a list",
        ),
        ({"mail_domains": {"a": 1}}, "mail_domains must be a list of domains"),
        ({"endpoints": ["gopher"]}, "unknown protocol 'gopher'"),
        ({"endpoints": {"smtp": "mail.example.test:25"}}, "address of smtp must be an IP address"),
        ({"endpoints": {"imaps": 70000}}, "port of imaps out of range: 70000"),
        ({"verify_timeout": float("inf")}, "verify_timeout must be between 0 and 3600"),
        ({"dane": "yes please"}, "dane must be true or a mapping"),
    ],
    ids=[
        "services-number",
        "services-empty-name",
        "commands-string",
        "commands-list",
        "mail-domains-mapping",
        "endpoint-protocol",
        "endpoint-address",
        "endpoint-port",
        "timeout-infinite",
        "dane-string",
    ],
)
def test_every_argument_is_checked_before_anything_is_touched(layout, good, args, message):
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    before = cases.snapshot(layout.root)
    modules = {**salt_functions(mailcow_mod, "mailcow"), **salt_functions(tlsprobe_mod, "tlsprobe")}
    with patch.dict(deploy_mod.__salt__, modules):
        ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source, **args)
    assert ret["result"] is False
    assert ret["comment"].startswith("Nothing deployed: ")
    assert message in ret["comment"]
    assert ret["changes"] == {}
    assert cases.snapshot(layout.root) == before


class _Looked(dict):
    """A ``__salt__`` that notes every name asked for: Salt's loader loads a
    module when one of its names is looked up."""

    def __init__(self, *args):
        super().__init__(*args)
        self.asked = set()

    def __contains__(self, key):
        self.asked.add(key)
        return super().__contains__(key)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)


def test_a_files_only_deploy_needs_neither_docker_nor_the_probe(layout, good):
    """services: [] and endpoints: [] (what a consumer without containers has) install
    without loading the mailcow or tlsprobe module, so a host without Docker's library works."""
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    looked = _Looked(deploy_mod.__salt__)
    with patch.object(deploy_mod, "__salt__", looked):
        ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source, services=[], endpoints=[])
    assert ret["result"] is True, ret["comment"]
    assert _read(os.path.join(layout.dest, "cert.pem")) == good.fullchain_pem()
    assert not {k for k in looked.asked if k.startswith(("mailcow.", "tlsprobe."))}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"services": ["postfix-mailcow"]}, "services given but the mailcow module is not"),
        ({"endpoints": ["smtp"]}, "endpoints given but the tlsprobe module is not"),
    ],
)
def test_services_or_endpoints_without_their_module_are_refused(layout, good, args, message):
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    before = cases.snapshot(layout.root)
    ret = deploy_mod.deploy(layout.dest, HOST, source=layout.source, **args)
    assert ret["result"] is False
    assert message in ret["comment"]
    assert cases.snapshot(layout.root) == before


def test_an_unexpected_error_after_the_install_restores_the_previous_pair(layout, good, serving):
    """Whatever escapes while serving (here a TypeError), the old pair comes back."""
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")

    def broken_probe(*args, **kwargs):
        raise TypeError("a bug in a probe")

    def served_before(*args, **kwargs):
        return {"smtp/-": {"fingerprint": serving.fingerprint}}

    funcs = {"tlsprobe.probe": served_before, "tlsprobe.wait_for": broken_probe}
    funcs["tlsprobe.endpoint_list"] = tlsprobe_mod.endpoint_list
    with patch.dict(deploy_mod.__salt__, funcs):
        ret = deploy_mod.deploy(
            layout.dest, HOST, source=layout.source, endpoints=["smtp"], sni=False
        )
    assert ret["result"] is False
    assert ret["comment"].startswith("a bug in a probe; restored the previous pair in: ")
    assert _read(os.path.join(layout.dest, "cert.pem")) == serving.fullchain_pem()


@pytest.mark.parametrize(("installs", "test"), [(True, False), (True, True), (False, False)])
def test_the_probe_before_an_install_asks_each_endpoint_once(layout, good, serving, installs, test):
    """Before an install it only tells which endpoints answer (the install changes what
    they serve anyway): one handshake each, not one per name, begun with the run. A
    dry run, or a pair already in place, reports what is served by name."""
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    if not installs:
        write_pair(layout.dest, good)
    asked = []

    def probe(hostname, endpoints, address, names=None, **kwargs):
        asked.append(names)
        served = {"fingerprint": good.fingerprint, "address": "127.0.0.1", "port": 25}
        return {f"smtp/{name or '-'}": served for name in names or [None]}

    funcs = {
        "tlsprobe.probe": probe,
        "tlsprobe.wait_for": lambda *a, **kw: {"ok": True, "served": {}},
        "tlsprobe.endpoint_list": tlsprobe_mod.endpoint_list,
    }
    with patch.dict(deploy_mod.__salt__, funcs), patch.dict(deploy_mod.__opts__, {"test": test}):
        ret = deploy_mod.deploy(
            layout.dest, HOST, source=layout.source, endpoints=["smtp"], test=test
        )
    assert ret["result"] is not False, ret["comment"]
    if installs and not test:  # begun with the run, before the pair was fetched
        assert asked == [None]
    else:
        assert asked[-1] == [HOST, ""], asked  # and without SNI


def test_the_runners_deploy_is_refused_when_the_settings_fail_the_check(layout, good, monkeypatch):
    """certsync_deploy.deployed (the reactor's path) runs the check the formula's states
    wait for: a typo in the consumer's pillar deploys nothing and names the key."""
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    before = cases.snapshot(layout.root)
    problem = (
        "certsync:consumers:mailcow:mailcow_dri is no certsync setting: "
        "did you mean certsync:consumers:mailcow:mailcow_dir?"
    )
    check = {"valid": False, "role": "consumer", "why": "", "problems": [problem]}
    monkeypatch.setitem(deploy_mod.__salt__, "certsync_settings.check", lambda: check)
    monkeypatch.setitem(deploy_mod.__context__, "retcode", 0)
    monkeypatch.setitem(deploy_mod.__pillar__, "certsync", {"consumers": {"mailcow": {}}})
    ret = deploy_mod.deployed(layout.dest, hostname=HOST, source=layout.source)
    (state,) = ret.values()
    assert state["result"] is False and problem in state["comment"]
    assert deploy_mod.__context__["retcode"] == 1
    assert cases.snapshot(layout.root) == before
    check.update(valid=True, problems=[])
    (state,) = deploy_mod.deployed(layout.dest, hostname=HOST, source=layout.source).values()
    assert state["result"] is True, state["comment"]


DEFAULTS = yaml.safe_load((SALT_TREE / "certsync" / "defaults.yaml").read_text())["certsync"]


def _consumer_with_pillar(monkeypatch, layout, source="npm", **own):
    """This consumer's certsync pillar (its checkout at layout.root/mailcow), the
    settings functions that read it, and the mine entry of ``npm`` (the source pair)."""
    pillar = {
        "hostname": HOST,
        "source": {"minion": source},
        "consumers": {"mailcow": {"mailcow_dir": os.path.join(layout.root, "mailcow"),
                                  "services": [], "endpoints": [], **own}},
    }  # fmt: skip
    monkeypatch.setitem(deploy_mod.__pillar__, "certsync", pillar)
    monkeypatch.setitem(deploy_mod.__opts__, "cachedir", os.path.join(layout.root, "cache"))
    problems = UTILS["certsync_settings.problems"](pillar, DEFAULTS)
    check = {"valid": not problems, "role": "consumer", "why": "", "problems": problems}
    cfg = UTILS["certsync_settings.merged"](DEFAULTS, pillar)

    def fetch_published(minion, private, route=None):
        assert (minion, route) == ("npm", None)
        for name in ("fullchain.pem", "privkey.pem"):
            shutil.copy(os.path.join(layout.source, name), private)
        chain = os.path.join(private, "fullchain.pem")
        fingerprint = certsync_mod.info(chain)["fingerprint"]
        return {"fullchain": chain, "privkey": os.path.join(private, "privkey.pem"),
                "fingerprint": fingerprint}  # fmt: skip

    for function, value in {
        "certsync_settings.check": lambda: check,
        "certsync_settings.deploy_args": lambda fingerprint="", route="default": UTILS[
            "certsync_settings.deploy_args"
        ](
            cfg,
            "mailcow",
            source,
            fingerprint,
            mailcow_consumer_mod.dest(HOST, UTILS["certsync_settings.consumer"](cfg, "mailcow")),
            mailcow_consumer_mod.settings(),
        ),
        "certsync_mine.fetch_published": fetch_published,
    }.items():
        monkeypatch.setitem(deploy_mod.__salt__, function, value)
    monkeypatch.setitem(deploy_mod.__context__, "retcode", 0)


def test_the_runners_deploy_takes_this_consumers_own_settings(layout, good, monkeypatch):
    """The runner sends the publication only: the consumer's own pillar gives the rest,
    as the formula's SLS does (its checkout here, not the default mailcow_dir)."""
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    _consumer_with_pillar(monkeypatch, layout)
    ret = deploy_mod.deployed(source_minion="npm", fingerprint=good.fingerprint)
    ((key, state),) = ret.items()
    assert key == f"certsync_|-{layout.dest}_|-{layout.dest}_|-deployed"
    assert state["result"] is True, state["comment"]
    assert certsync_mod.deployed_info(layout.dest)["fingerprint"] == good.fingerprint


@pytest.mark.parametrize(
    ("own", "source", "sent", "why"),
    [
        ({"mailcow_dri": "/x"}, "npm", {},
         "certsync:consumers:mailcow:mailcow_dri is no certsync setting: did you mean "
         "certsync:consumers:mailcow:mailcow_dir?"),
        ({"relay": [1, 2]}, "npm", {}, "certsync:consumers:mailcow:relay must be a mapping"),
        ({}, "elsewhere", {},
         "this minion's certsync pillar names 'elsewhere' as the source, not 'npm'"),
        ({}, "npm", {"mailcow_dir": "/tmp/elsewhere"},
         "without a name the deploy takes source_minion, fingerprint and route only, not "
         "mailcow_dir"),
    ],
)  # fmt: skip
def test_the_runners_deploy_refuses_by_key_and_changes_nothing(
    layout, good, monkeypatch, own, source, sent, why
):
    write_pair(layout.source, good, "fullchain.pem", "privkey.pem")
    _consumer_with_pillar(monkeypatch, layout, source, **own)
    before = cases.snapshot(layout.root)
    ((_, state),) = deploy_mod.deployed(source_minion="npm", **sent).items()
    assert state["result"] is False and why in state["comment"], state["comment"]
    assert state["comment"].startswith("Nothing deployed")
    assert deploy_mod.__context__["retcode"] == 1
    assert cases.snapshot(layout.root) == before
