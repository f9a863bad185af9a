"""
The real NPM source: Debian's certbot, run with NPM's ini and command lines
against pebble, its tree bind-mounted at /etc/letsencrypt as in NPM's
container. Without certsync.key_kept every renewal makes a new key; with
it, renewals keep the key and so the TLSA 3 1 1 record.
"""

import os
import stat

import pytest

# certbot-heavy, and its subject (certbot keeping the key) does not change with Salt
pytestmark = [pytest.mark.functional, pytest.mark.one_release]
HOST = "mail.example.test"
NAMES = [HOST, "autodiscover.example.test"]


@pytest.fixture
def lineage(npm_certbot):
    npm_certbot.issue(5, NAMES)
    return npm_certbot.lineage(5)


def test_the_renewal_file_holds_the_containers_paths(npm_certbot, lineage):
    text = npm_certbot.renewal_conf(5).read_text()
    assert "cert = /etc/letsencrypt/live/npm-5/cert.pem" in text
    assert str(npm_certbot.host_dir) not in text
    assert stat.S_IMODE(os.stat(npm_certbot.live_dir).st_mode) == 0o700


def test_without_reuse_key_a_renewal_changes_the_key(salt_call, npm_certbot, lineage):
    described = salt_call("certsync_source_npm.renewal", f"source={lineage}").data
    assert described["lineage"] == "npm-5"
    assert described["renewal_file"] == str(npm_certbot.renewal_conf(5))
    assert described["reuse_key"] is False
    assert described["next_renewal_keeps_key"] is False
    assert (described["key_type"], described["elliptic_curve"]) == ("ecdsa", "secp384r1")
    assert described["current"]["key"] == "EC P-384"
    assert sorted(described["current"]["names"]) == sorted(NAMES)
    before = npm_certbot.spki_sha256(5)
    assert described["current"]["spki_sha256"] == before
    npm_certbot.renew(5)
    assert npm_certbot.spki_sha256(5) != before


def test_key_kept_keeps_the_key_across_renewals(salt_call, npm_certbot, lineage):
    conf = npm_certbot.renewal_conf(5)
    os.chmod(conf, 0o640)
    original = conf.read_text().splitlines()

    code, ret = salt_call.state("certsync.key_kept", name=HOST, source=str(lineage), test=True)
    assert (code, ret["result"]) == (0, None), ret
    assert ret["changes"]["key_kept"] == {"old": False, "new": True}
    assert conf.read_text().splitlines() == original

    code, ret = salt_call.state("certsync.key_kept", name=HOST, source=str(lineage))
    assert (code, ret["result"]) == (0, True), ret
    assert ret["changes"]["key_kept"] == {"old": False, "new": True}
    now = conf.read_text().splitlines()
    assert [line for line in now if line not in original] == ["reuse_key = True"]
    assert [line for line in now if line != "reuse_key = True"] == original
    assert now.index("reuse_key = True") == now.index("[renewalparams]") + 1
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o640

    code, ret = salt_call.state("certsync.key_kept", name=HOST, source=str(lineage))
    assert (code, ret["result"], ret["changes"]) == (0, True, {}), ret
    assert (
        salt_call("certsync_source_npm.renewal", f"source={lineage}").data["next_renewal_keeps_key"]
        is True
    )

    record = salt_call("certsync.tlsa", str(lineage / "fullchain.pem")).data
    serials = {npm_certbot.leaf(5).serial_number}
    for _ in range(2):
        npm_certbot.renew(5)
        serials.add(npm_certbot.leaf(5).serial_number)
        assert salt_call("certsync.tlsa", str(lineage / "fullchain.pem")).data == record
    assert len(serials) == 3  # three certificates, one key


def test_key_kept_finds_the_lineage_by_name(salt_call, npm_certbot, lineage):
    code, ret = salt_call.state("certsync.key_kept", name=HOST, live_dir=str(npm_certbot.live_dir))
    assert (code, ret["result"]) == (0, True), ret
    assert ret["changes"]["where"] == str(npm_certbot.renewal_conf(5))


def test_a_reissue_from_npms_ui_still_changes_the_key(salt_call, npm_certbot, lineage):
    """certonly takes its parameters from the command line: a new key, reuse_key or not."""
    salt_call.state("certsync.key_kept", name=HOST, source=str(lineage))
    before = npm_certbot.spki_sha256(5)
    npm_certbot.issue(5, [*NAMES, "autoconfig.example.test"])
    assert npm_certbot.spki_sha256(5) != before


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: None, "no such file: certbot keeps no renewal configuration for npm-5"),
        (lambda text: "\xff\xfe".encode("latin-1"), "not UTF-8 text"),
        (lambda text: text.replace("[renewalparams]", "[other]"), "no [renewalparams] section"),
        (lambda text: text + "just words\n", "matched as neither section nor keyword"),
        (
            lambda text: text.replace("[[webroot_map]]", "[[webroot_map]"),
            "certbot refuses this renewal file (Cannot compute the section depth at line",
        ),
        (
            lambda text: text.replace("live/npm-5/cert.pem", "live/npm-6/cert.pem"),
            "belongs to another lineage (want .../live/npm-5/cert.pem)",
        ),
        (lambda text: text.replace("archive_dir = ", "archive = "), "no 'archive_dir' line"),
        (lambda text: "x" * (65 * 1024), "larger than 65536 bytes"),
    ],
    ids=["missing", "binary", "no-params", "garbage", "bad-section", "foreign", "partial", "huge"],
)
def test_a_bad_renewal_file_is_refused_and_left_alone(
    salt_call, npm_certbot, lineage, edit, message
):
    conf = npm_certbot.renewal_conf(5)
    changed = edit(conf.read_text())
    if changed is None:
        conf.unlink()
    else:
        conf.write_bytes(changed if isinstance(changed, bytes) else changed.encode())
    before = conf.read_bytes() if conf.exists() else None

    code, ret = salt_call.state("certsync.key_kept", name=HOST, source=str(lineage))
    assert code != 0
    assert ret["result"] is False
    assert ret["changes"] == {}
    assert str(conf) in ret["comment"]
    assert message in ret["comment"]
    assert (conf.read_bytes() if conf.exists() else None) == before
    described = salt_call("certsync_source_npm.renewal", f"source={lineage}")
    assert described.returncode != 0
    assert message in described.stderr + str(described.data)


@pytest.mark.parametrize("bad", ["", "/etc/letsencrypt/npm-5", "/x/live/..", "relative"])
def test_a_path_that_is_no_lineage_dir_is_refused(salt_call, bad):
    code, ret = salt_call.state("certsync.key_kept", name=HOST, source=bad or "''")
    assert (code != 0, ret["result"]) == (True, False)
    assert "lineage" in ret["comment"]


def test_publish_source_is_a_renewals_publication_in_one_call(salt_call, npm_certbot, lineage):
    """What the runner sends on a renewal: the pair found by name, published, and
    reuse_key set again; a consumer without a recipient key is said, with exit 1."""
    conf = npm_certbot.renewal_conf(5)
    before = conf.read_text()
    args = ["certsync_mine.publish_source", HOST, '["mailcow"]', f"live_dir={npm_certbot.live_dir}"]
    dry = salt_call(*args, "test=True")
    assert dry.data["reuse_key"]["changed"] is True and conf.read_text() == before, dry
    ret = salt_call(*args)
    assert ret.returncode == 1, ret
    assert ret.data["source"] == str(lineage)
    assert ret.data["fingerprint"] == npm_certbot.current(5).fingerprint
    assert ret.data["missing_recipient_key"] == ["mailcow"]
    assert ret.data["reuse_key"]["changed"] is True
    assert (
        salt_call("certsync_source_npm.renewal", f"source={lineage}").data["next_renewal_keeps_key"]
        is True
    )
    assert "PRIVATE KEY" not in ret.stdout
    kept = salt_call(*args, "keep_key=False")
    assert "reuse_key" not in kept.data


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ([], "the npm source needs live_dir (and dir) or source"),
        (["live_dir=relative/live"], "live_dir must be an absolute path"),
    ],
)
def test_publish_source_refuses_a_place_it_cannot_use(salt_call, where, message):
    ret = salt_call("certsync_mine.publish_source", HOST, '["mailcow"]', *where)
    assert ret.returncode != 0 and message in ret.stdout + ret.stderr, ret


def test_a_fifo_in_place_of_the_renewal_file_is_refused_at_once(salt_call, npm_certbot, lineage):
    """A plain open() of a FIFO waits for a writer forever: the read is refused before."""
    conf = npm_certbot.renewal_conf(5)
    conf.unlink()
    os.mkfifo(conf)
    described = salt_call("certsync_source_npm.renewal", f"source={lineage}")
    assert described.returncode != 0
    assert f"{conf}: not a regular file" in described.stderr + str(described.data)
    code, ret = salt_call.state("certsync.key_kept", name=HOST, source=str(lineage))
    assert (code != 0, ret["result"]) == (True, False)
    assert f"{conf}: not a regular file" in ret["comment"]
    assert stat.S_ISFIFO(os.lstat(conf).st_mode)


@pytest.mark.parametrize("before", [None, "reuse_key = False"], ids=["no-line", "false"])
def test_unset_reuse_key_gives_back_certbots_file_byte_for_byte(
    salt_call, npm_certbot, lineage, before
):
    """What certsync.absent does on the source: the line certsync wrote goes (or the one
    it replaced comes back), the rest of certbot's file as certbot wrote it."""
    conf = npm_certbot.renewal_conf(5)
    if before:
        conf.write_text(
            conf.read_text().replace("[renewalparams]\n", f"[renewalparams]\n{before}\n")
        )
    original = conf.read_bytes()
    untouched = salt_call("certsync_source_npm.release_key", f"source={lineage}")
    assert untouched.data["changed"] is False
    assert untouched.data["why"] == "certsync did not set reuse_key in this file: left as it is"
    assert salt_call("certsync_source_npm.keep_key", f"source={lineage}").data["changed"] is True
    assert conf.read_bytes() != original
    dry = salt_call("certsync_source_npm.release_key", f"source={lineage}", "test=True")
    assert dry.data["changed"] is True and conf.read_bytes() != original
    done = salt_call("certsync_source_npm.release_key", f"source={lineage}")
    assert done.data["changed"] is True, done
    assert conf.read_bytes() == original
    again = salt_call("certsync_source_npm.release_key", f"source={lineage}")
    assert again.data["changed"] is False
