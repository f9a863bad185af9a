"""The pillar as the formula reads it (salt://_utils/certsync_settings.py)."""

import pathlib
import re

import pytest
import yaml

from harness.loader import UTILS

ROOT = pathlib.Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (
            {"consumers": {"m": {"dane": {"update": {"tsig_secret": "own"}}}}},
            ("own", "consumers:m"),
        ),
        (
            {"consumer_defaults": {"dane": {"update": {"tsig_secret": "d"}}}},
            ("d", "consumer_defaults"),
        ),
        (  # an own dane replaces the defaults' as a whole, as map.jinja merges
            {
                "consumers": {"m": {"dane": True}},
                "consumer_defaults": {"dane": {"update": {"tsig_secret": "d"}}},
            },
            (None, "consumers:m"),
        ),
        ({"consumers": {"m": None}, "consumer_defaults": "x"}, (None, "consumer_defaults")),
        ("not a mapping", (None, "consumer_defaults")),
    ],
)
def test_a_consumer_setting_is_its_own_over_the_defaults(cfg, expected):
    value, where = UTILS["certsync_settings.consumer_setting"](
        cfg, "m", "dane", "update", "tsig_secret"
    )
    assert (value, where) == (expected[0], f"certsync:{expected[1]}:dane:update:tsig_secret")


@pytest.mark.parametrize("path", ["pillar.example", "pillar/certsync.sls"])
def test_the_documented_pillars_hold_only_known_settings(path):
    defaults = yaml.safe_load((ROOT / "salt/certsync/defaults.yaml").read_text())["certsync"]
    pillar = yaml.safe_load((ROOT / path).read_text())["certsync"]
    assert UTILS["certsync_settings.problems"](pillar, defaults) == []


def test_every_default_is_documented_in_pillar_example():
    """Every key of defaults.yaml appears in pillar.example, at the same place."""
    defaults = yaml.safe_load((ROOT / "salt/certsync/defaults.yaml").read_text())["certsync"]
    example = yaml.safe_load((ROOT / "pillar.example").read_text())["certsync"]
    example_defaults = {**example, "consumers": {}}
    missing = UTILS["certsync_settings.problems"](defaults, example_defaults)
    assert [m for m in missing if " is no " in m] == []


def test_pillar_example_passes_the_check_types_and_all():
    defaults = yaml.safe_load((ROOT / "salt/certsync/defaults.yaml").read_text())["certsync"]
    example = yaml.safe_load((ROOT / "pillar.example").read_text())["certsync"]
    assert UTILS["certsync_settings.problems"](example, defaults) == []


TYPED = {"hostname": "mail.example.test", "source": {"minion": "npm"}}


@pytest.mark.parametrize(
    ("pillar", "problem"),
    [
        ({"source": "npm"}, "certsync:source must be a mapping (minion: <id>, ...), not 'npm'"),
        ({"source": ["npm"]}, "certsync:source must be a mapping"),
        ({"consumers": "a, b"}, "certsync:consumers must map minion ids to their settings, not"),
        ({"consumers": {"m": {"mailcow_dir": ""}}},
         "certsync:consumers:m:mailcow_dir must not be empty"),
        ({"consumers": {"m": {"mailcow_dir": ["/opt"]}}},
         "certsync:consumers:m:mailcow_dir must be a string, not ['/opt']"),
        ({"consumers": {"m": {"relay": [1, 2]}}},
         "certsync:consumers:m:relay must be a mapping, not [1, 2]"),
        ({"consumers": {"m": {"relay": {"port": "587"}}}},
         "certsync:consumers:m:relay:port must be a number, not '587'"),
        ({"consumers": {"m": {"services": "postfix-mailcow"}}},
         "certsync:consumers:m:services must be a list"),
        ({"consumers": {"m": {"sni": "no"}}}, "certsync:consumers:m:sni must be true or false"),
        ({"consumers": {"m": {"dane": "yes"}}}, "certsync:consumers:m:dane must be true or false"),
        ({"consumers": {"m": {"min_days": True}}},
         "certsync:consumers:m:min_days must be a number"),
        ({"consumer_defaults": {"alerts": {"days": "21"}}},
         "certsync:consumer_defaults:alerts:days must be a number"),
        ({"dns": ["example.test"]}, "certsync:dns must be a mapping"),
        ({"schedule": 30}, "certsync:schedule must be a mapping"),
        ({"source": {"minion": "npm", "beacon_interval": "1"}},
         "certsync:source:beacon_interval must be a number"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_named(pillar, problem):
    defaults = yaml.safe_load((ROOT / "salt/certsync/defaults.yaml").read_text())["certsync"]
    found = UTILS["certsync_settings.problems"]({**TYPED, **pillar}, defaults)
    assert [f for f in found if f.startswith(problem)], found


@pytest.mark.parametrize(
    "entry",
    [
        {"dane": True},
        {"dane": {"port": 25}},
        {"min_days": 1.5},
        {"mailcow_dir": "/srv/m"},
        # another program's environment-style file: its keys are the operator's own
        {"mailcow_conf": {"SKIP_LETS_ENCRYPT": "y", "ENABLE_SSL_SNI": "y", "HTTPS_PORT": 8443}},
        None,
    ],
)
def test_values_of_the_types_taken_pass(entry):
    defaults = yaml.safe_load((ROOT / "salt/certsync/defaults.yaml").read_text())["certsync"]
    assert UTILS["certsync_settings.problems"]({**TYPED, "consumers": {"m": entry}}, defaults) == []


SETTINGS = {
    "dane": {"port": 25, "update": {"zone": "example.test", "tsig_secret": "c2VjcmV0"}},
    "relay": [{"host": "smtp.example.test", "password": "hunter2"}, {"password": ""}],
    "api_token": None,
}


def test_credentials_are_left_out_of_what_travels_at_any_depth():
    assert UTILS["certsync_settings.without_credentials"](SETTINGS) == {
        "dane": {"port": 25, "update": {"zone": "example.test"}},
        "relay": [{"host": "smtp.example.test"}, {}],
    }
    assert "tsig_secret" in SETTINGS["dane"]["update"]  # a copy: the settings are unchanged


def test_credentials_that_are_set_are_masked_in_what_is_shown():
    masked = UTILS["certsync_settings.masked_credentials"](SETTINGS)
    assert masked["dane"]["update"] == {"zone": "example.test", "tsig_secret": "**********"}
    assert masked["relay"] == [
        {"host": "smtp.example.test", "password": "**********"},
        {"password": ""},
    ]
    assert masked["api_token"] is None  # not set: nothing to hide, shown as it is


CFG = {
    "hostname": "mail.example.test",
    "source": {"minion": "npm"},
    "consumer_defaults": {
        "mailcow_dir": "/opt/mailcow-dockerized",
        "services": ["postfix-mailcow"],
        "min_days": 7,
        "relay": {"host": "", "port": 587, "grace": 900},
        "dane": False,
        "mail_domains": [],
    },
    "consumers": {
        "mailcow": {
            "relay": {"host": "smtp.example.test", "password": "hunter2"},
            "dane": {"port": 25, "update": {"zone": "example.test", "tsig_secret": "c2VjcmV0"}},
            "mail_domains": ["example.test"],
        },
        "files-only": None,
    },
}


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (  # an own alerts with other keys: the defaults' event_log still applies
            {
                "consumers": {"m": {"alerts": {"days": 14}}},
                "consumer_defaults": {"alerts": {"event_log": "/var/log/certsync.json"}},
            },
            ("/var/log/certsync.json", "consumer_defaults"),
        ),
        (
            {
                "consumers": {"m": {"alerts": {"event_log": "/own.json"}}},
                "consumer_defaults": {"alerts": {"event_log": "/var/log/certsync.json"}},
            },
            ("/own.json", "consumers:m"),
        ),
        ({"consumers": {"m": {"alerts": "x"}}}, (None, "consumer_defaults")),
    ],
)
def test_alerts_settings_are_merged_key_by_key(cfg, expected):
    value, where = UTILS["certsync_settings.consumer_setting"](cfg, "m", "alerts", "event_log")
    assert (value, where) == (expected[0], f"certsync:{expected[1]}:alerts:event_log")


def test_one_merge_of_the_pillar_over_the_defaults_key_by_key():
    merged = UTILS["certsync_settings.merged"]({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
    assert merged == {"a": {"b": 1, "c": 3}}


def test_a_consumers_settings_are_its_entry_over_the_defaults_relay_key_by_key():
    settings = UTILS["certsync_settings.consumer"](CFG, "mailcow")
    assert settings["relay"] == {
        "host": "smtp.example.test",
        "port": 587,
        "grace": 900,
        "password": "hunter2",
    }
    assert settings["min_days"] == 7 and settings["mail_domains"] == ["example.test"]
    assert UTILS["certsync_settings.consumer"](CFG, "files-only")["relay"]["port"] == 587
    cfg = {
        **CFG,
        "consumer_defaults": {**CFG["consumer_defaults"], "alerts": {"days": 21, "grace": 600}},
        "consumers": {"mailcow": {"alerts": {"event_log": "/var/log/certsync/events.json"}}},
    }
    assert UTILS["certsync_settings.consumer"](cfg, "mailcow")["alerts"] == {
        "days": 21,
        "grace": 600,
        "event_log": "/var/log/certsync/events.json",
    }


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({**CFG, "consumers": {"mailcow": "x"}}, "certsync:consumers:mailcow is not a mapping"),
        ({**CFG, "consumer_defaults": []}, "certsync:consumer_defaults is not a mapping"),
    ],
)
def test_a_pillar_the_formula_cannot_render_is_refused_by_name(cfg, message):
    with pytest.raises(ValueError, match=message):
        UTILS["certsync_settings.consumer"](cfg, "mailcow")


#: The settings of the mailcow consumer kind, which its deploy arguments may carry.
KIND = ["mailcow_dir", "services", "reload_commands", "mail_domains", "sni"]


def test_the_deploy_arguments_never_hold_a_credential():
    args = UTILS["certsync_settings.deploy_args"](CFG, "mailcow", "npm", "ab" * 32, "/d", KIND)
    assert args["name"] == "/d"
    assert (args["source_minion"], args["fingerprint"]) == ("npm", "ab" * 32)
    assert args["dane"] == {"port": 25, "update": {"provider": "rfc2136"}}
    assert args["mail_domains"] == ["example.test"]
    assert "relay" not in args and "hunter2" not in repr(args)
    files_only = UTILS["certsync_settings.deploy_args"](CFG, "files-only", "npm", "", "/d", KIND)
    assert "fingerprint" not in files_only and "mail_domains" not in files_only


CADDY = ["storage", "issuer", "caddy", "reuse_private_keys"]


@pytest.mark.parametrize(
    ("source", "kind_settings", "expected"),
    [
        ({"minion": "c", "kind": "caddy", "storage": "/var/lib/caddy"}, CADDY, []),
        (
            {"minion": "c", "kind": "caddy", "storag": "/x", "live_dir": "/l"},
            CADDY,
            [
                "certsync:source:storag is no setting of the caddy source (it takes storage, "
                "issuer, caddy, reuse_private_keys): did you mean certsync:source:storage?",
                "certsync:source:live_dir is no setting of the caddy source (it takes storage, "
                "issuer, caddy, reuse_private_keys)",
            ],
        ),
        (
            {"minion": "n", "storage": "/x", "beacon_interval": 1, "reuse_key": "auto"},
            ["live_dir", "dir", "source"],
            [
                "certsync:source:storage is no setting of the npm source (it takes live_dir, "
                "dir, source): did you mean certsync:source:source?"
            ],
        ),
    ],
    ids=["caddy", "caddy-typos", "npm-given-caddys"],
)
def test_the_source_holds_the_formulas_keys_and_its_kinds_settings(source, kind_settings, expected):
    defaults = yaml.safe_load((ROOT / "salt/certsync/defaults.yaml").read_text())["certsync"]
    pillar = {"hostname": "mail.example.test", "source": source}
    assert UTILS["certsync_settings.problems"](pillar, defaults, kind_settings) == expected


def test_the_deploy_arguments_are_an_allow_list():
    """A setting the allow-list does not name never travels, whatever its name: a
    provider's own settings (credential or not) are read by the consumer from its pillar."""
    own = {
        "port": 25,
        "max_wait": 60,
        "update": {"provider": "cloudflare", "zone": "example.test", "api_key_v1": "k" * 20},
        "extra": "x",
    }
    cfg = {**CFG, "consumers": {**CFG["consumers"], "mailcow": {"dane": own}}}
    args = UTILS["certsync_settings.deploy_args"](cfg, "mailcow", "npm", "", "/d", KIND)
    assert args["dane"] == {"port": 25, "max_wait": 60, "update": {"provider": "cloudflare"}}
    assert "k" * 20 not in repr(args)
    assert set(args) <= {
        "name", "hostname", "source_minion", "fingerprint",
        *UTILS["certsync_settings.deploy_args"].__globals__["DEPLOY_SETTINGS"],
        *UTILS["certsync_settings.deploy_args"].__globals__["DEPLOY_IF_SET"],
        *KIND,
    }  # fmt: skip


foreign = UTILS["certsync_settings.foreign_credentials"]
SPLIT = {
    "certsync": {
        "source": {"minion": "npm"},
        "consumers": {
            "mailcow": {"dane": {"update": {"tsig_secret": "c2VjcmV0"}}},
            "other": {"dane": {"update": {"api_token": "t" * 40}}},
        },
    }
}


@pytest.mark.parametrize(
    ("minion", "role", "keys"),
    [
        ("npm", "source", ["consumers:mailcow:dane:update:tsig_secret",
                           "consumers:other:dane:update:api_token"]),
        ("mailcow", "consumer", ["consumers:other:dane:update:api_token"]),
        ("other", "consumer", ["consumers:mailcow:dane:update:tsig_secret"]),
    ],
)  # fmt: skip
def test_a_credential_of_another_minion_is_named_never_shown(minion, role, keys):
    found = foreign(SPLIT["certsync"], minion, role)
    assert [f.split(" is a credential")[0] for f in found] == [f"certsync:{k}" for k in keys]
    assert all("targeted to" in f and "c2VjcmV0" not in f and "t" * 40 not in f for f in found)


def test_a_consumers_own_credentials_and_the_defaults_pass_for_a_consumer():
    pillar = {
        "certsync": {
            "consumers": {"mailcow": {"dane": {"update": {"tsig_secret": "x"}}}},
            "consumer_defaults": {"dane": {"update": {"api_token": "y"}}},
        }
    }
    pillar = pillar["certsync"]
    assert foreign(pillar, "mailcow", "consumer") == []
    assert [f.split(" is")[0] for f in foreign(pillar, "npm", "source")] == [
        "certsync:consumers:mailcow:dane:update:tsig_secret",
        "certsync:consumer_defaults:dane:update:api_token",
    ]


def test_declared_keys_and_named_keys_are_credentials_empty_ones_are_not():
    update = {"hmac": "x", "db_password": "y", "passphrase": "z", "tsig_secret": "", "token": None}
    pillar = {"consumers": {"m": {"dane": {"update": update}}}}
    assert len(foreign(pillar, "npm", "source")) == 2
    assert len(foreign(pillar, "npm", "source", declared=("hmac",))) == 3


def test_every_default_is_in_the_pillar_reference_of_the_docs():
    """docs/reference/pillar.md shows the file that documents every key (above): each
    literalinclude it makes is read as the page shows it."""
    page = ROOT / "docs" / "reference" / "pillar.md"
    included = re.findall(r"```\{literalinclude\} (\S+)", page.read_text())
    shown = [yaml.safe_load((page.parent / path).read_text()) for path in included]
    defaults = yaml.safe_load((ROOT / "salt/certsync/defaults.yaml").read_text())["certsync"]
    documented = [s["certsync"] for s in shown if isinstance(s, dict) and "certsync" in s]
    assert documented, f"{page} shows no certsync pillar"
    missing = UTILS["certsync_settings.problems"](defaults, {**documented[0], "consumers": {}})
    assert [m for m in missing if " is no " in m] == []
