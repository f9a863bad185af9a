"""
The DANE rollover through Cloudflare's API (``dane:update:provider:
cloudflare``), through salt-call --local: the official library, with strict
response validation, against the v4 API stand-in of ``harness.cloudflare_api``,
whose records are written through to a real Knot zone. A key change is
published, waited for on the zone's authoritative server, deployed, and the
old record deleted by its id; every failure leaves the old pair and the old
record in place, names the problem, never shows the token, and the next run
goes on.
"""

import json
import pathlib

import pytest
from support import cases

from harness.cloudflare_api import CloudflareApi
from harness.knot import UpdatableDNS
from harness.mailcow_stack import free_port
from harness.pki import write_pair

pytestmark = pytest.mark.functional
HOST = cases.HOST
TLSA_NAME = f"_25._tcp.{HOST}"
TTL = 2
TOKEN = "cf-test-token-" + "7" * 26
OTHER = {"usage": 2, "selector": 1, "matching_type": 1, "certificate": "ab" * 32}
OTHER_RECORD = "2 1 1 " + "ab" * 32


@pytest.fixture
def knot(tmp_path):
    server = UpdatableDNS(tmp_path / "knot").start(["mail IN A 127.0.0.1"], ttl=TTL)
    yield server
    server.stop()


@pytest.fixture
def cloudflare(knot):
    """The stand-in, paging by 2 (so listings span pages), its automatic TTL the zone's."""
    api = CloudflareApi(knot, auto_ttl=TTL, max_per_page=2).start()
    yield api
    api.stop()


@pytest.fixture
def rollover(salt_call, tmp_path, ca, knot, cloudflare):
    """A deployed pair with its record at Cloudflare beside another one; a new key at NPM."""
    serving = ca.leaf(HOST, key_kind="ec-p256")
    layout = cases.make_layout(tmp_path, ca, serving)
    old_record = salt_call("certsync.tlsa", f"{layout.dest}/cert.pem").data
    usage, selector, mtype, cert = old_record.split()
    cloudflare.seed(TLSA_NAME, OTHER)
    cloudflare.seed(
        TLSA_NAME,
        {
            "usage": int(usage),
            "selector": int(selector),
            "matching_type": int(mtype),
            "certificate": cert,
        },
    )
    new = ca.leaf(HOST, key_kind="ec-p256")
    write_pair(layout.source, new, "fullchain.pem", "privkey.pem")
    new_record = salt_call("certsync.tlsa", f"{layout.source}/fullchain.pem").data
    assert knot.tlsa(TLSA_NAME) == {old_record, OTHER_RECORD}
    return layout, serving, new, old_record, new_record


def _pillar(token=TOKEN):
    return {"certsync": {"consumer_defaults": {"dane": {"update": {"api_token": token}}}}}


def _state_kwargs(layout, cloudflare, max_wait=30):
    dane = cloudflare.dane(max_wait=max_wait)
    return {
        "name": layout.dest,
        "hostname": HOST,
        "source": layout.source,
        "dane": json.dumps(dane),
    }


def _deploy(salt_call, layout, cloudflare, max_wait=30):
    with salt_call.pillar(_pillar()):
        return salt_call.state(**_state_kwargs(layout, cloudflare, max_wait))


def _retire(salt_call, layout, cloudflare):
    with salt_call.pillar(_pillar()):
        return salt_call(
            "certsync_dane.tlsa_retire",
            HOST,
            f"{layout.dest}/cert.pem",
            json.dumps(cloudflare.dane(max_wait=5)),
        )


def _held(cloudflare):
    return sorted(r["content"] for r in cloudflare.records.values())


def _files_holding(root, needle):
    return [
        str(p)
        for p in pathlib.Path(root).rglob("*")
        if p.is_file() and not p.is_symlink() and needle.encode() in p.read_bytes()
    ]


def test_a_key_change_rolls_over_through_cloudflare_and_the_token_is_never_shown(
    salt_call, rollover, knot, cloudflare
):
    layout, _, new, old_record, new_record = rollover
    cloudflare.token(TOKEN)
    old_id = next(i for i, r in cloudflare.records.items() if r["content"] == old_record)
    with salt_call.pillar(_pillar()):
        args = [f"{k}={v}" for k, v in _state_kwargs(layout, cloudflare).items()]
        run = salt_call("-l", "trace", "state.single", "certsync.deployed", *args)
    (ret,) = run.data.values()
    assert (run.returncode, ret["result"]) == (0, True), ret["comment"]
    assert ret["changes"]["tlsa"] == {"added": new_record}
    assert ret["changes"]["new"]["fingerprint"] == new.fingerprint
    assert (
        "DANE: every authoritative server (1) serves it and its TTL (2 s) passed"
        in (ret["comment"])
    )
    # what the deploy runs once the new pair is served (here: no endpoints to verify)
    retired = _retire(salt_call, layout, cloudflare)
    assert (retired.returncode, retired.data) == (0, {"removed": [old_record], "pending": False})
    # only the old key's record went, by its id; the other record at the name stayed
    assert knot.tlsa(TLSA_NAME) == {new_record, OTHER_RECORD}
    assert _held(cloudflare) == sorted([new_record, OTHER_RECORD])
    deletes = [path for method, path, _ in cloudflare.requests if method == "DELETE"]
    assert deletes == [f"/client/v4/zones/{cloudflare.zone['id']}/dns_records/{old_id}"]
    created = next(r for r in cloudflare.records.values() if r["content"] == new_record)
    assert created["ttl"] == 1 and created["data"]["certificate"] == new_record.split()[-1]
    # the token reached the API, and nothing else: not the run's output at trace level,
    # not the minion's files (cachedir, job cache, logs)
    assert {auth for *_, auth in cloudflare.requests} == {f"Bearer {TOKEN}"}
    assert "[TRACE" in run.stderr
    assert TOKEN not in run.stdout and TOKEN not in run.stderr
    minion_root = pathlib.Path(salt_call.config_file).parent.parent
    assert _files_holding(minion_root, TOKEN) == []

    code, ret = _deploy(salt_call, layout, cloudflare)
    assert (code, ret["result"], ret["changes"]) == (0, True, {}), ret
    assert _retire(salt_call, layout, cloudflare).data["removed"] == []
    assert _held(cloudflare) == sorted([new_record, OTHER_RECORD])


def _refused(layout, before, knot, old_record, ret, code, message):
    assert code != 0
    assert ret["result"] is False, ret
    assert message in ret["comment"], ret["comment"]
    assert TOKEN not in ret["comment"]
    assert cases.snapshot(layout.root) == before
    assert old_record in knot.tlsa(TLSA_NAME)


@pytest.mark.one_release  # the provider's answers, not Salt's: once is enough
@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda api: None,  # a token the API does not know
            "Cloudflare refused the lookup of zone example.test (HTTP 403, code 10000: "
            "Authentication error): the API token is invalid or expired",
        ),
        (
            lambda api: api.token(TOKEN, edit=False),
            "the API token may not edit DNS records of zone example.test (it needs the "
            "Zone > DNS > Edit permission)",
        ),
        (
            lambda api: api.token(TOKEN, zones=["other.test"]),
            "Cloudflare has no zone example.test that this API token may read",
        ),
        (
            lambda api: (
                api.token(TOKEN),
                api.fail("POST", "/dns_records", 429, 10429, {"Retry-After": "120"}),
            ),
            "rate-limited the creation of _25._tcp.mail.example.test. IN TLSA 3 1 1 ",
        ),
        (
            lambda api: (api.token(TOKEN), api.fail("POST", "/dns_records", 502, 10001)),
            "Cloudflare's API failed the creation of _25._tcp.mail.example.test",
        ),
        (
            lambda api: (api.token(TOKEN), api.fail("POST", "/dns_records", 0, drop=True)),
            "is unreachable for the creation of _25._tcp.mail.example.test",
        ),
    ],
    ids=["token-invalid", "no-dns-edit", "zone-not-found", "429-beyond-max-wait", "5xx", "dropped"],
)
def test_a_refused_or_failed_call_deploys_nothing_and_the_next_run_goes_on(
    salt_call, rollover, knot, cloudflare, setup, message
):
    layout, _, _, old_record, new_record = rollover
    setup(cloudflare)
    before = cases.snapshot(layout.root)
    code, ret = _deploy(salt_call, layout, cloudflare, max_wait=5)
    _refused(layout, before, knot, old_record, ret, code, message)
    assert _held(cloudflare) == sorted([old_record, OTHER_RECORD])
    # status and the dane_pending alert carry the record and the reason
    last = salt_call("certsync_monitor.last_deploy", layout.dest).data
    assert last["dane_pending"] == f"{TLSA_NAME}. IN TLSA {new_record}"
    assert last["summary"].startswith("Nothing deployed: Cloudflare")
    assert TOKEN not in json.dumps(last)

    cloudflare.token(TOKEN)  # the operator mends the token; faults were one-off
    code, ret = _deploy(salt_call, layout, cloudflare)
    assert (code, ret["result"]) == (0, True), ret["comment"]
    assert ret["changes"]["tlsa"] == {"added": new_record}
    assert knot.tlsa(TLSA_NAME) == {old_record, new_record, OTHER_RECORD}


def test_a_429_within_max_wait_is_waited_out(salt_call, rollover, knot, cloudflare):
    layout, _, _, _, new_record = rollover
    cloudflare.token(TOKEN)
    cloudflare.fail("POST", "/dns_records", 429, 10429, {"Retry-After": "1"})
    code, ret = _deploy(salt_call, layout, cloudflare)
    assert (code, ret["result"]) == (0, True), ret["comment"]
    posts = [path for method, path, _ in cloudflare.requests if method == "POST"]
    assert len(posts) == 2
    assert new_record in knot.tlsa(TLSA_NAME)


def test_a_5xx_at_the_old_records_deletion_is_resumed_by_the_next_run(
    salt_call, rollover, knot, cloudflare
):
    layout, _, new, old_record, new_record = rollover
    cloudflare.token(TOKEN)
    code, ret = _deploy(salt_call, layout, cloudflare)
    assert (code, ret["changes"]["new"]["fingerprint"]) == (0, new.fingerprint), ret
    cloudflare.fail("DELETE", "/dns_records/", 503, 10001)
    retired = _retire(salt_call, layout, cloudflare)
    assert retired.returncode != 0
    assert "Cloudflare's API failed the deletion of _25._tcp.mail.example.test. IN TLSA " in (
        retired.stdout + retired.stderr
    )
    assert knot.tlsa(TLSA_NAME) == {old_record, new_record, OTHER_RECORD}

    retired = _retire(salt_call, layout, cloudflare)
    assert (retired.returncode, retired.data["removed"]) == (0, [old_record])
    assert knot.tlsa(TLSA_NAME) == {new_record, OTHER_RECORD}


def test_an_identical_record_already_held_counts_as_added(salt_call, knot, cloudflare):
    cloudflare.token(TOKEN)
    update = json.dumps(cloudflare.update_settings())
    with salt_call.pillar(_pillar()):
        ret = salt_call("certsync_dns_cloudflare.change", HOST, update, f'add=["{OTHER_RECORD}"]')
        assert ret.returncode == 0, ret
        again = salt_call("certsync_dns_cloudflare.change", HOST, update, f'add=["{OTHER_RECORD}"]')
        listed = salt_call("certsync_dns_cloudflare.records", HOST, update)
    assert again.returncode == 0, again
    assert again.data["added"] == [OTHER_RECORD]
    assert listed.data == [OTHER_RECORD]
    assert _held(cloudflare) == [OTHER_RECORD]


def test_settings_are_refused_by_name_and_the_token_is_never_an_argument(salt_call, cloudflare):
    update = cloudflare.update_settings()
    cases_ = [
        ({**update, "api_token": TOKEN}, "api_token is not taken as an argument"),
        ({**update, "ttl": 30}, "update ttl 30 must be 1 (automatic) or 60 to 86400"),
        ({**update, "zone": None}, "needs zone (a name) or zone_id"),
        (
            {**update, "provider": "route53"},
            "update provider 'route53' is not available here (",
        ),
        ({**update, "provider": "../x"}, "update provider '../x' is no provider name"),
        ({**update, "colour": "blue"}, "unknown update settings: colour"),
    ]
    with salt_call.pillar(_pillar()):
        for bad, message in cases_:
            ret = salt_call("certsync_dane.tlsa_update", HOST, json.dumps(bad), 'add=["3 1 1 ab"]')
            assert ret.returncode != 0
            assert message in ret.stdout + ret.stderr, (bad, ret)
            assert TOKEN not in ret.stdout + ret.stderr
    ret = salt_call("certsync_dns_cloudflare.checked", json.dumps(update))
    assert ret.returncode != 0
    assert "no Cloudflare API token in this minion's pillar at certsync:consumer_defaults" in (
        ret.stdout + ret.stderr
    )


def test_an_api_that_is_not_there_is_named(salt_call, knot, cloudflare):
    update = {**cloudflare.update_settings(), "api_url": f"http://127.0.0.1:{free_port()}/v4"}
    with salt_call.pillar(_pillar()):
        ret = salt_call("certsync_dns_cloudflare.records", HOST, json.dumps(update))
    assert ret.returncode != 0
    assert "is unreachable for the lookup of zone example.test (ConnectError" in (
        ret.stdout + ret.stderr
    )
