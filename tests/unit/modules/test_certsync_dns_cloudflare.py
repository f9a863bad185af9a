"""Unit tests of certsync_dns_cloudflare (the Cloudflare provider): its settings refused
by name, the API token read from the pillar and never shown, Cloudflare's answers
(Retry-After, error envelopes, listed records) read as they come. The calls to the
API itself are tested against the stand-in (tests/functional/test_dane_cloudflare.py)."""

import types

import pytest
from salt.exceptions import SaltInvocationError

from harness.loader import UTILS, load_loader_module

cloudflare_mod = load_loader_module("modules", "certsync_dns_cloudflare")
ME = "mailcow"
TOKEN = "cf-unit-token-" + "5" * 26
PILLAR = {"certsync": {"consumers": {ME: {"dane": {"update": {"api_token": TOKEN}}}}}}
UPDATE = {"provider": "cloudflare", "zone": "example.test"}


@pytest.fixture
def configure_loader_modules():
    return {
        cloudflare_mod: {
            "__salt__": {},
            "__context__": {},
            "__utils__": UTILS,
            "__opts__": {"id": ME},
            "__pillar__": PILLAR,
        }
    }


def test_checked_settings_have_their_defaults_and_no_token():
    assert cloudflare_mod.checked(UPDATE) == {
        "provider": "cloudflare",
        "zone": "example.test",
        "zone_id": None,
        "ttl": 1,
        "api_url": "https://api.cloudflare.com/client/v4",
        "auth_port": 53,
        "timeout": 10,
        "strict": False,
    }


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ("yes", "update must be a mapping"),
        ({**UPDATE, "api_token": TOKEN}, "api_token is not taken as an argument"),
        ({"provider": "cloudflare"}, "needs zone \\(a name\\) or zone_id"),
        ({**UPDATE, "zone": "-bad-"}, "update zone '-bad-' is not a valid DNS name"),
        ({**UPDATE, "zone_id": "../zones"}, "is not a Cloudflare zone id"),
        ({**UPDATE, "ttl": 59}, "update ttl 59 must be 1 \\(automatic\\) or 60 to 86400"),
        ({**UPDATE, "ttl": 86401}, "update ttl 86401"),
        ({**UPDATE, "ttl": True}, "update ttl True"),
        ({**UPDATE, "api_url": "http://api.example"}, "must be an https:// URL"),
        ({**UPDATE, "api_url": "http://127.attacker.example"}, "must be an https:// URL"),
        ({**UPDATE, "api_url": "http://127.0.0.1@evil.example"}, "must not hold user info"),
        ({**UPDATE, "api_url": "https://u:p@api.example"}, "must not hold user info"),
        ({**UPDATE, "api_url": "http://127.0.0.1\r\nX: y"}, "is not a URL \\(one line"),
        ({**UPDATE, "api_url": "http://127.0.0.1/\x00"}, "is not a URL \\(one line"),
        ({**UPDATE, "api_url": "http://[::1/v4"}, "is not a URL: Invalid IPv6 URL"),
        ({**UPDATE, "api_url": "https://api.example:99999/v4"}, "is not a URL: Port out of range"),
        ({**UPDATE, "api_url": "https://api.example/v4?x=1"}, "must not hold a query"),
        ({**UPDATE, "api_url": "ftp://127.0.0.1/"}, "must be an https:// URL"),
        ({**UPDATE, "api_url": ["https://a"]}, "is not a URL"),
        ({**UPDATE, "zone": "example..test."}, "is not a valid DNS name"),
        ({**UPDATE, "zone": ["example.test"]}, "is not a valid DNS name"),
        ({**UPDATE, "strict": "yes"}, "update strict 'yes' must be true or false"),
        ({**UPDATE, "auth_port": 0}, "auth_port 0 is out of range"),
        ({**UPDATE, "timeout": 0}, "update timeout must be between 0 and 300"),
        ({**UPDATE, "server": "127.0.0.1"}, "unknown update settings: server"),
    ],
)
def test_settings_are_refused_by_name(update, message):
    with pytest.raises(SaltInvocationError, match=message) as caught:
        cloudflare_mod.checked(update)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, f"no Cloudflare API token in this minion's pillar at certsync:consumers:{ME}"),
        ("", "no Cloudflare API token"),
        ("two words", "is not an API token \\(the value is not shown\\)"),
        (12345, "is not an API token"),
        ("t\u00f6ken", "is not an API token"),
    ],
)
def test_the_token_comes_from_the_pillar_and_is_never_shown(monkeypatch, token, message):
    pillar = {"certsync": {"consumers": {ME: {"dane": {"update": {"api_token": token}}}}}}
    monkeypatch.setattr(cloudflare_mod, "__pillar__", pillar)
    with pytest.raises(SaltInvocationError, match=message) as caught:
        cloudflare_mod.checked(UPDATE)
    assert str(token) not in str(caught.value) or token in (None, "")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 1.0),
        ("7", 7.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("nan", 1.0),
        ("soon", 1.0),
        ("1e12", 86400.0),
    ],
)
def test_retry_after_is_read_in_seconds_and_bounded(header, seconds):
    assert cloudflare_mod._retry_after(header) == seconds


def test_retry_after_may_be_an_http_date():
    import email.utils
    import time

    wait = cloudflare_mod._retry_after(email.utils.formatdate(time.time() + 30, usegmt=True))
    assert 25 <= wait <= 31


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("http://127.0.0.1:8080/client/v4/", "http://127.0.0.1:8080/client/v4"),
        ("http://[::1]:8080/v4", "http://[::1]:8080/v4"),
        ("https://api.example/v4", "https://api.example/v4"),
    ],
)
def test_an_api_url_is_https_or_loopback(url, kept):
    assert cloudflare_mod.checked({**UPDATE, "api_url": url})["api_url"] == kept


def test_a_zone_written_with_the_roots_dot_is_taken():
    assert cloudflare_mod.checked({**UPDATE, "zone": "Example.Test."})["zone"] == "example.test"


def test_error_envelopes_are_read_and_escaped():
    body = {"success": False, "errors": [{"code": 10000, "message": "Auth\x1b[2Jerror"}]}
    assert cloudflare_mod._error_codes(body) == [10000]
    shown = UTILS["certsync_util.printable"]
    assert cloudflare_mod._error_detail(body, shown) == ", code 10000: Auth\\x1b[2Jerror"
    for odd in (None, "text", {"errors": "x"}, {"errors": [1, None]}):
        assert cloudflare_mod._error_codes(odd) == []
        assert cloudflare_mod._error_detail(odd, shown) == ""


def _listed(data=None, content=None):
    fields = data or {}
    return types.SimpleNamespace(
        data=types.SimpleNamespace(**fields) if data is not None else None, content=content
    )


def test_a_listed_record_is_read_from_its_data_else_its_content():
    data = {"usage": 3.0, "selector": 1.0, "matching_type": 1.0, "certificate": "ABCD"}
    assert cloudflare_mod._record_text(_listed(data)) == "3 1 1 abcd"
    assert cloudflare_mod._record_text(_listed(content="3  1 1 ABCD")) == "3 1 1 abcd"


@pytest.mark.parametrize("record", ["3 1 1", "3 1 1 abc", "3 1 1 zz", "300 1 1 ab", "x 1 1 ab"])
def test_record_data_is_checked(record):
    with pytest.raises(SaltInvocationError, match="is not TLSA record data"):
        cloudflare_mod._record(record)


def test_a_name_outside_the_zone_is_refused_before_any_call():
    with pytest.raises(SaltInvocationError, match=r"_25\._tcp\.mail\.example\.org is not in"):
        cloudflare_mod.change("mail.example.org", UPDATE, add=["3 1 1 " + "ab" * 32])
