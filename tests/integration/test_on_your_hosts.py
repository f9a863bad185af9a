"""
The docs' "Put it on your hosts" (docs/topics/on-your-hosts.md), followed from its
own code blocks: its master config and its pillar (paths moved into the test's
directories, nothing else), real salt-master and minions named as it names them
(npm, mailcow), NPM's real certbot against pebble, and its commands in its order:
sync, check, first applies (the consumer's deploy failing as the page shows),
status, roll back and resume, uninstall; then what is left on the hosts is compared
with what was there before. Once with the mailcow look-alike (a stock mailcow:
acme-mailcow active, mailcow's own cert in ssl/<hostname>/), once files only.
"""

import pathlib
import re
import shlex

import pytest
import yaml
from saltfactories.utils import random_string

from harness.fleet import SALT_TREE, wait_until
from harness.mailcow_stack import HOST, NAMES
from harness.pki import issue, write_pair, write_sni_dir

pytestmark = pytest.mark.one_release
PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "topics" / "on-your-hosts.md"
CONVERGE_TIMEOUT = 120


def _section():
    return PAGE.read_text()


def _blocks(section, lang):
    return re.findall(rf"```{lang}\n(.*?)```", section, re.DOTALL)


def _file_block(section, path):
    (block,) = [b for b in _blocks(section, "yaml") if b.startswith(f"# {path}\n")]
    return block


def _documented(section, command):
    """Each command the test runs is one of the page's, word for word."""
    commands = [
        line.split("#")[0].strip() for b in _blocks(section, "sh") for line in b.splitlines()
    ]
    assert command in commands, f"{PAGE.name} does not show: {command}"
    return shlex.split(command)


class Hosts:
    """A master and the minions npm and mailcow, configured as the page says."""

    def __init__(self, factories, root, section, paths):
        self.section = section
        pillar_dir = root / "pillar"
        pillar_dir.mkdir()
        moved = {"/srv/pillar": str(pillar_dir), "/srv/certsync/salt": str(SALT_TREE)}
        moved["/srv/salt"] = str(root / "srv-salt")
        (root / "srv-salt").mkdir()
        config = yaml.safe_load(
            self._moved(_file_block(section, "/etc/salt/master.d/certsync.conf"), moved)
        )
        for name in ("top.sls", "certsync.sls", "certsync-mailcow.sls"):
            text = self._moved(_file_block(section, f"/srv/pillar/{name}"), paths)
            (pillar_dir / name).write_text(text)
        self.pillar_file = pillar_dir / "certsync.sls"
        self.master = factories.salt_master_daemon(random_string("master-"), overrides=config)
        self.minions = {m: self.master.salt_minion_daemon(m) for m in ("npm", "mailcow")}

    @staticmethod
    def _moved(text, paths):
        for old, new in paths.items():
            text = text.replace(old, new)
        return text

    def salt(self, command, *extra):
        """A command of the page (``salt ...`` or ``salt-run ...``), run against this master."""
        words = _documented(self.section, command)
        if words[0] == "salt-run":
            return self.master.salt_run_cli(timeout=180).run(*words[1:], *extra)
        if words[1] == "-C":
            return self.master.salt_cli(timeout=180).run(
                "-C", *words[3:], *extra, minion_tgt=words[2].strip("'")
            )
        return self.master.salt_cli(timeout=180).run(*words[2:], *extra, minion_tgt=words[1])


def _state(ret, state_id):
    (found,) = [v for k, v in ret.items() if f"_|-{state_id}_|-" in k]
    return found


def _tree(root):
    return {str(p.relative_to(root)) for p in pathlib.Path(root).rglob("*") if p.is_file()}


def _certsync_in_minion_d(minion):
    found = []
    for path in (pathlib.Path(minion.config_dir) / "minion.d").glob("*.conf"):
        loaded = yaml.safe_load(path.read_text()) or {}
        for section in ("beacons", "schedule"):
            found += [
                f"{path.name}:{section}:{k}" for k in (loaded.get(section) or {}) if "certsync" in k
            ]
    return found


def _mailcow_files(root):
    conf = root / "mailcow.conf"
    ssl = root / "data" / "assets" / "ssl"
    ssl.mkdir(parents=True)
    mailcows_own = issue(HOST, sans=NAMES, key_kind="ec-p256")
    write_pair(ssl, issue(HOST, sans=[HOST], key_kind="rsa-2048"))
    write_sni_dir(ssl, mailcows_own, NAMES)
    conf.write_text(f"MAILCOW_HOSTNAME={HOST}\nSKIP_LETS_ENCRYPT=n\n")
    return ssl


SECRET = "c2VjcmV0LW9mLXRoZS1tYWlsLWhvc3Q="  # noqa: S105 (a made-up TSIG secret)


def _refreshed(hosts):
    for minion in hosts.minions:
        done = hosts.master.salt_cli(timeout=120).run(
            "saltutil.refresh_pillar", "wait=True", minion_tgt=minion
        )
        assert done.returncode == 0, done


def _credentials_stay_on_their_owner(hosts):
    """The page's layout: the mail host's credential in its own SLS reaches neither the
    NPM host's pillar nor the master's caches of it; put in certsync.sls, which the NPM
    host reads too, it fails the NPM host's check, named by key, never shown."""
    own_file = hosts.pillar_file.with_name("certsync-mailcow.sls")
    own, shared = own_file.read_text(), hosts.pillar_file.read_text()
    credential = {"dane": {"update": {"tsig_secret": SECRET}}}
    try:
        mine = yaml.safe_load(own)
        mine["certsync"]["consumers"]["mailcow"] = credential
        own_file.write_text(yaml.safe_dump(mine))
        _refreshed(hosts)
        cli = hosts.master.salt_cli(timeout=120)
        checked = cli.run("certsync_settings.check", minion_tgt="npm")
        assert checked.returncode == 0 and checked.data["valid"] is True, checked
        assert cli.run("certsync_settings.check", minion_tgt="mailcow").data["valid"] is True
        raw = cli.run("pillar.raw", minion_tgt="npm")
        assert raw.returncode == 0 and SECRET not in raw.stdout, raw
        routed = hosts.master.salt_run_cli(timeout=120).run("certsync.routes")  # compiles npm's
        assert routed.data == {"npm": ["mailcow"]}, routed
        cache = pathlib.Path(hosts.master.config["cachedir"])
        holding = [p for p in cache.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
        # only the master's caches of mailcow itself (mailcow.p, minions/mailcow/...)
        assert [p for p in holding if not {"mailcow", "mailcow.p"} & set(p.parts)] == []

        misplaced = yaml.safe_load(shared)
        misplaced["certsync"]["consumers"]["mailcow"]["dane"] = credential["dane"]
        hosts.pillar_file.write_text(yaml.safe_dump(misplaced))
        own_file.write_text(own)
        _refreshed(hosts)
        refused = cli.run("certsync_settings.check", minion_tgt="npm")
        assert refused.returncode != 0 and refused.data["valid"] is False, refused
        (problem,) = refused.data["problems"]
        assert problem.startswith(
            "certsync:consumers:mailcow:dane:update:tsig_secret is a credential (tsig_secret) "
            "of another minion"
        ), problem
        assert SECRET not in refused.stdout
    finally:
        own_file.write_text(own)
        hosts.pillar_file.write_text(shared)
        _refreshed(hosts)


@pytest.mark.parametrize("kind", ["look-alike", "files-only"])
def test_the_docs_put_certsync_on_two_hosts_and_take_it_off(
    kind, salt_factories, tmp_path, npm_certbot, make_stack
):
    section = _section()
    npm_certbot.issue(5, [HOST])  # an NPM proxy host's certificate: the hostname only
    issued = npm_certbot.current(5)
    if kind == "look-alike":
        stack = make_stack(issue(HOST, sans=[HOST], key_kind="rsa-2048"), acme=True)
        mailcow_dir, ssl = stack.root, stack.ssl_dir
    else:
        stack, mailcow_dir = None, tmp_path / "mailcow-dockerized"
        ssl = _mailcow_files(mailcow_dir)
    paths = {
        "/opt/npm/letsencrypt/live": str(npm_certbot.live_dir),
        "/opt/mailcow-dockerized": str(mailcow_dir),
        "mail.example.com": HOST,
    }
    hosts = Hosts(salt_factories, tmp_path, section, paths)
    if kind == "files-only":  # the page: a consumer with no containers adds these
        pillar = yaml.safe_load(hosts.pillar_file.read_text())
        pillar["certsync"]["consumers"]["mailcow"].update(services=[], endpoints=[])
        pillar["certsync"]["source"]["reuse_key"] = True  # and the renewal file is edited
        hosts.pillar_file.write_text(yaml.safe_dump(pillar))
    renewal = npm_certbot.renewal_conf(5).read_bytes()
    before = {"ssl": _tree(ssl), "conf": (mailcow_dir / "mailcow.conf").read_text()}
    with hosts.master.started():
        for minion in hosts.minions.values():
            minion.start()
        before["pki"] = {m: _tree(minion.config["pki_dir"]) for m, minion in hosts.minions.items()}

        assert hosts.salt("salt-run saltutil.sync_all").returncode == 0
        synced = hosts.salt("salt -C 'npm or mailcow' saltutil.sync_all")
        assert synced.returncode == 0 and set(synced.data) == {"npm", "mailcow"}, synced
        checked = hosts.salt("salt -C 'npm or mailcow' certsync_settings.check")
        assert {m: r["role"] for m, r in checked.data.items()} == {
            "npm": "source",
            "mailcow": "consumer",
        }
        assert all(r["valid"] for r in checked.data.values()), checked.data

        first = hosts.salt("salt mailcow state.apply certsync")
        deployed = _state(first.data, "certsync-deployed")
        failed = [k for k, v in first.data.items() if v["result"] is False]
        if first.returncode != 0:  # the page's output: the publication was not there yet
            assert (deployed["result"], deployed["comment"]) == (
                False,
                "Nothing deployed: the mine holds no certsync_cert_mailcow entry from npm",
            )
            assert len(failed) == 1, failed
        else:  # the reactor's publication for the new recipient key came first: this run
            # deployed it, or found the reactor's deploy job done (they share the lock)
            assert deployed["result"] is True and not failed, deployed
            assert deployed["comment"].startswith(
                (
                    f"Installed certificate {issued.fingerprint}",
                    f"Certificate {issued.fingerprint} from the mine of npm is already deployed",
                )
            ), deployed["comment"]
        print(f"{kind}: the first consumer apply: {deployed['comment'].splitlines()[0]}")
        assert "SKIP_LETS_ENCRYPT=y" in (mailcow_dir / "mailcow.conf").read_text()

        source = hosts.salt("salt npm state.apply certsync")
        assert source.returncode == 0, source.data
        wait_until(
            lambda: (
                (ssl / "cert.pem").read_bytes() == issued.fullchain_pem()
                and (ssl / HOST / "cert.pem").read_bytes() == issued.fullchain_pem()
            ),
            CONVERGE_TIMEOUT,
            interval=1,
            what="the reactor's deploy on mailcow",
        )
        if stack:
            wait_until(
                lambda: set(stack.served_names([HOST, ""]).values()) == {issued.fingerprint},
                CONVERGE_TIMEOUT,
                interval=1,
                what="every endpoint to serve NPM's certificate",
            )
        status = hosts.salt("salt-run certsync.status")
        assert status.returncode == 0 and status.data["result"] is True, status.data

        rolled = hosts.salt("salt mailcow state.apply certsync.rollback")
        assert rolled.returncode == 0, rolled.data
        assert (ssl / "cert.pem").read_bytes() != issued.fullchain_pem()
        held = hosts.salt("salt mailcow state.apply certsync")
        assert _state(held.data, "certsync-deployed")["comment"].startswith("Paused since ")
        assert (ssl / "cert.pem").read_bytes() != issued.fullchain_pem()
        resumed = hosts.salt("salt mailcow state.apply certsync.resume")
        assert resumed.returncode == 0, resumed.data
        assert (ssl / "cert.pem").read_bytes() == issued.fullchain_pem()
        assert _certsync_in_minion_d(hosts.minions["mailcow"]), "the formula set no beacon"
        _credentials_stay_on_their_owner(hosts)

        for command in (
            "salt mailcow state.apply certsync.absent",
            "salt npm state.apply certsync.absent",
        ):
            removed = hosts.salt(command)
            assert removed.returncode == 0, removed.data
        mine = hosts.master.salt_cli(timeout=60).run(
            "mine.get", "mailcow", "certsync_recipient", minion_tgt="npm"
        )
        assert mine.data == {}, mine.data
        for minion_id, minion in hosts.minions.items():
            assert _certsync_in_minion_d(minion) == [], minion_id
            assert _tree(minion.config["pki_dir"]) == before["pki"][minion_id]
            assert not (pathlib.Path(minion.config["cachedir"]) / "certsync").exists()
        for minion in hosts.minions.values():
            minion.terminate()
    assert npm_certbot.renewal_conf(5).read_bytes() == renewal
    assert _tree(ssl) == before["ssl"] | {f"{HOST}/domains.mailcow"}  # mailcow's list, kept
    assert (ssl / "cert.pem").read_bytes() == issued.fullchain_pem()  # still serving
    assert "SKIP_LETS_ENCRYPT=y" in (mailcow_dir / "mailcow.conf").read_text()
