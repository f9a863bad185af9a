"""Unit tests of maildns.audit's arguments: bad input is refused before any lookup."""

import pytest
from salt.exceptions import SaltInvocationError

from harness.loader import UTILS, certsync_mod, load_loader_module

maildns_mod = load_loader_module("modules", "maildns")
DOMAIN, HOST = "example.test", "mail.example.test"


class NoDNS:
    """A resolver that fails the test if the audit gets as far as a lookup."""

    def resolve(self, *args, **kwargs):
        raise AssertionError(f"looked up {args} despite bad arguments")


@pytest.fixture
def configure_loader_modules(monkeypatch):
    monkeypatch.setattr(maildns_mod, "_resolver", lambda *args: NoDNS())
    return {
        maildns_mod: {
            "__salt__": {"certsync.is_dns_name": certsync_mod.is_dns_name},
            "__context__": {},
            "__utils__": UTILS,
            "__opts__": {"id": ME},
            "__pillar__": PILLAR,
        }
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"domain": "exa mple.test"}, "domain 'exa mple.test' is not a valid DNS name"),
        ({"hostname": "../etc"}, "hostname '../etc' is not a valid DNS name"),
        ({"mx": {"a": 1}}, "mx must be a list"),
        ({"mx": ["mail.example.test", "bad_name!"]}, "mx 'bad_name!' is not a valid DNS name"),
        ({"addresses": "192.0.2.300"}, "addresses: '192.0.2.300' does not appear to be"),
        ({"dkim_selectors": ["ok", "no/slash"]}, "DKIM selector 'no/slash' is not a valid"),
        ({"dmarc_policy": "block"}, "dmarc_policy must be one of none, quarantine, reject"),
        ({"return_path": {"name": "b.example.test"}}, "return_path must be a mapping with"),
        (
            {"return_path": {"name": "b.example.test", "target": "x y"}},
            "return_path target 'x y' is not a valid DNS name",
        ),
        ({"tlsa_ports": "25,smtp"}, "tlsa_ports must be a list of ports, not '25,smtp'"),
        ({"tlsa_ports": [25, 70000], "certs": {}}, "tlsa_ports: [25, 70000] holds a port out"),
        ({"tlsa_ports": [25]}, "tlsa_ports needs certs (deployed, candidate) or probe_address"),
        ({"spf_all": ["-all", "all"]}, "spf_all must list -all, ~all, ?all or +all"),
        ({"certs": ["cert.pem"]}, "certs must map labels (deployed, candidate) to files"),
    ],
)
def test_bad_arguments_are_refused_before_any_lookup(kwargs, message):
    args = {"domain": DOMAIN, "hostname": HOST, **kwargs}
    with pytest.raises(SaltInvocationError) as error:
        maildns_mod.audit(**args)
    assert message in str(error.value)


def test_comma_separated_strings_are_lists():
    assert maildns_mod._as_list("dkim, s1378202,", "dkim_selectors") == ["dkim", "s1378202"]
    assert maildns_mod._as_list(25, "tlsa_ports") == ["25"]
    assert maildns_mod._as_list(None, "mx") == []


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
        ({"update": {**UPDATE, "server": "ns1.example.test"}}, "must be an IP address"),
        ({"update": {**UPDATE, "tsig_secret": SECRET}}, "tsig_secret is not taken as an arg"),
        ({"update": {**UPDATE, "tsig_secret": ""}}, "tsig_secret is not taken as an argument"),
        ({"update": {**UPDATE, "tsig_name": ""}}, "update settings lack tsig_name"),
        ({"update": {**UPDATE, "tsig_algorithm": "hmac-md5"}}, "tsig_algorithm 'hmac-md5'"),
        ({"update": {**UPDATE, "zone": "-bad-"}}, "update zone '-bad-' is not a valid DNS name"),
        ({"update": {**UPDATE, "port": 99999}}, "update port 99999 is out of range"),
        ({"update": {**UPDATE, "extra": 1}}, "unknown update settings: extra"),
    ],
)
def test_dane_settings_are_checked_and_never_show_the_secret(dane, message):
    with pytest.raises(SaltInvocationError, match=message) as caught:
        maildns_mod._dane_options(dane)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("pillar", "message"),
    [
        ({}, "no TSIG secret in this minion's pillar at certsync:consumer_defaults:dane"),
        (
            {"certsync": {"consumers": {ME: {"dane": {"update": {"tsig_secret": ""}}}}}},
            f"no TSIG secret in this minion's pillar at certsync:consumers:{ME}:dane:update",
        ),
        (
            {"certsync": {"consumers": {ME: {"dane": {"update": {"tsig_secret": "no b64!"}}}}}},
            f"certsync:consumers:{ME}:dane:update:tsig_secret is not base64",
        ),
        (
            {"certsync": {"consumers": {ME: {"dane": True}}, "consumer_defaults": PILLAR}},
            f"no TSIG secret in this minion's pillar at certsync:consumers:{ME}:dane",
        ),
    ],
)
def test_the_tsig_secret_comes_from_the_pillar_and_is_never_shown(monkeypatch, pillar, message):
    monkeypatch.setattr(maildns_mod, "__pillar__", pillar)
    with pytest.raises(SaltInvocationError, match=message) as caught:
        maildns_mod._update_settings(UPDATE)
    assert "no b64!" not in str(caught.value)


DEFAULT_DANE = {"dane": {"update": {"tsig_secret": SECRET}}}


@pytest.mark.parametrize(
    "pillar",
    [
        PILLAR,
        {"certsync": {"consumer_defaults": DEFAULT_DANE}},
        # an own entry without dane takes consumer_defaults' dane, as map.jinja merges
        {"certsync": {"consumers": {ME: {"sni": True}}, "consumer_defaults": DEFAULT_DANE}},
    ],
)
def test_the_key_is_made_with_the_pillars_secret(monkeypatch, pillar):
    monkeypatch.setattr(maildns_mod, "__pillar__", pillar)
    settings = maildns_mod._update_settings(UPDATE)
    assert settings["key"].secret == b"secret-secret-secret"
    assert str(settings["key"].name) == "certsync."


def test_an_update_for_a_name_outside_its_zone_is_refused():
    with pytest.raises(SaltInvocationError, match=r"is not in the zone example\.org"):
        maildns_mod.tlsa_update(HOST, {**UPDATE, "zone": "example.org"}, add=["3 1 1 " + "ab" * 32])
    with pytest.raises(SaltInvocationError, match="is not TLSA record data"):
        maildns_mod.tlsa_update(HOST, UPDATE, add=["3 1 1 zz"])


@pytest.mark.parametrize(
    ("domain", "other", "aligned"),
    [
        ("example.com", "bounces.example.com", True),
        ("mail.example.com", "bounces.example.com", True),  # siblings share example.com
        ("example.co.uk", "bounces.example.co.uk", True),
        ("a.co.uk", "b.co.uk", False),  # co.uk is a public suffix, not an organisation
        ("example.com", "example.net", False),
        ("shop.github.io", "other.github.io", False),  # the PSL's private section
    ],
)
def test_relaxed_alignment_by_the_public_suffix_list(domain, other, aligned):
    assert maildns_mod._aligned(domain, other, "r") is aligned
    assert maildns_mod._aligned(domain, domain, "s") is True
    assert maildns_mod._aligned(domain, other, "s") is False


def test_organisational_domains():
    org = maildns_mod._org_domain
    assert org("mail.example.co.uk") == "example.co.uk"
    assert org("mail.wittenberger.us") == "wittenberger.us"
    assert org("co.uk") == "co.uk"


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
    assert maildns_mod.dane_lookup(dane) == expected


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
        maildns_mod.dane_lookup(dane)
