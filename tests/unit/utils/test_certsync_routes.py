"""Routes: which certificate goes to which consumers (salt://_utils/certsync_routes.py)."""

import pathlib

import pytest
import yaml

from harness.loader import UTILS

ROOT = pathlib.Path(__file__).resolve().parents[3]
DEFAULTS = yaml.safe_load((ROOT / "salt/certsync/defaults.yaml").read_text())["certsync"]

SINGLE = {
    "hostname": "mail.a.example",
    "source": {"minion": "npm", "live_dir": "/etc/letsencrypt/live"},
    "consumers": {"mailcow": {"mailcow_dir": "/opt/mailcow", "min_days": 14}},
}
TWO_DOMAINS = {
    **SINGLE,
    "certificates": {
        "b": {
            "hostname": "mail.b.example",
            "source": {"dir": "npm-6"},
            "consumers": {"mailcow": {}},
        }
    },
}
ROUTES_ONLY = {
    "certificates": {
        "web": {
            "hostname": "www.example.com",
            "source": {"minion": "npm"},
            "consumers": {"haproxy": {"kind": "service", "dir": "/etc/certsync/www"}},
        }
    }
}


def _routes(function, *args):
    return UTILS[f"certsync_routes.{function}"](*args)


def test_the_single_certificate_pillar_is_the_default_route_unchanged():
    views = _routes("views", SINGLE)
    assert list(views) == ["default"]
    assert views["default"] == {**SINGLE, "route": "default"}
    assert _routes("mine_name", "mailcow") == "certsync_cert_mailcow"
    assert _routes("label", "default") == ""


def test_a_route_takes_its_own_keys_over_the_shared_ones():
    views = _routes("views", TWO_DOMAINS)
    assert list(views) == ["default", "b"]
    b = views["b"]
    assert b["hostname"] == "mail.b.example"
    # the route's source over certsync:source, its consumer over certsync:consumers'
    assert b["source"] == {"minion": "npm", "live_dir": "/etc/letsencrypt/live", "dir": "npm-6"}
    assert b["consumers"] == {"mailcow": {"mailcow_dir": "/opt/mailcow", "min_days": 14}}
    assert "certificates" not in b
    assert _routes("mine_name", "mailcow", "b") == "certsync_route_b_mailcow"
    assert _routes("of_minion", TWO_DOMAINS, "mailcow") == {
        "source": [],
        "consumer": ["default", "b"],
    }
    assert _routes("of_minion", TWO_DOMAINS, "npm") == {"source": ["default", "b"], "consumer": []}


def test_a_pillar_of_routes_alone_has_no_default_route():
    views = _routes("views", ROUTES_ONLY)
    assert list(views) == ["web"]
    assert _routes("role", ROUTES_ONLY, "haproxy") == (
        "consumer",
        "haproxy is the consumer of route web",
    )
    with pytest.raises(ValueError, match="no route 'default' \\(its routes: web\\)"):
        _routes("view", ROUTES_ONLY, "default")
    assert UTILS["certsync_settings.problems"](ROUTES_ONLY, DEFAULTS) == []


@pytest.mark.parametrize(
    ("certificates", "problem"),
    [
        ("b", "certsync:certificates must map route names to routes, not 'b'"),
        ({"B_2": {}}, "certsync:certificates:B_2: a route's name is lower-case letters"),
        ({"default": {}}, "certsync:certificates:default: a route's name is lower-case"),
        ({"b": ["x"]}, "certsync:certificates:b must be a mapping (hostname, source, consumers)"),
        (
            {"b": {"hostname": "h", "consumers": {"m": {}}, "names": []}},
            "certsync:certificates:b:names is no setting of a route (it takes hostname, source, "
            "consumers)",
        ),
        ({"b": {"consumers": {"m": {}}}}, "certsync:certificates:b:hostname is not set"),
        ({"b": {"hostname": "h"}}, "certsync:certificates:b:consumers must map the minion ids"),
        (
            {"b": {"hostname": "h", "source": "npm", "consumers": {"m": {}}}},
            "certsync:certificates:b:source must be a mapping",
        ),
    ],
)
def test_a_malformed_route_is_named(certificates, problem):
    found = _routes("problems", {**SINGLE, "certificates": certificates})
    assert any(p.startswith(problem) for p in found), found


def test_a_route_consumers_settings_are_checked_as_any_consumers():
    pillar = {
        **SINGLE,
        "certificates": {"b": {"hostname": "h", "consumers": {"m": {"min_dayz": 3, "sni": "x"}}}},
    }
    found = UTILS["certsync_settings.problems"](pillar, DEFAULTS)
    assert found == [
        "certsync:certificates:b:consumers:m:min_dayz is no certsync setting: did you mean "
        "certsync:certificates:b:consumers:m:min_days?",
        "certsync:certificates:b:consumers:m:sni must be true or false, not 'x'",
    ]


def test_a_routes_source_of_a_kind_not_known_here_is_checked_against_the_defaults():
    pillar = {**SINGLE, "certificates": {"b": {**TWO_DOMAINS["certificates"]["b"]}}}
    pillar["certificates"]["b"]["source"] = {"minon": "npm2", "dir": "npm-6"}
    assert UTILS["certsync_settings.problems"](pillar, DEFAULTS) == [
        "certsync:certificates:b:source:minon is no certsync setting: did you mean "
        "certsync:certificates:b:source:minion?"
    ]


def test_consumers_at_the_top_without_a_hostname_beside_routes_are_named():
    pillar = {**ROUTES_ONLY, "consumers": {"mailcow": {}}}
    (found,) = UTILS["certsync_settings.problems"](pillar, DEFAULTS)
    assert found.startswith("certsync:hostname is not set")
    assert "those of a route go under certsync:certificates:<name>:consumers" in found


def test_a_credential_in_a_routes_consumer_entry_is_that_consumers_own():
    pillar = {
        "certificates": {
            "b": {"consumers": {"m": {"dane": {"update": {"api_token": "t"}}}}},
        }
    }
    assert UTILS["certsync_settings.foreign_credentials"](pillar, "m", "consumer") == []
    (found,) = UTILS["certsync_settings.foreign_credentials"](pillar, "npm", "source")
    assert found.startswith(
        "certsync:certificates:b:consumers:m:dane:update:api_token is a credential (api_token) "
        "of another minion"
    )
    assert "targeted to m alone" in found
    assert "'t'" not in found


def test_two_routes_writing_one_place_are_named_by_route():
    assert _routes("collisions", {"default": ["/ssl"], "b": ["/ssl/b"]}) == []
    assert _routes("collisions", {"default": ["/ssl"], "c": ["/ssl/"]}) == [
        "routes default and c would both write /ssl: give each its own place (a dir, or files, "
        "of its own)"
    ]


@pytest.mark.parametrize("route", ["B", "a_b", "-a", "x" * 33, 5])
def test_a_bad_route_name_never_names_a_mine_entry(route):
    with pytest.raises(ValueError, match="is no route name"):
        _routes("mine_name", "mailcow", route)


def _pillars(page):
    text = (ROOT / "docs/topics" / page).read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    return [yaml.safe_load(block)["certsync"] for block in blocks if block.startswith("certsync:")]


@pytest.mark.parametrize("page", ["routes.md", "consumers.md"])
def test_the_documented_route_pillars_pass_the_check(page):
    pillars = _pillars(page)
    assert pillars, f"no certsync pillar in {page}"
    for pillar in pillars:
        problems = [
            *_routes("problems", pillar),
            *UTILS["certsync_settings.problems"](pillar, DEFAULTS),
        ]
        assert problems == [], (pillar, problems)
        assert _routes("views", pillar), pillar


def test_a_consumer_of_routes_alone_reads_its_credential_from_its_route():
    pillar = {
        "consumer_defaults": {"dane": False},
        "certificates": {
            "a": {"consumers": {"m": {}}},
            "b": {"consumers": {"m": {"dane": {"update": {"api_token": "own"}}}}},
        },
    }
    found = UTILS["certsync_settings.consumer_setting"](pillar, "m", "dane", "update", "api_token")
    assert found == ("own", "certsync:certificates:b:consumers:m:dane:update:api_token")
