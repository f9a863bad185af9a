"""
The second real source: Debian's Caddy 2.6 obtaining its certificate from
pebble, read through certsync_source with kind=caddy exactly as the npm kind
is. Pebble's certificates last five years, so what changes them here is the
re-issue Caddy makes when its stored certificate is removed and its
configuration reloaded (Caddy 2.6 keeps the stored key), and a new site
directory (a new key).
"""

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from harness.caddy import Caddy

pytestmark = pytest.mark.functional
HOST = "mail.example.test"


@pytest.fixture
def caddy(tmp_path, pebble):
    server = Caddy(tmp_path / "caddy", pebble, HOST)
    server.start()
    yield server
    server.stop()


def _facts(pem):
    """The leaf's fingerprint and its SPKI hash (what a TLSA 3 1 1 record pins)."""
    leaf = x509.load_pem_x509_certificates(pem)[0]
    spki = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return leaf.fingerprint(hashes.SHA256()).hex(), hashlib.sha256(spki).hexdigest()


def _source(salt_call, function, caddy, *more):
    ret = salt_call(
        f"certsync_source.{function}", HOST, "kind=caddy", f"storage={caddy.storage}", *more
    )
    return ret


def test_caddys_pair_is_found_and_its_renewal_keeps_the_key(salt_call, caddy):
    found = _source(salt_call, "locate", caddy)
    assert found.returncode == 0, found
    assert found.data["fullchain"] == str(caddy.crt)
    assert found.data["privkey"] == str(caddy.crt.with_suffix(".key"))
    info = salt_call("certsync.info", found.data["fullchain"]).data
    assert info["fingerprint"] == _facts(caddy.crt.read_bytes())[0]
    assert info["chain_length"] == 2  # Caddy stores the chain, leaf first
    renewal = _source(salt_call, "renewal", caddy).data
    assert (renewal["caddy_version"], renewal["next_renewal_keeps_key"]) == ("2.6.2", True), renewal
    kept = _source(salt_call, "keep_key", caddy)
    assert kept.returncode == 0 and kept.data["changed"] is False, kept
    assert "Caddy 2.6.2" in kept.data["where"]


def test_a_reissue_is_seen_and_keeps_the_key_a_new_site_gets_a_new_one(salt_call, caddy):
    watched = _source(salt_call, "watched", caddy).data
    assert str(caddy.crt) in watched
    first = _facts(caddy.crt.read_bytes())
    second = _facts(caddy.reissue())
    assert second[0] != first[0] and second[1] == first[1]  # new certificate, same key
    assert _source(salt_call, "locate", caddy).data["fullchain"] == str(caddy.crt)
    assert salt_call("certsync.info", str(caddy.crt)).data["fingerprint"] == second[0]
    third = _facts(caddy.new_key())
    assert third[1] != first[1]  # the stored key was gone: a new one


def test_the_caddy_source_refuses_what_it_cannot_use(salt_call, tmp_path):
    ret = salt_call("certsync_source.locate", HOST, "kind=caddy", "storage=relative")
    assert ret.returncode != 0 and "storage, Caddy's storage root" in ret.stderr + ret.stdout
    ret = salt_call("certsync_source.locate", HOST, "kind=caddy", f"storage={tmp_path}")
    assert ret.returncode != 0 and "cannot list" in ret.stderr + ret.stdout
