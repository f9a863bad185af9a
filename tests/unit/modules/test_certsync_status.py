"""certsync_status's TLSA view (loader mocked): after a roll back the deployed pair and
the one the source publishes differ, and the record of either is never called stale.
The zone's answer is stood in for by the records it holds; which record matches which
certificate is certsync.tlsa's real computation over the real files."""

import pytest

from harness.loader import UTILS, certsync_mod, status_mod
from harness.pki import write_pair

HOST = "mail.example.test"
NAME = f"_25._tcp.{HOST}"


def _zone_answer(records):
    """maildns.tlsa_check over ``records`` (the zone's answer), matching by certsync.tlsa."""

    def tlsa_check(hostname, certs, **_):
        wanted = {label: certsync_mod.tlsa(path) for label, path in certs.items()}
        table = [
            {"record": r, "matches": [label for label, w in wanted.items() if w == r]}
            for r in records
        ]
        return {
            "name": NAME,
            "records": table,
            "matching": {label: any(label in row["matches"] for row in table) for label in certs},
            "stale": [row["record"] for row in table if not row["matches"]],
        }

    return tlsa_check


@pytest.fixture
def configure_loader_modules():
    return {
        certsync_mod: {"__context__": {}, "__opts__": {"test": False}},
        status_mod: {"__salt__": {}, "__utils__": UTILS, "__opts__": {"id": "mailcow"}},
    }


def test_neither_the_deployed_nor_the_sources_record_is_stale(tmp_path, ca, monkeypatch):
    rolled_back_to, source_now, gone = (ca.leaf(HOST) for _ in range(3))
    write_pair(tmp_path / "ssl", rolled_back_to)
    chain = source_now.fullchain_pem().decode()
    source_pem = tmp_path / "source.pem"
    source_pem.write_text(chain)
    records = [
        certsync_mod.tlsa(str(tmp_path / "ssl" / "cert.pem")),
        certsync_mod.tlsa(str(source_pem)),
        "3 1 1 " + gone.spki_sha256,
    ]
    salt = {
        "certsync_dane.dane_lookup": lambda dane: {},
        "maildns.tlsa_check": _zone_answer(records),
        "certsync_mine.published_chain": lambda source, route=None: chain,
    }
    monkeypatch.setattr(status_mod, "__salt__", salt)
    settings = {"hostname": HOST, "dane": True, "source": "npm", "route": "default"}
    view = status_mod._tlsa_status(settings, str(tmp_path / "ssl"))
    assert view["stale"] == [records[2]]  # only the record of a key neither holds
    assert (view["deployed_matches"], view["source_matches"]) == (True, True)
    assert sorted(view["matching_records"]) == sorted(records[:2])


def test_without_a_publication_the_deployed_record_alone_decides(tmp_path, ca, monkeypatch):
    deployed = ca.leaf(HOST)
    write_pair(tmp_path / "ssl", deployed)
    records = [certsync_mod.tlsa(str(tmp_path / "ssl" / "cert.pem")), "3 1 1 " + "ab" * 32]

    def no_entry(source, route=None):
        raise status_mod.CommandExecutionError("the mine holds no certsync_cert_mailcow entry")

    salt = {
        "certsync_dane.dane_lookup": lambda dane: {},
        "maildns.tlsa_check": _zone_answer(records),
        "certsync_mine.published_chain": no_entry,
    }
    monkeypatch.setattr(status_mod, "__salt__", salt)
    settings = {"hostname": HOST, "dane": True, "source": "npm", "route": "default"}
    view = status_mod._tlsa_status(settings, str(tmp_path / "ssl"))
    assert view["stale"] == [records[1]] and "source_matches" not in view
