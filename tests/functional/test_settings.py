"""A misconfigured certsync pillar is named, not a silent no-op (salt-call --local):
unknown keys with the closest known one, a missing hostname, a pillar naming other
minion ids than this one."""

import pytest

pytestmark = pytest.mark.functional
ME = "certsync-functional"
HOST = "mail.example.test"


def _settings_state(ret):
    (state,) = [v for k, v in ret.data.items() if "certsync-settings" in k]
    return state


def test_typos_are_named_with_the_key_meant(salt_call, tmp_path):
    pillar = {
        "certsync": {
            "hostnmae": HOST,
            "source": {"minion": "npm"},
            "consumer_default": {"min_days": 3},
            "consumers": {ME: {"mailcow_dir": str(tmp_path), "min_day": 3, "alert": {}}},
            "dns": {"domian": "example.test"},
        }
    }
    pillar["certsync"]["consumers"][ME]["probe_adress"] = "127.0.0.1"
    with salt_call.pillar(pillar):
        checked = salt_call("certsync_settings.check")
        applied = salt_call("state.apply", "certsync", "test=True")
    assert checked.returncode == 1
    assert checked.data["valid"] is False and checked.data["role"] == "consumer"
    assert checked.data["problems"] == [
        "certsync:hostnmae is no certsync setting: did you mean certsync:hostname?",
        "certsync:consumer_default is no certsync setting: did you mean "
        "certsync:consumer_defaults?",
        "certsync:dns:domian is no certsync setting: did you mean certsync:dns:domain?",
        f"certsync:consumers:{ME}:min_day is no certsync setting: did you mean "
        f"certsync:consumers:{ME}:min_days?",
        f"certsync:consumers:{ME}:alert is no certsync setting: did you mean "
        f"certsync:consumers:{ME}:alerts?",
        f"certsync:consumers:{ME}:probe_adress is no certsync setting: did you mean "
        f"certsync:consumers:{ME}:probe_address?",
        "certsync:hostname is not set: the mail host name the certificate covers",
    ]
    assert applied.returncode != 0
    state = _settings_state(applied)
    assert state["result"] is False
    assert state["comment"].startswith("The certsync pillar needs fixing:\n- certsync:hostnmae")


@pytest.mark.parametrize("sls", ["certsync", "certsync.schedule", "certsync.dovecot"])
def test_a_failed_check_stops_the_run_before_anything_changes(salt_call, tmp_path, sls):
    """The check runs first and stops the run (failhard): with a typo in the pillar no
    state of the formula runs, the schedule is not made and dovecot's file not written."""
    dovecot = tmp_path / "data" / "conf" / "dovecot"
    dovecot.mkdir(parents=True)
    (tmp_path / "mailcow.conf").write_text("MAILCOW_HOSTNAME=mail.example.test\n")
    pillar = {
        "certsync": {
            "hostname": HOST,
            "source": {"minion": "npm"},
            "consumers": {ME: {"mailcow_dir": str(tmp_path), "mailcow_dri": "/x"}},
        }
    }
    with salt_call.pillar(pillar):
        applied = salt_call("state.apply", sls)
        schedule = salt_call("schedule.list", "return_yaml=False")
    assert applied.returncode != 0
    ran = {k.split("_|-")[1]: v for k, v in applied.data.items()}
    assert ran["certsync-settings"]["result"] is False
    assert "mailcow_dri is no certsync setting" in ran["certsync-settings"]["comment"]
    assert [k for k, v in ran.items() if v.get("result") is not False] == [], ran
    assert not [k for k, v in ran.items() if v.get("changes")], ran
    assert "certsync" not in (schedule.data or {})
    assert not (dovecot / "extra.conf").exists()


@pytest.mark.parametrize(
    ("certsync", "why"),
    [
        (
            {"hostname": HOST, "source": {"minion": "npm"}, "consumers": {"mailcow": {}}},
            f"this minion's id is {ME!r}, but the certsync pillar names source 'npm' and "
            "consumers 'mailcow': add it there under its own id (Salt's default id is the "
            "FQDN), or set certsync:no_role: true for a minion without a role",
        ),
        (
            {"hostname": HOST},
            f"the certsync pillar of {ME!r} names no source and no consumer: is it assigned to "
            "this minion (pillar top.sls)?",
        ),
    ],
    ids=["other-ids", "empty"],
)
def test_a_pillar_that_does_not_name_this_minion_fails(salt_call, certsync, why):
    with salt_call.pillar({"certsync": certsync}):
        applied = salt_call("state.apply", "certsync")
        status = salt_call("certsync_status.report")
        table = salt_call("--out=certsync_table", "certsync_status.report")
    assert applied.returncode != 0
    state = _settings_state(applied)
    assert (state["result"], state["comment"]) == (
        False,
        f"The certsync pillar needs fixing:\n- {why}",
    )
    assert status.data == {"role": None, "why": why}
    assert "INFO  certsync role  none" in table.stdout and why in table.stdout


def test_a_minion_without_a_role_on_purpose_passes(salt_call):
    pillar = {"certsync": {"hostname": HOST, "source": {"minion": "npm"}, "no_role": True}}
    with salt_call.pillar(pillar):
        applied = salt_call("state.apply", "certsync")
    assert applied.returncode == 0, applied
    state = _settings_state(applied)
    assert state["result"] is True
    assert state["comment"] == (
        "The certsync pillar is valid; role: none (certsync:no_role is set: this minion has "
        "no certsync role on purpose)"
    )


@pytest.mark.parametrize(
    ("source", "problems"),
    [
        ({"kind": "caddy", "storage": "/var/lib/caddy/.local/share/caddy"}, []),
        (
            {"kind": "caddy", "storage": "/srv/caddy", "dir": "npm-5"},
            [
                "certsync:source:dir is no setting of the caddy source (it takes storage, "
                "issuer, caddy, reuse_private_keys)"
            ],
        ),
        (
            {"storage": "/srv/caddy"},
            [
                "certsync:source:storage is no setting of the npm source (it takes live_dir, "
                "dir, source)"
            ],
        ),
        (
            {"kind": "nginx", "root": "/x"},
            [
                "certsync:source:kind: unknown certificate source kind 'nginx'",
                "certsync:source:root is no certsync setting",
            ],
        ),
    ],
    ids=["caddy", "caddy-given-npms", "npm-given-caddys", "unknown-kind"],
)
def test_the_source_settings_are_those_of_its_kind(salt_call, source, problems):
    pillar = {"certsync": {"hostname": HOST, "source": {"minion": ME, **source}}}
    with salt_call.pillar(pillar):
        checked = salt_call("certsync_settings.check")
        passed = salt_call("certsync_settings.source")
    assert checked.data["role"] == "source"
    found = checked.data["problems"]
    assert [p[: len(want)] for p, want in zip(found, problems, strict=True)] == problems, found
    if not problems:
        assert passed.data == {"kind": "caddy", "settings": {"storage": source["storage"]}}


@pytest.mark.parametrize(
    ("certsync", "problem"),
    [
        ({"source": "npm", "consumers": {ME: {}}}, "certsync:source must be a mapping"),
        ({"source": {"minion": "npm"}, "consumers": f"{ME}, other"},
         "certsync:consumers must map minion ids to their settings"),
        ({"source": {"minion": "npm"}, "consumers": {ME: {"relay": [1, 2]}}},
         f"certsync:consumers:{ME}:relay must be a mapping, not [1, 2]"),
        ({"source": {"minion": "npm"}, "consumers": {ME: {"mailcow_dir": ["/opt"]}}},
         f"certsync:consumers:{ME}:mailcow_dir must be a string"),
        ({"source": {"minion": "npm"}, "consumers": {ME: {"alerts": "loud"}}},
         f"certsync:consumers:{ME}:alerts must be a mapping"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_a_named_failure_not_a_traceback(salt_call, certsync, problem):
    with salt_call.pillar({"certsync": {"hostname": HOST, **certsync}}):
        checked = salt_call("certsync_settings.check")
        applied = salt_call("state.apply", "certsync")
        status = salt_call("certsync_status.report")
    assert checked.returncode == 1 and any(p.startswith(problem) for p in checked.data["problems"])
    assert applied.returncode != 0 and isinstance(applied.data, dict), applied
    state = _settings_state(applied)
    assert state["result"] is False and problem in state["comment"]
    assert "Traceback" not in applied.stdout + applied.stderr + status.stdout + status.stderr


def test_a_route_its_consumer_cannot_serve_is_refused_by_name(salt_call, tmp_path):
    """Before any deploy: the default route's name is not mailcow's MAILCOW_HOSTNAME
    (mailcow serves its top-level pair as that), and a wildcard cannot name the
    per-name dir its route would go to."""
    (tmp_path / "mailcow.conf").write_text(f"MAILCOW_HOSTNAME={HOST}\n")
    pillar = {
        "certsync": {
            "hostname": "mail.other.test",
            "source": {"minion": "npm"},
            "consumers": {ME: {"mailcow_dir": str(tmp_path), "services": ["postfix-mailcow"]}},
            "certificates": {"w": {"hostname": "*.b.example.test", "consumers": {ME: {}}}},
        }
    }
    with salt_call.pillar(pillar):
        checked = salt_call("certsync_settings.check")
        applied = salt_call("state.apply", "certsync")
    assert checked.returncode == 1 and checked.data["valid"] is False
    assert checked.data["problems"] == [
        f"certsync:consumers:{ME}: {tmp_path}/mailcow.conf: MAILCOW_HOSTNAME={HOST!r}, but "
        "the certificate is deployed for 'mail.other.test': one of them is wrong (a name other "
        "than MAILCOW_HOSTNAME is a route of its own, served from its per-name dir)",
        f"certsync:certificates:w:consumers:{ME}: route w: '*.b.example.test' cannot name a "
        "mailcow per-name dir",
    ]
    state = _settings_state(applied)
    assert state["result"] is False and "'*.b.example.test' cannot name" in state["comment"]
    assert not (tmp_path / "data").exists()
