"""Unit tests of maildns.audit's arguments: bad input is refused before any lookup."""

import pytest
from salt.exceptions import SaltInvocationError
from support.loader import certsync_mod, load_loader_module

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
