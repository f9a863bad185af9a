"""
certsync reads NPM's renewal file as certbot does: a differential test. Each
case edits the real renewal file that Debian's certbot wrote for NPM's lineage,
asks certsync (``certsync_source_npm.renewal``) what the next renewal does, then runs
NPM's own ``certbot renew --force-renewal`` on it and looks: certbot refused
the file, kept the key, or made a new one. The two verdicts must be equal.
"""

import collections
import json
import pathlib
import re

import pytest

pytestmark = [pytest.mark.functional, pytest.mark.one_release]
NAMES = ["mail.example.test", "autodiscover.example.test"]
REFUSED, KEEPS, NEW_KEY = "refused", "keeps the key", "a new key"


def _params(line):
    """An edit that puts ``line`` right under [renewalparams]."""
    return lambda text: text.replace("[renewalparams]\n", f"[renewalparams]\n{line}\n", 1)


CASES = {
    "no reuse_key": (lambda text: text, NEW_KEY),
    "True": (_params("reuse_key = True"), KEEPS),
    "true": (_params("reuse_key = true"), KEEPS),
    "TRUE, indented": (_params("   reuse_key = TRUE"), KEEPS),
    "double-quoted True": (_params('reuse_key = "True"'), KEEPS),
    "single-quoted false": (_params("reuse_key = 'false'"), NEW_KEY),
    "True with a comment": (_params("reuse_key = True  # keep for DANE"), KEEPS),
    "False": (_params("reuse_key = False"), NEW_KEY),
    "yes": (_params("reuse_key = yes"), REFUSED),
    "1": (_params("reuse_key = 1"), REFUSED),
    "on": (_params("reuse_key = on"), REFUSED),
    "empty": (_params("reuse_key ="), REFUSED),
    "a list": (_params("reuse_key = True,"), REFUSED),
    "False then True": (_params("reuse_key = False\nreuse_key = True"), REFUSED),
    "True twice": (_params("reuse_key = True\nreuse_key = True"), REFUSED),
    "a second [renewalparams]": (
        lambda text: text + "[renewalparams]\nreuse_key = True\n",
        REFUSED,
    ),
    "at the top level": (lambda text: "reuse_key = True\n" + text, NEW_KEY),
    "under [[webroot_map]]": (lambda text: text + "reuse_key = True\n", NEW_KEY),
    "an interpolation": (_params("reuse_key = %(nowhere)s"), REFUSED),
    "must_staple = maybe": (_params("must_staple = maybe"), REFUSED),
    "rsa_key_size = big": (_params("rsa_key_size = big"), REFUSED),
    "no authenticator": (lambda text: re.sub(r"\nauthenticator = .*\n", "\n", text), REFUSED),
    "an unclosed quote": (_params('reuse_key = "True'), REFUSED),
}


@pytest.fixture(scope="module")
def lineage(tmp_path_factory, pebble):
    """One NPM lineage for every case: its renewal file is put back before each."""
    from harness.acme import NpmCertbot

    certbot = NpmCertbot(tmp_path_factory.mktemp("npm"), pebble)
    certbot.issue(5, NAMES)
    return certbot, certbot.renewal_conf(5).read_text()


def _certsync_verdict(salt_call, certbot):
    ret = salt_call("certsync_source_npm.renewal", f"source={certbot.lineage(5)}")
    if ret.returncode != 0:
        text = str(ret.data) + ret.stderr
        assert "certbot refuses this renewal file" in text, ret
        return REFUSED, text
    return (KEEPS if ret.data["next_renewal_keeps_key"] else NEW_KEY), ret.data["why"]


def _certbot_verdict(certbot):
    before = certbot.spki_sha256(5)
    try:
        certbot.renew(5)
    except RuntimeError as exc:
        assert "parse failure" in str(exc), exc  # refused the file, not a failed order
        return REFUSED
    return KEEPS if certbot.spki_sha256(5) == before else NEW_KEY


@pytest.mark.parametrize("case", sorted(CASES))
def test_certsync_reads_the_renewal_file_as_certbot_does(salt_call, lineage, case):
    certbot, original = lineage
    edit, expected = CASES[case]
    certbot.renewal_conf(5).write_text(edit(original))
    ours, why = _certsync_verdict(salt_call, certbot)
    theirs = _certbot_verdict(certbot)
    assert (ours, theirs) == (expected, expected), why
    if ours == REFUSED:
        assert str(certbot.renewal_conf(5)) in why


@pytest.mark.parametrize(
    "case", ["no reuse_key", "False", "single-quoted false", "at the top level"]
)
def test_set_reuse_key_makes_certbot_keep_the_key_and_keeps_every_other_line(
    salt_call, lineage, case
):
    certbot, original = lineage
    edit = CASES[case][0]
    before = edit(original).replace("reuse_key = False", "reuse_key = False  # was off")
    certbot.renewal_conf(5).write_text(before)
    code, ret = salt_call.state("certsync.key_kept", name=NAMES[0], source=str(certbot.lineage(5)))
    assert (code, ret["result"]) == (0, True), ret
    after = collections.Counter(certbot.renewal_conf(5).read_text().splitlines())
    lines = collections.Counter(before.splitlines())
    old = [line for line in lines if line.startswith("reuse_key = ") and "True" not in line]
    assert dict(after - lines) == {f"reuse_key = True{'  # was off' * ('was off' in before)}": 1}
    assert dict(lines - after) == dict.fromkeys(old, 1)
    assert _certbot_verdict(certbot) == KEEPS


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("final", [True, False], ids=["final-newline", "no-final-newline"])
@pytest.mark.parametrize("case", ["no reuse_key", "False"])
def test_set_then_unset_gives_back_the_same_bytes(salt_call, lineage, newline, final, case):
    """The renewal file NPM's certbot wrote, in either line ending, with or without a
    final newline: set_reuse_key then unset_reuse_key leave it byte for byte."""
    certbot, original = lineage
    text = CASES[case][0](original).rstrip("\n").replace("\n", newline)
    before = (text + newline if final else text).encode()
    certbot.renewal_conf(5).write_bytes(before)
    done = salt_call("certsync_source_npm.keep_key", f"source={certbot.lineage(5)}")
    assert done.returncode == 0 and done.data["changed"] is True, done
    assert b"reuse_key = True" in certbot.renewal_conf(5).read_bytes()
    undone = salt_call("certsync_source_npm.release_key", f"source={certbot.lineage(5)}")
    assert undone.returncode == 0 and undone.data["changed"] is True, undone
    assert certbot.renewal_conf(5).read_bytes() == before


@pytest.mark.parametrize(
    "replaced",
    [
        "reuse_key = False\npre_hook = touch /tmp/certsync-pwned",
        "reuse_key = False\rpre_hook = x",
        "pre_hook = touch /tmp/certsync-pwned",
        "reuse_key = False # \x1b]0;x\x07",
        ["reuse_key = False"],
    ],
)
def test_a_note_that_is_not_one_reuse_key_line_is_never_written(salt_call, lineage, replaced):
    certbot, original = lineage
    certbot.renewal_conf(5).write_text(CASES["False"][0](original))
    done = salt_call("certsync_source_npm.keep_key", f"source={certbot.lineage(5)}")
    assert done.returncode == 0 and done.data["changed"] is True, done
    cachedir = salt_call("config.get", "cachedir").data
    note = pathlib.Path(cachedir) / "certsync" / f"reuse-key-{certbot.lineage(5).name}.json"
    written = json.loads(note.read_text())
    note.write_text(json.dumps({**written, "replaced": replaced}))
    set_text = certbot.renewal_conf(5).read_bytes()
    undone = salt_call("certsync_source_npm.release_key", f"source={certbot.lineage(5)}")
    assert undone.returncode == 0 and undone.data["changed"] is False, undone
    assert "not one reuse_key line" in undone.data["why"]
    assert certbot.renewal_conf(5).read_bytes() == set_text
