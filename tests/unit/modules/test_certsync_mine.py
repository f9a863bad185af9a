"""Unit tests of the sealed-key transport (loader mocked: the mine is a dict here)."""

import base64
import copy
import os

import pytest
import salt.channel.client
import salt.utils.mine
from salt.exceptions import CommandExecutionError, SaltInvocationError

from harness.loader import certsync_mod, mine_mod, salt_functions
from harness.pki import write_pair

SOURCE, CONSUMER, OTHER = "npm", "mailcow", "intruder"


class Mine:
    """What the master would hold, with the ACL the real mine applies."""

    def __init__(self):
        self.entries = {}  # (minion, name) -> (data, allow_tgt)
        self.events = []
        self.lookups = 0
        self.round_trips = 0  # requests that store mine data on the master

    def channel(self, opts):
        """What ``salt.channel.client.ReqChannel.factory`` gives the module: a
        request channel to this master."""
        return _Channel(self, opts)

    def get(self, tgt, name, tgt_type="glob"):
        self.lookups += 1
        targets = tgt if isinstance(tgt, list) else [tgt]
        me = certsync_mod.__opts__["id"]
        return {
            minion: data
            for (minion, entry), (data, allowed) in self.entries.items()
            if minion in targets and entry == name and me in allowed
        }


class _Channel:
    """A request channel to the Mine: stores ``_mine`` loads as the master does."""

    def __init__(self, mine, opts):
        self.mine, self.opts = mine, opts

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def send(self, load, timeout=None):
        assert (load["cmd"], load["id"], load["clear"]) == ("_mine", self.opts["id"], False)
        self.mine.round_trips += 1
        for name, wrapped in load["data"].items():
            assert wrapped[salt.utils.mine.MINE_ITEM_ACL_ID] == 1
            assert wrapped["allow_tgt_type"] == "list"
            data = wrapped[salt.utils.mine.MINE_ITEM_ACL_DATA]
            self.mine.entries[(load["id"], name)] = (data, wrapped["allow_tgt"])
        return True


@pytest.fixture
def mine(monkeypatch):
    mine = Mine()
    monkeypatch.setattr(salt.channel.client.ReqChannel, "factory", mine.channel)
    return mine


@pytest.fixture
def configure_loader_modules(tmp_path, mine):
    functions = {
        "mine.get": mine.get,
        "event.send": lambda tag, data: mine.events.append((tag, data)),
        **salt_functions(certsync_mod, "certsync"),
        **salt_functions(mine_mod, "certsync_mine"),
    }
    opts = {"id": SOURCE, "pki_dir": str(tmp_path / "pki"), "cachedir": str(tmp_path / "cache")}
    context = {}
    return {
        module: {"__context__": context, "__opts__": opts, "__salt__": functions}
        for module in (certsync_mod, mine_mod)
    }


def as_minion(minion_id, tmp_path):
    for module in (certsync_mod, mine_mod):
        module.__opts__["id"] = minion_id
        module.__opts__["pki_dir"] = str(tmp_path / minion_id / "pki")
        module.__opts__["cachedir"] = str(tmp_path / minion_id / "cache")


@pytest.fixture
def published(tmp_path, good):
    """The consumer's recipient key in the mine, then the source's publication."""
    for consumer in (CONSUMER, OTHER):
        as_minion(consumer, tmp_path)
        mine_mod.publish_recipient_key([SOURCE])
    as_minion(SOURCE, tmp_path)
    fullchain, key = write_pair(tmp_path / "live", good, "fullchain.pem", "privkey.pem")
    return mine_mod.publish(fullchain, key, [CONSUMER, OTHER], "mail.example.test")


def _open_as(minion, tmp_path, fingerprint=None):
    as_minion(minion, tmp_path)
    staging = tmp_path / minion / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    return mine_mod.fetch_published(SOURCE, str(staging), fingerprint)


def test_the_consumer_opens_its_key(tmp_path, good, published, mine):
    assert published["consumers"] == sorted([CONSUMER, OTHER])
    assert mine.events == [
        (
            "certsync/published",
            {
                "fingerprint": good.fingerprint,
                "not_after": published["not_after"],
                "consumers": sorted([CONSUMER, OTHER]),
            },
        )
    ]
    opened = _open_as(CONSUMER, tmp_path, good.fingerprint)
    assert opened["fingerprint"] == good.fingerprint
    with open(opened["privkey"], "rb") as handle:
        assert handle.read() == good.key_pem()
    assert os.stat(opened["privkey"]).st_mode & 0o777 == 0o600


def test_every_consumer_is_published_in_one_round_trip(tmp_path, good, mine):
    consumers = [f"mailcow-{n}" for n in range(5)]
    for consumer in consumers:
        as_minion(consumer, tmp_path)
        mine_mod.publish_recipient_key([SOURCE])
    as_minion(SOURCE, tmp_path)
    mine.round_trips, mine.lookups = 0, 0
    fullchain, key = write_pair(tmp_path / "live", good, "fullchain.pem", "privkey.pem")
    done = mine_mod.publish(fullchain, key, consumers, "mail.example.test")
    assert done["consumers"] == consumers
    assert (mine.round_trips, mine.lookups) == (1, 1)
    for consumer in consumers:
        entry, allowed = mine.entries[(SOURCE, mine_mod._cert_mine_name(consumer))]
        assert allowed == [consumer]
        assert list(entry["sealed"]) == [consumer]
        assert _open_as(consumer, tmp_path, good.fingerprint)["fingerprint"] == good.fingerprint


def test_a_master_that_does_not_store_is_an_error(tmp_path, good, mine, monkeypatch):
    as_minion(CONSUMER, tmp_path)
    mine_mod.publish_recipient_key([SOURCE])
    as_minion(SOURCE, tmp_path)
    fullchain, key = write_pair(tmp_path / "live", good, "fullchain.pem", "privkey.pem")
    monkeypatch.setattr(_Channel, "send", lambda self, load, timeout=None: {})
    with pytest.raises(CommandExecutionError, match="did not store the mine entries certsync_cert"):
        mine_mod.publish(fullchain, key, [CONSUMER], "mail.example.test")
    assert mine.events == []  # nothing announced that the master does not hold


def test_a_masterless_minion_has_no_mine_to_publish_to(tmp_path, mine):
    as_minion(CONSUMER, tmp_path)
    mine_mod.__opts__["file_client"] = "local"
    with pytest.raises(CommandExecutionError, match="need a master"):
        mine_mod.publish_recipient_key([SOURCE])
    assert mine.round_trips == 0


def test_each_entry_is_readable_by_its_consumer_only(tmp_path, published, mine):
    as_minion(OTHER, tmp_path)
    assert mine.get(SOURCE, mine_mod._cert_mine_name(CONSUMER)) == {}
    as_minion("bystander", tmp_path)
    assert mine.get(SOURCE, mine_mod._cert_mine_name(OTHER)) == {}


def test_a_blob_replayed_for_another_consumer_does_not_open(tmp_path, published, mine):
    entry_for_other, _ = mine.entries[(SOURCE, mine_mod._cert_mine_name(OTHER))]
    forged = copy.deepcopy(entry_for_other)
    forged["sealed"] = {CONSUMER: entry_for_other["sealed"][OTHER]}
    mine.entries[(SOURCE, mine_mod._cert_mine_name(CONSUMER))] = (forged, [CONSUMER])
    with pytest.raises(CommandExecutionError, match="does not open for mailcow"):
        _open_as(CONSUMER, tmp_path)


def test_a_blob_rebound_to_another_certificate_does_not_open(tmp_path, ca, published, mine):
    name = mine_mod._cert_mine_name(CONSUMER)
    entry, allowed = mine.entries[(SOURCE, name)]
    other = ca.leaf("mail.example.test")
    forged = dict(entry, fingerprint=other.fingerprint, chain_pem=other.fullchain_pem().decode())
    mine.entries[(SOURCE, name)] = (forged, allowed)
    with pytest.raises(CommandExecutionError, match="does not open for mailcow and certificate"):
        _open_as(CONSUMER, tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "is not a certsync v1 entry"),
        ({"fingerprint": "zz"}, "has no valid fingerprint"),
        ({"source": "elsewhere"}, "claims to come from 'elsewhere'"),
        ({"chain_pem": "x" * 300_000}, "has no usable chain"),
        ({"sealed": {}}, "holds no key sealed for mailcow"),
        ({"sealed": ["mailcow"]}, "holds no key sealed for mailcow"),
        ({"sealed": "mailcow"}, "holds no key sealed for mailcow"),
        ({"sealed": True}, "holds no key sealed for mailcow"),
        ({"sealed": 7}, "holds no key sealed for mailcow"),
        ({"sealed": {CONSUMER: ["x"]}}, "holds no key sealed for mailcow"),
        ({"fingerprint": "ab" * 32 + "\n"}, "has no valid fingerprint"),
        ({"chain_pem": ["-----BEGIN CERTIFICATE-----"]}, "has no usable chain"),
        ({"sealed": {CONSUMER: "!!not base64!!"}}, "does not open for mailcow"),
    ],
)
def test_a_malformed_entry_is_refused(tmp_path, published, mine, change, message):
    name = mine_mod._cert_mine_name(CONSUMER)
    entry, allowed = mine.entries[(SOURCE, name)]
    mine.entries[(SOURCE, name)] = (dict(entry, **change), allowed)
    with pytest.raises(CommandExecutionError, match=message):
        _open_as(CONSUMER, tmp_path)


def test_a_chain_that_is_not_the_claimed_certificate_is_refused(tmp_path, ca, published, mine):
    name = mine_mod._cert_mine_name(CONSUMER)
    entry, allowed = mine.entries[(SOURCE, name)]
    swapped = dict(entry, chain_pem=ca.leaf("mail.example.test").fullchain_pem().decode())
    mine.entries[(SOURCE, name)] = (swapped, allowed)
    with pytest.raises(CommandExecutionError, match="does not match its fingerprint"):
        _open_as(CONSUMER, tmp_path)


def test_the_announced_fingerprint_must_match(tmp_path, published):
    with pytest.raises(CommandExecutionError, match="not for the announced"):
        _open_as(CONSUMER, tmp_path, "a" * 64)
    with pytest.raises(SaltInvocationError, match="is not a SHA-256 hex digest"):
        _open_as(CONSUMER, tmp_path, "../../etc")


def test_publishing_again_is_quiet_until_something_changes(tmp_path, ca, good, published, mine):
    fullchain, key = (
        str(tmp_path / "live" / "fullchain.pem"),
        str(tmp_path / "live" / "privkey.pem"),
    )
    again = mine_mod.publish(fullchain, key, [CONSUMER, OTHER], "mail.example.test")
    assert again["changed"] is False
    assert len(mine.events) == 1
    renewed = ca.leaf("mail.example.test", key=good.key)
    write_pair(tmp_path / "live", renewed, "fullchain.pem", "privkey.pem")
    assert mine_mod.publish(fullchain, key, [CONSUMER, OTHER], test=True)["changed"] is True
    assert len(mine.events) == 1
    mine_mod.publish(fullchain, key, [CONSUMER, OTHER])
    assert mine.events[-1][1]["fingerprint"] == renewed.fingerprint


def test_no_plaintext_key_leaves_the_source(tmp_path, good, published, mine):
    body = b"".join(good.key_pem().splitlines()[1:-1]).decode()
    der_b64 = base64.b64encode(good.key_der()).decode()
    blob = repr(mine.entries) + repr(mine.events) + repr(published)
    assert body[:40] not in blob
    assert der_b64[:40] not in blob


def test_a_missing_recipient_key_is_reported(tmp_path, good):
    fullchain, key = write_pair(tmp_path / "live", good, "fullchain.pem", "privkey.pem")
    ret = mine_mod.publish(fullchain, key, [CONSUMER], "mail.example.test")
    assert ret["missing_recipient_key"] == [CONSUMER]
    assert ret["consumers"] == []


def test_the_recipient_key_is_made_once_and_private(tmp_path):
    as_minion(CONSUMER, tmp_path)
    first = mine_mod.recipient_key()
    again = mine_mod.recipient_key()
    assert first["created"] is True
    assert again["created"] is False
    assert again["public"] == first["public"]
    path = tmp_path / CONSUMER / "pki" / "certsync_recipient.pem"
    assert path.stat().st_mode & 0o777 == 0o600


def test_hostile_minion_ids_are_refused():
    with pytest.raises(SaltInvocationError, match="is not a usable minion id"):
        mine_mod._cert_mine_name("../x")


def test_one_mine_lookup_per_publication(tmp_path, ca, good, published, mine):
    renewed = ca.leaf("mail.example.test", key=good.key)
    fullchain, key = write_pair(tmp_path / "live", renewed, "fullchain.pem", "privkey.pem")
    before = mine.lookups
    mine_mod.publish(fullchain, key, [CONSUMER, OTHER])
    assert mine.lookups - before == 1


def test_an_unusable_recipient_key_is_refused(tmp_path, good):
    fullchain, key = write_pair(tmp_path / "live", good, "fullchain.pem", "privkey.pem")
    with pytest.raises(SaltInvocationError, match="the recipient key of mailcow is not usable"):
        mine_mod.seal_payload(fullchain, key, {CONSUMER: "bm90IGEga2V5"})


def test_recipient_key_in_test_mode_makes_and_sends_nothing(tmp_path, mine):
    as_minion(CONSUMER, tmp_path)
    path = tmp_path / CONSUMER / "pki" / "certsync_recipient.pem"
    assert mine_mod.publish_recipient_key([SOURCE], test=True)["created"] is True
    assert not path.exists()
    assert mine.entries == {}
    mine_mod.publish_recipient_key([SOURCE])
    assert mine_mod.publish_recipient_key([SOURCE], test=True)["created"] is False


def test_a_route_has_entries_and_events_of_its_own(tmp_path, ca, good, published, mine):
    """A route of certsync:certificates: its own entry per consumer, named in the event;
    the default route's entry stays as it was."""
    other = ca.leaf("mail.b.example.test")
    fullchain, key = write_pair(tmp_path / "live-b", other, "fullchain.pem", "privkey.pem")
    done = mine_mod.publish(fullchain, key, [CONSUMER], "mail.b.example.test", route="b")
    assert done["route"] == "b"
    assert mine.events[-1] == (
        "certsync/published",
        {
            "fingerprint": other.fingerprint,
            "not_after": done["not_after"],
            "consumers": [CONSUMER],
            "route": "b",
        },
    )
    entry, allowed = mine.entries[(SOURCE, f"certsync_route_b_{CONSUMER}")]
    assert (entry["route"], allowed) == ("b", [CONSUMER])
    as_minion(CONSUMER, tmp_path)
    staging = tmp_path / CONSUMER / "staging-b"
    staging.mkdir(parents=True)
    opened = mine_mod.fetch_published(SOURCE, str(staging), other.fingerprint, route="b")
    assert opened["fingerprint"] == other.fingerprint
    assert _open_as(CONSUMER, tmp_path, good.fingerprint)["fingerprint"] == good.fingerprint


def test_an_entry_moved_to_another_route_does_not_open(tmp_path, ca, published, mine):
    """The sealed key is bound to its route: the default route's entry, stored under a
    route's name (and claiming it), does not open there."""
    entry, allowed = mine.entries[(SOURCE, mine_mod._cert_mine_name(CONSUMER))]
    mine.entries[(SOURCE, f"certsync_route_b_{CONSUMER}")] = (dict(entry), allowed)
    as_minion(CONSUMER, tmp_path)
    staging = tmp_path / "staging-moved"
    staging.mkdir()
    with pytest.raises(CommandExecutionError, match="claims the route None, not b"):
        mine_mod.fetch_published(SOURCE, str(staging), route="b")
    mine.entries[(SOURCE, f"certsync_route_b_{CONSUMER}")] = (dict(entry, route="b"), allowed)
    with pytest.raises(CommandExecutionError, match="does not open for mailcow"):
        mine_mod.fetch_published(SOURCE, str(staging), route="b")
    assert not (staging / "privkey.pem").exists()


def test_a_bad_route_name_publishes_nothing(tmp_path, good, published, mine):
    fullchain, key = write_pair(tmp_path / "live-x", good, "fullchain.pem", "privkey.pem")
    stored = dict(mine.entries)
    with pytest.raises(SaltInvocationError, match="'a_b' is no route name"):
        mine_mod.publish(fullchain, key, [CONSUMER], "mail.example.test", route="a_b")
    assert mine.entries == stored
