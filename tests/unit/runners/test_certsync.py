"""The fleet view's verdict on a source whose next renewal would break a pinned TLSA record.

The runner asks the minions through Salt's LocalClient and reads the master's
mine cache; both are stood in for here with what minions answer."""

import pytest

from harness.loader import load_loader_module

runner = load_loader_module("runners", "certsync")
FP = "ab" * 32
RECORD = "3 1 1 " + "cd" * 32


class _Client:
    def __init__(self, views):
        self.views = views

    def cmd(self, minions, fun, **_):
        assert fun == "certsync_status.report"
        return {m: self.views[m] for m in minions if m in self.views}


FP_B = "cd" * 32


class _Cache:
    """The master's cache: the source's mine where this Salt keeps it (3006 or 3007+)."""

    def fetch(self, bank, key):
        if (bank, key) in (("mine", "npm"), ("minions/npm", "mine")):
            return {
                "certsync_cert_mailcow": {"fingerprint": FP},
                "certsync_route_b_mailcow": {"fingerprint": FP_B},
            }
        return {}


class _Keys:
    def __init__(self, accepted):
        self.accepted = accepted

    def list_status(self, status):
        assert status == "accepted"
        return {"minions": self.accepted}


def _views(keeps_key, tlsa_records):
    consumer = {
        "role": "consumer",
        "deployed": FP,
        "served": {"smtp": FP},
        "days_left": 60,
    }
    if tlsa_records is not None:
        consumer["tlsa"] = {
            "deployed_matches": bool(tlsa_records),
            "matching_records": tlsa_records,
            "stale": [],
        }
    return {
        "npm": {
            "role": "source",
            "fingerprint": FP,
            "renewal": {"lineage": "npm-5", "next_renewal_keeps_key": keeps_key},
        },
        "mailcow": consumer,
    }


@pytest.fixture
def run(monkeypatch):
    def status(views, accepted=None, known=None):
        accepted = ["npm", *views] if accepted is None else accepted
        known = known or {"npm": {"default": ["mailcow"]}}
        monkeypatch.setattr(runner.salt.client, "get_local_client", lambda _: _Client(views))
        monkeypatch.setattr(runner.salt.cache, "factory", lambda _: _Cache())
        monkeypatch.setattr(runner.salt.key, "get_key", lambda _: _Keys(accepted))
        monkeypatch.setattr(runner, "routes", lambda by_route: known)
        runner.__opts__ = {"conf_file": "master"}
        return runner.status()

    return status


def test_a_new_key_at_the_next_renewal_with_a_pinning_record_fails(run):
    ret = run(_views(keeps_key=False, tlsa_records=[RECORD]))
    assert ret["result"] is False and ret["retcode"] == 1
    source = ret["sources"]["npm"]
    assert source["tlsa_pinned_by"] == ["mailcow"]
    assert source["error"].startswith("the next renewal makes a new key, and a published TLSA")
    assert ret["consumers"]["mailcow"]["agree"] is True


@pytest.mark.parametrize(
    ("keeps_key", "records"),
    [(True, [RECORD]), (False, None), (False, ["3 0 1 " + "ef" * 32]), (False, [])],
    ids=["key-kept", "no-dane", "cert-pinned-not-key", "no-match"],
)
def test_otherwise_the_source_row_passes(run, keeps_key, records):
    ret = run(_views(keeps_key, records))
    assert ret["sources"]["npm"]["result"] is True
    assert "error" not in ret["sources"]["npm"]


@pytest.mark.parametrize("relay_ok", [True, False])
def test_a_consumer_whose_mail_does_not_leave_fails_the_fleet(run, relay_ok):
    views = _views(keeps_key=True, tlsa_records=None)
    views["mailcow"]["relay"] = {"relay": "mail.smtp2go.com:2525", "ok": relay_ok, "blocked": []}
    ret = run(views)
    assert ret["consumers"]["mailcow"]["relay"]["ok"] is relay_ok
    assert (ret["result"], ret["consumers"]["mailcow"]["agree"]) == (relay_ok, relay_ok)


def test_a_renewal_file_certbot_refuses_fails_the_source_row(run):
    """certbot skips the lineage, so it never renews: with DANE or without."""
    views = _views(keeps_key=True, tlsa_records=None)
    refused = "/etc/nginx/letsencrypt/renewal/npm-5.conf: certbot refuses this renewal file (x)"
    views["npm"]["renewal"] = {"error": refused}
    ret = run(views)
    assert (ret["result"], ret["retcode"]) == (False, 1)
    assert ret["sources"]["npm"]["result"] is False
    assert ret["sources"]["npm"]["error"] == f"certbot's renewal of this lineage: {refused}"


def test_every_consumer_that_does_not_agree_says_why(run):
    views = _views(keeps_key=True, tlsa_records=None)
    views["mailcow"]["served"] = {"smtp": FP, "imaps": "cd" * 32}
    views["mailcow"]["unreachable"] = {"pop3": "ConnectionRefusedError: [Errno 111]"}
    row = run(views)["consumers"]["mailcow"]
    assert row["agree"] is False
    assert row["error"] == (
        "imaps serves cdcdcdcdcdcdcdcd...; pop3 answers no TLS handshake "
        "(ConnectionRefusedError: [Errno 111])"
    )


@pytest.mark.parametrize(
    ("view", "accepted", "error"),
    [
        (
            None,
            ["npm", "mail.example.test"],
            "no minion with the id 'mailcow' is accepted on this master (salt-key -L): the "
            "pillar must name the consumer by its minion id",
        ),
        (None, ["npm", "mailcow"], "mailcow did not answer within 60 s"),
        (
            {"role": None, "why": "this minion's id is 'mailcow', but ..."},
            ["npm", "mailcow"],
            "it does not take itself for a consumer: this minion's id is 'mailcow', but ...",
        ),
    ],
    ids=["id-not-accepted", "silent", "no-role"],
)
def test_a_consumer_that_is_not_there_says_why(run, view, accepted, error):
    views = _views(keeps_key=True, tlsa_records=None)
    if view is None:
        del views["mailcow"]
    else:
        views["mailcow"] = view
    row = run(views, accepted)["consumers"]["mailcow"]
    assert (row["agree"], row["error"]) == (False, error)


def test_a_paused_consumer_says_so_when_it_lags(run):
    views = _views(keeps_key=True, tlsa_records=None)
    views["mailcow"]["paused"] = "rolled back from abababababababab... by certsync.rolled_back"
    assert run(views)["consumers"]["mailcow"]["agree"] is True  # nothing differs
    views["mailcow"]["deployed"] = "cd" * 32
    row = run(views)["consumers"]["mailcow"]
    assert row["error"].startswith(
        "deploys are paused (rolled back from abababababababab... by certsync.rolled_back); "
        "deployed cdcdcdcdcdcdcdcd..., not the source's abababababababab..."
    )


def test_each_route_has_rows_of_its_own(run):
    """A route of certsync:certificates: its rows ``<minion>/<route>``, against the
    route's parts of the reports and its own mine entry."""
    views = _views(keeps_key=True, tlsa_records=None)
    views["npm"]["routes"] = {"b": {"role": "source", "fingerprint": FP_B, "renewal": {}}}
    views["mailcow"]["routes"] = {
        "b": {"role": "consumer", "deployed": FP_B, "served": {"smtp": "ee" * 32}}
    }
    ret = run(views, known={"npm": {"default": ["mailcow"], "b": ["mailcow"]}})
    assert ret["consumers"]["mailcow"]["agree"] is True
    row = ret["consumers"]["mailcow/b"]
    assert (row["route"], row["mine_fingerprint"], row["deployed_fingerprint"]) == (
        "b",
        FP_B,
        FP_B,
    )
    assert row["agree"] is False and row["error"] == f"smtp serves {'ee' * 8}..."
    assert ret["sources"]["npm/b"]["fingerprint"] == FP_B
    assert ret["result"] is False
