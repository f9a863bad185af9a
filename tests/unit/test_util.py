"""The helpers the loader modules share (salt://_utils/certsync_util.py)."""

import hashlib
import os

import pytest
from cryptography.hazmat.primitives import serialization

from harness.loader import UTILS

replace_file = UTILS["certsync_util.replace_file"]
write_temp = UTILS["certsync_util.write_temp"]


def test_spki_hash_is_the_tlsa_3_1_1_data(good, ca):
    der = good.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert UTILS["certsync_util.spki_sha256"](good.key.public_key()) == (
        hashlib.sha256(der).hexdigest()
    )
    assert UTILS["certsync_util.same_key"](good.key.public_key(), good.cert.public_key())
    other = ca.leaf("mail.example.test")
    assert not UTILS["certsync_util.same_key"](good.key.public_key(), other.key.public_key())


def test_replace_file_is_private_by_default_and_leaves_no_temp(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("old")
    replace_file(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o600
    replace_file(str(path), b"shared", 0o644)
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path)) == ["record.json"]


def test_a_symlink_planted_at_the_temp_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    planted = tmp_path / f".key.pem.certsync-{os.getpid()}"
    planted.symlink_to(victim)
    temp = write_temp(str(tmp_path), "key.pem", b"secret", 0o600)
    assert victim.read_text() == "untouched"
    assert not os.path.islink(temp) and open(temp, "rb").read() == b"secret"  # noqa: SIM115


def test_a_missing_directory_is_an_error_not_a_partial_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        replace_file(str(tmp_path / "gone" / "x"), b"data")
    assert os.listdir(tmp_path) == []
