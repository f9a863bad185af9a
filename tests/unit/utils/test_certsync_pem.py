"""The certificate library (salt/_utils/certsync_pem.py) on its own."""

import datetime
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from salt.exceptions import CommandExecutionError

from harness.loader import UTILS
from harness.pki import write_pair


def pem(name):
    return UTILS[f"certsync_pem.{name}"]


def test_spki_hash_is_the_tlsa_3_1_1_data(good, ca):
    der = good.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pem("spki_sha256")(good.key.public_key()) == hashlib.sha256(der).hexdigest()
    assert pem("same_key")(good.key.public_key(), good.cert.public_key())
    other = ca.leaf("mail.example.test")
    assert not pem("same_key")(good.key.public_key(), other.key.public_key())


def test_a_chain_is_read_with_its_facts(tmp_path, good):
    fullchain, _ = write_pair(tmp_path, good, "fullchain.pem", "privkey.pem")
    certs = pem("read_certs")(str(fullchain))
    assert pem("fingerprint")(certs[0]) == good.fingerprint
    assert "mail.example.test" in pem("dns_sans")(certs[0])
    assert pem("covers")(certs[0], "MAIL.example.test")
    summary = pem("cert_summary")(certs[0], datetime.datetime.now(datetime.timezone.utc))
    assert summary["fingerprint"] == good.fingerprint and summary["not_after"].endswith("Z")


def test_a_key_in_a_certificate_file_is_refused_naming_the_file(tmp_path, good):
    path = tmp_path / "cert.pem"
    path.write_bytes(good.fullchain_pem() + good.key_pem())
    with pytest.raises(CommandExecutionError, match=r"cert\.pem: holds a private key"):
        pem("read_certs")(str(path))


@pytest.mark.parametrize(
    ("when", "shown"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1796000000.7, "2026-11-30T00:53:20Z"),
        (
            datetime.datetime(
                2026, 11, 30, 2, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
            ),
            "2026-11-30T01:00:00Z",
        ),
    ],
)
def test_one_time_format_for_epochs_and_datetimes(when, shown):
    assert pem("iso")(when) == shown


@pytest.mark.parametrize(
    ("pattern", "hostname", "matches"),
    [
        ("*.example.test", "mail.example.test", True),
        ("*.example.test", "example.test", False),
        ("*.example.test", "a.mail.example.test", False),
        ("mail.example.test", "MAIL.EXAMPLE.TEST", True),
        ("m*.example.test", "mail.example.test", False),
    ],
)
def test_rfc_6125_matching(pattern, hostname, matches):
    assert pem("name_matches")(pattern, hostname) is matches
