"""Installs that race: several processes, each a salt.client.Caller of the real minion
modules, installing different pairs into one destination. The lock beside the pair
serialises them: no call fails, and the pair on disk (and the previous pair) always
matches."""

import multiprocessing

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from support import cases

from harness.pki import write_pair

# The lock beside the pair is certsync's own (fcntl), not the release's.
pytestmark = [pytest.mark.functional, pytest.mark.one_release]
PROCESSES = 4
ROUNDS = 300


def _install_many(config_file, fullchain, key, dest, rounds, results):
    import salt.client

    caller = salt.client.Caller(c_path=config_file)
    errors = []
    for _ in range(rounds):
        try:
            ret = caller.cmd("certsync.install", fullchain, key, dest)
            if not isinstance(ret, dict) or "fingerprint" not in ret:
                errors.append(repr(ret)[:300])
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
    results.put(errors)


def _matching(cert_path, key_path):
    cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def test_parallel_installs_leave_matching_pairs(salt_call, tmp_path, ca):
    layout = cases.make_layout(tmp_path, ca, ca.leaf(cases.HOST))
    sources = []
    for number in range(PROCESSES):
        issued = ca.leaf(cases.HOST, key_kind="ec-p256" if number % 2 else "rsa-2048")
        sources.append(
            write_pair(tmp_path / f"src{number}", issued, "fullchain.pem", "privkey.pem")
        )
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [
        context.Process(
            target=_install_many,
            args=(str(salt_call.config_file), fullchain, key, layout.dest, ROUNDS, results),
        )
        for fullchain, key in sources
    ]
    for worker in workers:
        worker.start()
    errors = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert errors == [[]] * PROCESSES
    dest = tmp_path / "mailcow" / "data" / "assets" / "ssl"
    assert _matching(dest / "cert.pem", dest / "key.pem")
    assert _matching(dest / "cert.pem.certsync-prev", dest / "key.pem.certsync-prev")
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".certsync")) == [
        "cert.pem",
        "cert.pem.certsync-prev",
        "key.pem",
        "key.pem.certsync-prev",
    ]
