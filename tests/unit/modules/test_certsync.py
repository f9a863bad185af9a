"""Unit tests of the certsync execution module (loader mocked)."""

import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest
from cryptography.hazmat.primitives import serialization
from salt.exceptions import CommandExecutionError, SaltInvocationError

from harness.loader import certsync_mod
from harness.pki import DAY, NOW, write_npm_tree, write_pair

KEY_KINDS = ["rsa-2048", "rsa-4096", "ec-p256", "ec-p384", "ec-p521", "ed25519", "ed448"]


@pytest.fixture
def configure_loader_modules(loader_modules):
    return loader_modules


@pytest.fixture(scope="module")
def leaves(ca):
    return {kind: ca.leaf("mail.example.test", key_kind=kind) for kind in KEY_KINDS}


def _files(tmp_path, issued):
    return write_pair(tmp_path / "src", issued, "fullchain.pem", "privkey.pem")


@pytest.mark.parametrize("kind", ["ed25519", "ed448"])
def test_validate_refuses_edwards_keys_that_clients_cannot_verify(tmp_path, leaves, kind):
    fullchain, key = _files(tmp_path, leaves[kind])
    ret = certsync_mod.validate(fullchain, key, "mail.example.test")
    label = {"ed25519": "Ed25519", "ed448": "Ed448"}[kind]
    assert ret["problems"] == [
        f"{fullchain}: {label} key: public CAs do not issue {label} certificates and most mail "
        "clients cannot verify them, so certsync does not deploy one"
    ]


@pytest.mark.parametrize("kind", [k for k in KEY_KINDS if not k.startswith("ed")])
def test_validate_accepts_every_key_type_tls_clients_take(tmp_path, leaves, kind):
    fullchain, key = _files(tmp_path, leaves[kind])
    ret = certsync_mod.validate(fullchain, key, "mail.example.test")
    assert ret["problems"] == []
    assert ret["valid"] is True
    assert ret["fingerprint"] == leaves[kind].fingerprint
    assert ret["chain_length"] == 2


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_check_pair_matches_and_mismatches(tmp_path, leaves, kind):
    fullchain, key = _files(tmp_path, leaves[kind])
    assert certsync_mod.check_pair(fullchain, key)["match"] is True
    other = "ec-p256" if kind != "ec-p256" else "ed25519"
    _, wrong_key = write_pair(tmp_path / "other", leaves[other], "c.pem", "k.pem")
    ret = certsync_mod.check_pair(fullchain, wrong_key)
    assert ret["match"] is False
    assert certsync_mod.__context__["retcode"] == 1


def test_info_describes_the_leaf_and_reads_through_symlinks(tmp_path, good):
    live = write_npm_tree(tmp_path / "live", 5, good)
    ret = certsync_mod.info(os.path.join(live, "fullchain.pem"))
    spki = good.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert ret["fingerprint"] == good.fingerprint
    assert ret["spki_sha256"] == hashlib.sha256(spki).hexdigest()
    assert ret["sans"] == ["mail.example.test", "autodiscover.example.test"]
    assert ret["key_type"] == "EC"
    assert ret["key_curve"] == "P-384"
    assert ret["key_size"] == 384
    assert ret["chain_length"] == 2
    assert ret["serial"] == format(good.cert.serial_number, "x")
    assert ret["issuer"] == "CN=certsync test intermediate"
    assert 89 < ret["days_left"] <= 90


def test_tlsa_3_1_1_is_the_spki_sha256(tmp_path, good):
    fullchain, _ = _files(tmp_path, good)
    info = certsync_mod.info(fullchain)
    assert certsync_mod.tlsa(fullchain) == f"3 1 1 {info['spki_sha256']}"


def test_tlsa_other_parameters(tmp_path, ca, good):
    fullchain, _ = _files(tmp_path, good)
    der = ca.intermediate.cert.public_bytes(serialization.Encoding.DER)
    assert certsync_mod.tlsa(fullchain, 2, 0, 1) == f"2 0 1 {hashlib.sha256(der).hexdigest()}"
    assert certsync_mod.tlsa(fullchain, 2, 0, 0) == f"2 0 0 {der.hex()}"
    leaf_der = good.cert.public_bytes(serialization.Encoding.DER)
    assert certsync_mod.tlsa(fullchain, 3, 0, 2) == f"3 0 2 {hashlib.sha512(leaf_der).hexdigest()}"
    with pytest.raises(SaltInvocationError, match="unsupported TLSA parameters 4 1 1"):
        certsync_mod.tlsa(fullchain, 4)
    with pytest.raises(SaltInvocationError, match="TLSA mtype must be a number"):
        certsync_mod.tlsa(fullchain, mtype="sha256")


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("mail.example.test", "mail.example.test", True),
        ("MAIL.Example.test", "mail.example.TEST", True),
        ("*.example.test", "mail.example.test", True),
        ("*.example.test", "example.test", False),
        ("*.example.test", "a.mail.example.test", False),
        ("*.test", "example.test", False),
        ("m*.example.test", "mail.example.test", False),
        ("mail.*.test", "mail.example.test", False),
        ("*", "localhost", False),
        ("../../etc", "etc", False),
    ],
)
def test_name_matches_rfc6125(pattern, host, expected):
    assert certsync_mod.name_matches(pattern, host) is expected


def test_validate_reports_every_problem_at_once(tmp_path, ca):
    leaf = ca.leaf("www.example.test", key_kind="rsa-1024", not_after=NOW + 2 * DAY)
    fullchain, _ = _files(tmp_path, leaf)
    _, key = write_pair(tmp_path / "k", ca.leaf("mail.example.test"), "c.pem", "k.pem")
    ret = certsync_mod.validate(fullchain, key, "mail.example.test")
    assert ret["valid"] is False
    text = "\n".join(ret["problems"])
    for expected in ("days left", "does not cover", "1024 bits", "does not match"):
        assert expected in text
    assert len(ret["problems"]) == 4


def test_validate_against_a_trust_bundle(tmp_path, ca, good):
    from harness.pki import TestCA

    fullchain, key = _files(tmp_path, good)
    bundle = tmp_path / "roots.pem"
    bundle.write_bytes(ca.root_pem())
    assert certsync_mod.validate(fullchain, key, "mail.example.test", ca_file=str(bundle))["valid"]
    bundle.write_bytes(TestCA("other").root_pem())
    ret = certsync_mod.validate(fullchain, key, "mail.example.test", ca_file=str(bundle))
    assert ret["valid"] is False
    assert "does not verify against" in ret["problems"][0]


def test_validate_rejects_bad_arguments(tmp_path, good):
    fullchain, key = _files(tmp_path, good)
    with pytest.raises(SaltInvocationError, match="min_days must be a number"):
        certsync_mod.validate(fullchain, key, "mail.example.test", min_days="soon")
    for bad in (-1, "nan", "inf", float("nan"), 10**9):
        with pytest.raises(SaltInvocationError, match="min_days must be between 0 and 3650"):
            certsync_mod.validate(fullchain, key, "mail.example.test", min_days=bad)


def test_install_is_atomic_with_modes_and_keeps_previous(tmp_path, ca, good):
    dest = tmp_path / "ssl"
    old = ca.leaf("mail.example.test")
    write_pair(dest, old)
    fullchain, key = _files(tmp_path, good)
    ret = certsync_mod.install(fullchain, key, str(dest))
    assert ret == {
        "dest": str(dest),
        "fingerprint": good.fingerprint,
        "previous_fingerprint": old.fingerprint,
    }
    assert (dest / "cert.pem").read_bytes() == good.fullchain_pem()
    assert (dest / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (dest / "cert.pem").stat().st_mode & 0o777 == 0o644
    assert (dest / "key.pem.certsync-prev").read_bytes() == old.key_pem()
    assert sorted(p.name for p in dest.iterdir()) == [
        ".certsync.lock",
        "cert.pem",
        "cert.pem.certsync-prev",
        "key.pem",
        "key.pem.certsync-prev",
    ]
    assert certsync_mod.compare(fullchain, key, str(dest))["current"] is True
    assert certsync_mod.restore_previous(str(dest))["restored"] == old.fingerprint
    assert (dest / "cert.pem").read_bytes() == old.fullchain_pem()
    assert (dest / "key.pem").read_bytes() == old.key_pem()
    assert (dest / "key.pem").stat().st_mode & 0o777 == 0o600


def _key_files(dest, keys):
    """Every file under ``dest`` that holds one of ``keys`` (PEM bytes)."""
    return [p for p in dest.rglob("*") if p.is_file() and any(k in p.read_bytes() for k in keys)]


@pytest.mark.parametrize("key_mode", [0o644, 0o640, 0o604, 0o600, 0o400, 0o666], ids=oct)
@pytest.mark.parametrize("cert_mode", [0o644, 0o600], ids=oct)
@pytest.mark.parametrize("owner", [(0, 0), (1000, 1000), (0, 101)], ids=str)
def test_every_key_file_is_private_and_owned_as_the_live_one(
    tmp_path, ca, good, key_mode, cert_mode, owner
):
    """A hand copy often leaves key.pem 0644: neither the new key nor the kept previous
    one (the key still in service when the key is reused) may stay readable by others."""
    if os.geteuid() != 0:
        pytest.skip("changing owners needs root")
    dest = tmp_path / "ssl"
    old = ca.leaf("mail.example.test")
    write_pair(dest, old)
    for name, mode in (("key.pem", key_mode), ("cert.pem", cert_mode)):
        os.chown(dest / name, *owner)
        os.chmod(dest / name, mode)
    fullchain, key = _files(tmp_path, good)
    certsync_mod.install(fullchain, key, str(dest))
    keys = [old.key_pem(), good.key_pem()]
    assert sorted(p.name for p in _key_files(dest, keys)) == ["key.pem", "key.pem.certsync-prev"]
    for path in _key_files(dest, keys):
        st = path.stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o600, *owner), path.name
        assert st.st_nlink == 1, f"{path.name} is a hard link"
    for name in ("cert.pem", "cert.pem.certsync-prev"):
        st = (dest / name).stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o644, *owner), name
    certsync_mod.restore_previous(str(dest))
    for path in _key_files(dest, keys):
        assert path.stat().st_mode & 0o777 == 0o600, path.name
    assert [p.name for p in dest.iterdir() if ".certsync-" in p.name and p.name[0] == "."] == []


def test_install_keeps_the_owner(tmp_path, ca, good):
    dest = tmp_path / "ssl"
    write_pair(dest, ca.leaf("mail.example.test"))
    os.chown(dest / "cert.pem", 1234, 2345)
    fullchain, key = _files(tmp_path, good)
    certsync_mod.install(fullchain, key, str(dest))
    st = (dest / "cert.pem").stat()
    assert (st.st_uid, st.st_gid) == (1234, 2345)


def test_rollback_without_a_previous_pair_refuses_and_keeps_what_serves(tmp_path, good):
    dest = tmp_path / "ssl"
    dest.mkdir()
    fullchain, key = _files(tmp_path, good)
    certsync_mod.install(fullchain, key, str(dest))
    with pytest.raises(CommandExecutionError, match=r"cert\.pem\.certsync-prev: no such file"):
        certsync_mod.restore_previous(str(dest))
    assert (dest / "cert.pem").read_bytes() == good.fullchain_pem()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda d, other: (d / "key.pem.certsync-prev").unlink(),
            r"key\.pem\.certsync-prev: no such",
        ),
        (
            lambda d, other: (d / "key.pem.certsync-prev").write_bytes(other.key_pem()),
            "the previous key does not match the previous certificate",
        ),
        (
            lambda d, other: (d / "cert.pem.certsync-prev").write_bytes(b"junk"),
            "no PEM block found",
        ),
        (
            lambda d, other: (
                (d / "cert.pem.certsync-prev").unlink(),
                (d / "cert.pem.certsync-prev").symlink_to(d / "key.pem"),
            ),
            r"cert\.pem\.certsync-prev: is a symlink; refusing to read it",
        ),
    ],
    ids=["one-prev-file", "mismatched", "not-pem", "symlink-to-a-secret"],
)
def test_rollback_refuses_an_incomplete_or_foreign_previous_pair(
    tmp_path, ca, good, damage, message
):
    dest = tmp_path / "ssl"
    write_pair(dest, ca.leaf("mail.example.test"))
    fullchain, key = _files(tmp_path, good)
    certsync_mod.install(fullchain, key, str(dest))
    damage(dest, ca.leaf("mail.example.test"))
    with pytest.raises(CommandExecutionError, match=message):
        certsync_mod.restore_previous(str(dest))
    assert (dest / "cert.pem").read_bytes() == good.fullchain_pem()
    assert (dest / "key.pem").read_bytes() == good.key_pem()
    assert (dest / "cert.pem").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("suffix", ["/", "/.", "//"])
def test_a_trailing_slash_does_not_bypass_the_symlink_refusal(tmp_path, ca, good, suffix):
    real = tmp_path / "real"
    write_pair(real, ca.leaf("mail.example.test"))
    (tmp_path / "link").symlink_to(real)
    fullchain, key = _files(tmp_path, good)
    for call in (
        lambda: certsync_mod.install(fullchain, key, str(tmp_path / "link") + suffix),
        lambda: certsync_mod.restore_previous(str(tmp_path / "link") + suffix),
    ):
        with pytest.raises(CommandExecutionError, match="link: is a symlink on the way"):
            call()
    assert (real / "cert.pem").read_bytes() != good.fullchain_pem()


def test_a_relative_destination_is_refused(tmp_path, good):
    fullchain, key = _files(tmp_path, good)
    with pytest.raises(SaltInvocationError, match="must be an absolute path"):
        certsync_mod.install(fullchain, key, "relative/ssl")


def test_compare_sees_mode_drift(tmp_path, good):
    dest = tmp_path / "ssl"
    write_pair(dest, good)
    fullchain, key = _files(tmp_path, good)
    assert certsync_mod.compare(fullchain, key, str(dest))["current"] is True
    os.chmod(dest / "key.pem", 0o644)
    ret = certsync_mod.compare(fullchain, key, str(dest))
    assert ret["differences"] == ["key.pem has mode 0644, want 0600"]


def test_install_refuses_a_mismatched_pair_and_changes_nothing(tmp_path, ca, good):
    dest = tmp_path / "ssl"
    write_pair(dest, good)
    before = (dest / "cert.pem").read_bytes()
    fullchain, _ = _files(tmp_path, ca.leaf("mail.example.test"))
    _, key = write_pair(tmp_path / "k", ca.leaf("mail.example.test"), "c.pem", "k.pem")
    with pytest.raises(CommandExecutionError, match="does not match the certificate"):
        certsync_mod.install(fullchain, key, str(dest))
    assert (dest / "cert.pem").read_bytes() == before
    assert sorted(p.name for p in dest.iterdir()) == ["cert.pem", "key.pem"]


@pytest.fixture
def world_dir():
    """A directory outside pytest's private tmp dir, so another user can reach it."""
    path = tempfile.mkdtemp(prefix="certsync-test-")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path)


def test_unreadable_key_as_unprivileged_user(world_dir, good):
    """Permission denied is reported by file name (root would read anything)."""
    fullchain, key = write_pair(world_dir, good, "fullchain.pem", "privkey.pem")
    os.chmod(world_dir, 0o755)
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, then try
        code = 3
        try:
            os.setgid(65534)
            os.setuid(65534)
            problems = certsync_mod.validate(fullchain, key, "mail.example.test")["problems"]
            code = 0 if problems == [f"{key}: permission denied"] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_errors_never_carry_key_material(tmp_path, ca, good):
    fullchain, key = _files(tmp_path, good)
    secret = good.key_pem()
    body = b"".join(secret.splitlines()[1:-1]).decode()
    broken = secret.replace(body[10:40].encode(), b"!" * 30)
    (tmp_path / "src" / "privkey.pem").write_bytes(broken)
    ret = certsync_mod.validate(fullchain, key, "mail.example.test")
    assert ret["problems"] == [f"{key}: the private key is malformed or of an unsupported type"]
    assert body[:20] not in repr(ret)


def test_tlsa_of_the_issuer_needs_the_chain(tmp_path, good):
    leaf_only = tmp_path / "cert.pem"
    leaf_only.write_bytes(good.cert_pem())
    for usage in (0, 2):
        with pytest.raises(CommandExecutionError, match="holds only the leaf"):
            certsync_mod.tlsa(str(leaf_only), usage=usage)
    fullchain, _ = _files(tmp_path, good)
    assert certsync_mod.tlsa(fullchain, usage=2).startswith("2 1 1 ")


@pytest.mark.parametrize("name", ["1.2.3.4", "mail.example.123", "10.0.0.1"])
def test_an_address_is_no_dns_name(name):
    assert certsync_mod.is_dns_name(name) is False
    assert certsync_mod.name_matches(name, name) is False


def _immutable(path, on):
    """chattr +i/-i; False where the file system or the user cannot."""
    chattr = shutil.which("chattr")
    if not chattr:
        return False
    flag = "+i" if on else "-i"
    done = subprocess.run([chattr, flag, str(path)], capture_output=True, check=False)
    return done.returncode == 0


def test_a_failed_second_rename_puts_the_first_file_back(tmp_path, ca, good):
    """key.pem immutable (EPERM at its rename): cert.pem is put back, so the pair in
    mailcow's directory still matches, and the error names the directory."""
    dest = tmp_path / "ssl"
    old = ca.leaf("mail.example.test")
    write_pair(dest, old)
    fullchain, key = _files(tmp_path, good)
    if not _immutable(dest / "key.pem", True):
        pytest.skip("chattr +i is not possible here")
    try:
        with pytest.raises(CommandExecutionError, match=f"{dest}: install failed"):
            certsync_mod.install(fullchain, key, str(dest))
    finally:
        _immutable(dest / "key.pem", False)
    assert (dest / "cert.pem").read_bytes() == old.fullchain_pem()
    assert (dest / "key.pem").read_bytes() == old.key_pem()
    assert not [p.name for p in dest.iterdir() if ".certsync-" in p.name and "prev" not in p.name]


def test_a_failed_second_rename_of_a_first_install_leaves_no_half_pair(tmp_path, good, monkeypatch):
    dest = tmp_path / "ssl"
    dest.mkdir()
    fullchain, key = _files(tmp_path, good)
    real = os.replace

    def failing(src, dst):
        if str(dst).endswith("/key.pem"):
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(certsync_mod.os, "replace", failing)
    with pytest.raises(CommandExecutionError, match="Input/output error"):
        certsync_mod.install(fullchain, key, str(dest))
    assert not (dest / "cert.pem").exists() and not (dest / "key.pem").exists()


def test_leftovers_leave_a_directory_of_a_leftovers_name_alone(tmp_path, ca, good):
    """certsync.absent's clean-up: a directory named like a previous pair is not
    certsync's (it writes files only): left alone, never a crash."""
    dest = tmp_path / "ssl"
    write_pair(dest, good)
    (dest / "cert.pem.certsync-prev").mkdir()
    (dest / "key.pem.certsync-prev").write_bytes(good.key_pem())
    found = certsync_mod.leftovers(str(dest), remove=True)
    assert found == [str(dest / "key.pem.certsync-prev")]
    assert (dest / "cert.pem.certsync-prev").is_dir()
    assert not (dest / "key.pem.certsync-prev").exists()


def test_files_beside_the_pair_go_in_with_it_and_come_back_with_it(tmp_path, ca, good):
    """A kind's files (a per-name dir's ``domains``) are written with the pair, the
    replaced one kept and restored with it, and the service's own first version kept
    once under the name the kind gives (never overwritten after)."""
    dest = tmp_path / "ssl"
    old = ca.leaf("mail.example.test")
    write_pair(dest, old)
    (dest / "domains").write_text("mail.example.test other.example.test\n")
    fullchain, key = _files(tmp_path, good)
    kept = {"domains": "domains.orig"}
    assert certsync_mod.compare(fullchain, key, str(dest), files={"domains": "a\n"})[
        "differences"
    ] == ["cert.pem content differs", "key.pem content differs", "domains is to be rewritten"]
    certsync_mod.install(fullchain, key, str(dest), files={"domains": "a\n"}, originals=kept)
    assert (dest / "domains").read_text() == "a\n"
    assert (dest / "domains.certsync-prev").read_text() == "mail.example.test other.example.test\n"
    assert (dest / "domains.orig").read_text() == "mail.example.test other.example.test\n"
    assert certsync_mod.compare(fullchain, key, str(dest), files={"domains": "a\n"})["current"]
    certsync_mod.install(fullchain, key, str(dest), files={"domains": "b\n"}, originals=kept)
    assert (dest / "domains.orig").read_text() == "mail.example.test other.example.test\n"
    assert (dest / "domains.certsync-prev").read_text() == "a\n"
    certsync_mod.restore_previous(str(dest))
    assert (dest / "domains").read_text() == "a\n"
    left = certsync_mod.leftovers(str(dest), remove=True)
    assert sorted(os.path.basename(p) for p in left) == [
        ".certsync.lock",
        "cert.pem.certsync-prev",
        "domains.certsync-prev",
        "key.pem.certsync-prev",
    ]
    assert (dest / "domains.orig").exists() and (dest / "domains").exists()


@pytest.mark.parametrize("name", ["../domains", "cert.pem", "key.pem", "x.certsync-prev", ".hid"])
def test_a_file_beside_the_pair_must_be_a_plain_new_name(tmp_path, good, name):
    dest = tmp_path / "ssl"
    dest.mkdir()
    fullchain, key = _files(tmp_path, good)
    with pytest.raises(SaltInvocationError, match="cannot write"):
        certsync_mod.install(fullchain, key, str(dest), files={name: "x\n"})
    with pytest.raises(SaltInvocationError, match="cannot write"):
        certsync_mod.install(fullchain, key, str(dest), files={"a": "x\n"}, originals={"a": name})
    assert list(dest.iterdir()) == []
