"""Hostile answers from Cloudflare's API, through the real official library and real
HTTP to the stand-in on loopback (harness/cloudflare_api.py): error bodies that quote
the request's credentials, environment credentials beside the pillar's token, answers
of the wrong shape, a server that drips its answer, records that already exist, a
zone id of another zone, and text from the API that must be escaped. None of these
needs the zone's servers, so the stand-in's Knot is not started (its write-through
is not reached)."""

import json
import types

import pytest
from salt.exceptions import CommandExecutionError

from harness.cloudflare_api import CloudflareApi
from harness.loader import UTILS, load_loader_module

# its subject is the client against a hostile API stand-in, not the Salt release
pytestmark = pytest.mark.one_release

cloudflare_mod = load_loader_module("modules", "certsync_dns_cloudflare")
ME = "mailcow"
TOKEN = "cf-hostile-token-" + "7" * 23
HOST = "mail.example.test"
RECORD = "3 1 1 " + "ab" * 32


@pytest.fixture
def api():
    zone = types.SimpleNamespace(zone="example.test", port=53, secret=None)
    server = CloudflareApi(zone, write_through=False).start()
    server.token(TOKEN)
    yield server
    server.stop()


@pytest.fixture
def configure_loader_modules():
    pillar = {"certsync": {"consumers": {ME: {"dane": {"update": {"api_token": TOKEN}}}}}}
    return {
        cloudflare_mod: {
            "__salt__": {},
            "__context__": {},
            "__utils__": UTILS,
            "__opts__": {"id": ME},
            "__pillar__": pillar,
        }
    }


def _update(api, **extra):
    return {"provider": "cloudflare", "zone": "example.test", "api_url": api.base_url, **extra}


def _failure(call):
    with pytest.raises(CommandExecutionError) as caught:
        call()
    message = str(caught.value)
    assert TOKEN not in message
    return message


@pytest.mark.parametrize("status", [400, 403, 502])
@pytest.mark.parametrize(
    "quoted",
    [
        "request headers: {'Authorization': '{authorization}'}",
        "Authorization: {authorization}",
        'bad header "authorization"="{authorization}" in request',
        "token {authorization} rejected",
    ],
)
def test_an_error_body_quoting_the_credential_never_shows_it(api, status, quoted):
    api.fail("GET", "/zones", status, code=6003, message=quoted)
    message = _failure(lambda: cloudflare_mod.records(HOST, _update(api), max_wait=0))
    assert "**********" in message
    assert TOKEN[:20] not in message


def test_environment_credentials_never_replace_the_pillars_token(api, monkeypatch):
    """The SDK reads CLOUDFLARE_API_KEY/EMAIL (and custom headers) from the
    environment and prefers them to a token: certsync sends the token alone."""
    monkeypatch.setenv("CLOUDFLARE_EMAIL", "owner@example.test")
    monkeypatch.setenv("CLOUDFLARE_API_KEY", "global-key-" + "9" * 26)
    monkeypatch.setenv("CLOUDFLARE_API_USER_SERVICE_KEY", "v1.0-service-key")
    monkeypatch.setenv("CLOUDFLARE_CUSTOM_HEADERS", "Authorization: Bearer from-env")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert cloudflare_mod.records(HOST, _update(api), max_wait=0) == []
    assert api.requests and all(auth == f"Bearer {TOKEN}" for _, _, auth in api.requests)
    assert all(h == {} for h in api.extra_auth_headers)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        {"success": True, "errors": [], "messages": []},
        {"success": True, "errors": [], "messages": [], "result": {"id": "x"}},
        {"success": True, "errors": [], "messages": [], "result": "text"},
        {"success": True, "errors": [], "messages": [], "result": [{"id": 5, "name": None}]},
        {"success": True, "errors": [], "messages": [], "result": [None]},
        [1, 2, 3],
    ],
)
def test_an_answer_of_the_wrong_shape_is_named(api, body):
    api.fail("GET", "/zones", 200, body=body)
    message = _failure(lambda: cloudflare_mod.records(HOST, _update(api), max_wait=0))
    assert "Cloudflare's API" in message and "zone example.test" in message


def test_a_listed_record_lacking_its_optional_fields_is_left_alone(api):
    api.seed(
        f"_25._tcp.{HOST}",
        {"usage": 3, "selector": 1, "matching_type": 1, "certificate": "ab" * 32},
        write_through=False,
    )
    bare = next(iter(api.records.values()))
    for field in ("data", "content", "comment", "proxied", "ttl", "meta", "tags"):
        bare.pop(field)
    assert cloudflare_mod.records(HOST, _update(api), max_wait=0) == []


def test_a_server_that_drips_its_answer_is_held_to_the_timeout(api):
    api.fail("GET", "/zones", 200, body={"success": True, "result": []}, drip=0.5)
    message = _failure(lambda: cloudflare_mod.records(HOST, _update(api, timeout=1), max_wait=0))
    assert "did not answer the lookup of zone example.test within 1 s" in message


@pytest.mark.parametrize("code", [81057, 81058])
def test_a_record_that_already_exists_counts_as_added(api, code):
    api.fail("POST", "/dns_records", 400, code=code, message="Record already exists.")
    done = cloudflare_mod.change(HOST, _update(api), add=[RECORD], max_wait=0)
    assert done["added"] == [RECORD]


def test_a_zone_id_of_another_zone_is_refused_before_any_change(api):
    other = dict(api.zone, id="f" * 32, name="other.test")
    api.extra_zones.append(other)
    update = _update(api, zone_id=other["id"])
    message = _failure(lambda: cloudflare_mod.change(HOST, update, add=[RECORD], max_wait=0))
    assert f"zone_id {'f' * 32} belongs to other.test, not to example.test" in message
    assert not api.records
    assert not [r for r in api.requests if r[0] == "POST"]


def test_a_zone_id_of_the_zone_itself_is_taken(api):
    done = cloudflare_mod.change(HOST, _update(api, zone_id=api.zone["id"]), add=[RECORD])
    assert done["added"] == [RECORD] and len(api.records) == 1


def test_text_from_the_api_is_escaped_in_messages_and_records(api):
    api.fail("GET", "/zones/", 200, body={"success": True, "result": {"name": "ev\x1b[2Jil"}})
    update = {**_update(api), "zone": None, "zone_id": api.zone["id"]}
    message = _failure(lambda: cloudflare_mod.records(HOST, update, max_wait=0))
    assert "\x1b" not in message and "\\x1b" in message
    api.seed(
        f"_25._tcp.{HOST}",
        {"usage": 3, "selector": 1, "matching_type": 1, "certificate": "ab" * 32},
        write_through=False,
    )
    listed = next(iter(api.records.values()))
    listed["data"]["certificate"] = "ab\x1b]0;owned\x07"
    listed["content"] = "3 1 1 ab\x1b]0;owned\x07"
    assert cloudflare_mod.records(HOST, _update(api), max_wait=0) == []


def test_an_error_code_of_the_wrong_type_is_named_not_a_crash(api):
    body = {"success": False, "errors": [{"code": [1], "message": {"x": 1}}], "result": None}
    api.fail("GET", "/zones", 400, body=body)
    message = _failure(lambda: cloudflare_mod.records(HOST, _update(api), max_wait=0))
    assert "refused the lookup of zone example.test (HTTP 400, code [1]" in message
    json.dumps(message)
