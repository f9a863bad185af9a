"""Unit tests of certsync_dane (the TLSA rollover): its settings refused by name, each
provider's settings checked through it, the secret never shown, failing servers on
loopback."""

import pytest
from salt.exceptions import SaltInvocationError
from support.dnsproxy import ClosingServer

from harness.loader import UTILS, certsync_mod, load_loader_module, salt_functions

maildns_mod = load_loader_module("modules", "maildns")
dane_mod = load_loader_module("modules", "certsync_dane")
rfc2136_mod = load_loader_module("modules", "certsync_dns_rfc2136")
DOMAIN, HOST = "example.test", "mail.example.test"


@pytest.fixture
def configure_loader_modules():
    salt = {
        "certsync.is_dns_name": certsync_mod.is_dns_name,
        **{f"maildns.{name}": getattr(maildns_mod, name) for name in ("zone_servers", "tlsa")},
        # the rfc2136 provider only: a minion without Cloudflare's library
        **salt_functions(rfc2136_mod, "certsync_dns_rfc2136"),
    }
    dunders = {
        "__salt__": salt,
        "__context__": {},
        "__utils__": UTILS,
        "__opts__": {"id": ME},
        "__pillar__": PILLAR,
    }
    return {maildns_mod: dunders, dane_mod: dict(dunders), rfc2136_mod: dict(dunders)}


SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQ="  # noqa: S105 (a test TSIG secret)
UPDATE = {"server": "127.0.0.1", "zone": DOMAIN, "tsig_name": "certsync"}
ME = "mailcow"
#: The consumer's pillar: the secret is read from there, never from an argument.
PILLAR = {"certsync": {"consumers": {ME: {"dane": {"update": {"tsig_secret": SECRET}}}}}}


@pytest.mark.parametrize(
    ("dane", "message"),
    [
        ({"bogus": 1}, "unknown dane settings: bogus"),
        ({"port": "x"}, "dane port must be a number"),
        ({"port": 0}, "dane port 0 is out of range"),
        ({"max_wait": "soon"}, "dane max_wait 'soon' is not seconds"),
        ({"max_wait": float("nan")}, "dane max_wait must be between 0 and 86400"),
        ({"update": "yes"}, "update must be a mapping"),
        ({"update": {**UPDATE, "provider": "route53"}}, "provider 'route53' is not available"),
        (
            {"update": {"provider": "cloudflare", "zone": DOMAIN}},
            "update provider 'cloudflare' is not available here",
        ),
        # the provider's own checks, through the gate's
        ({"update": {**UPDATE, "server": "ns1.example.test"}}, "must be an IP address"),
        ({"update": {**UPDATE, "tsig_secret": SECRET}}, "tsig_secret is not taken as an arg"),
        ({"update": {**UPDATE, "extra": 1}}, "unknown update settings: extra"),
    ],
)
def test_dane_settings_are_checked_and_never_show_the_secret(dane, message):
    with pytest.raises(SaltInvocationError, match=message) as caught:
        dane_mod._dane_options(dane)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("dane", "expected"),
    [
        (True, {"port": 25, "nameservers": None, "dns_port": 53}),
        (
            {"nameservers": ["127.0.0.1"], "dns_port": 5353, "max_wait": 60},
            {"port": 25, "nameservers": ["127.0.0.1"], "dns_port": 5353},
        ),
    ],
)
def test_dane_lookup_has_the_deploys_defaults(dane, expected):
    assert dane_mod.dane_lookup(dane) == expected


@pytest.mark.parametrize(
    ("dane", "message"),
    [
        ({"colour": "blue"}, "unknown dane settings: colour"),
        ({"dns_port": 70000}, "dane dns_port"),
        ("yes", "dane must be true or a mapping"),
    ],
)
def test_dane_lookup_names_a_bad_setting(dane, message):
    with pytest.raises(SaltInvocationError, match=message):
        dane_mod.dane_lookup(dane)


@pytest.fixture
def closing_server():
    server = ClosingServer()
    yield server
    server.close()


def test_a_truncated_answer_then_a_closed_connection_is_that_servers_failure(closing_server):
    import dns.name

    answer = dane_mod._ask_authoritative(
        dns.name.from_text(f"_25._tcp.{HOST}"), "127.0.0.1", closing_server.port, 5
    )
    assert answer["error"].startswith(f"no answer from 127.0.0.1:{closing_server.port}: ")


@pytest.mark.parametrize(
    "timeout", ["nan", float("nan"), float("inf"), "-inf", 1e9, 0, -1, "abc", "²", "٣", True, None]
)
def test_the_zones_servers_are_asked_on_a_bounded_timeout(monkeypatch, timeout):
    import dns.resolver

    def no_lookup(*args, **kwargs):
        raise AssertionError(f"looked up {args} despite a bad timeout")

    monkeypatch.setattr(dns.resolver.Resolver, "resolve", no_lookup)
    with pytest.raises(SaltInvocationError, match="timeout must be"):
        dane_mod.tlsa_servers(HOST, DOMAIN, timeout=timeout)


#: A DNS provider of the operator's own: one module, no list edited anywhere.
THIRD_PROVIDER = """
CHANGES = []


def credential_keys():
    return ["noted_key"]


def checked(update):
    return dict(update)


def zone(update):
    return update["zone"]


def records(hostname, update, port=25, protocol="tcp"):
    return []


def change(hostname, update, add=None, delete=None, port=25, protocol="tcp", **ignored):
    CHANGES.append((hostname, port, add, delete))
    return {"added": add or [], "deleted": delete or []}
"""


def test_a_third_dns_provider_is_one_module(tmp_path, monkeypatch):
    """A provider module dropped beside the others takes a rollover (found by its file,
    no allow-list), and a provider that is not there is named with those that are."""
    path = tmp_path / "_modules" / "certsync_dns_noted.py"
    path.parent.mkdir()
    path.write_text(THIRD_PROVIDER)
    monkeypatch.setattr("harness.loader.SALT_TREE", tmp_path)
    module = load_loader_module("modules", "certsync_dns_noted")
    for name, function in salt_functions(module, "certsync_dns_noted").items():
        monkeypatch.setitem(dane_mod.__salt__, name, function)
    monkeypatch.setitem(dane_mod.__opts__, "module_dirs", [str(path.parent)])
    update = {"provider": "noted", "zone": DOMAIN}
    ret = dane_mod.tlsa_update(HOST, update, add=["3 1 1 ab"])
    assert ret == {"added": ["3 1 1 ab"], "deleted": []}
    assert module.CHANGES == [(HOST, 25, ["3 1 1 ab"], None)]
    with pytest.raises(SaltInvocationError, match=r"the providers: noted$"):
        dane_mod.tlsa_update(HOST, {**update, "provider": "route53"}, add=["3 1 1 ab"])
