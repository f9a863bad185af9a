"""What a renewal applies (certsync.published, certsync.deployed) is the role's
own state, with the same arguments, and nothing of its provisioning."""

import json

import pytest
import salt.utils.dictupdate
import salt.utils.yaml

from harness.fleet import SALT_TREE
from harness.loader import UTILS, mailcow_consumer_mod

pytestmark = pytest.mark.functional
ME = "certsync-functional"


def _rendered(salt_call, sls, pillar, gate=False):
    """The states ``sls`` renders, by id; the settings check every SLS begins with
    (certsync.settings) left out unless ``gate``."""
    ret = salt_call("state.show_sls", sls, f"pillar={json.dumps({'certsync': pillar})}")
    assert ret.returncode == 0 and isinstance(ret.data, dict), ret
    return ret.data if gate else {k: v for k, v in ret.data.items() if k != "certsync-settings"}


def _args(state):
    """A rendered state's arguments, without its requisites and order."""
    (fun,) = [key for key in state if not key.startswith("__")]
    return {
        key: value
        for arg in state[fun]
        if isinstance(arg, dict)
        for key, value in arg.items()
        if key not in ("require", "order")
    }


TSIG_SECRET = "c2VjcmV0LWluLXRoZS1waWxsYXI="  # noqa: S105 (a test TSIG secret)
UPDATE = {"server": "127.0.0.1", "port": 5353, "zone": "example.test", "tsig_name": "certsync"}
CONSUMER = {
    "hostname": "mail.example.test",
    "source": {"minion": "npm"},
    "consumers": {ME: {"mailcow_dir": "/srv/mailcow", "dane": True, "reload_commands": {}}},
}
SOURCE = {
    "hostname": "mail.example.test",
    "source": {"minion": ME, "dir": "npm-5"},
    "consumers": {"mailcow": {}, "mailcow-2": {}},
}


def test_the_consumer_deploy_is_the_roles_own(salt_call):
    role = _rendered(salt_call, "certsync.consumer", CONSUMER)
    alone = _rendered(salt_call, "certsync.deployed", CONSUMER)
    assert sorted(alone) == ["certsync-deployed"]
    assert _args(alone["certsync-deployed"]) == _args(role["certsync-deployed"])
    assert _args(alone["certsync-deployed"])["name"] == "/srv/mailcow/data/assets/ssl"
    # ordered after the recipient key and acme-mailcow (show_sls leaves the extend
    # unreconciled; a run applies it)
    (extended,) = (e["certsync-deployed"] for e in role["__extend__"] if "certsync-deployed" in e)
    required = [r for arg in extended["certsync"] if isinstance(arg, dict) for r in arg["require"]]
    assert required == [
        {"certsync": "certsync-recipient-key"},
        {"mailcow": "certsync-acme-stood-down"},
    ]


@pytest.mark.parametrize(
    "entry",
    [
        {},
        {
            "mailcow_dir": "/srv/mailcow",
            "dane": {"port": 25, "nameservers": ["127.0.0.1"]},
            "reload_commands": {"nginx-mailcow": ["nginx", "-s", "reload"]},
            "mail_domains": ["example.test"],
            "min_days": 14,
            "sni": False,
            "endpoints": {"smtp": 2525, "https": "127.0.0.1:8443"},
            "services": [],
            "verify_timeout": 5,
            "allow_older": True,
            "paused": True,
        },
        {"dane": {"max_wait": 60, "update": {**UPDATE, "tsig_secret": TSIG_SECRET}}},
    ],
    ids=["defaults", "every-setting", "dane-update"],
)
def test_a_renewal_deploys_with_the_arguments_of_the_sls(salt_call, entry):
    """The runner's deploy job (certsync_deploy.deployed) gives the state what
    certsync.deployed.sls gives it, from the same pillar over the same defaults, and
    neither holds a credential (maildns reads the TSIG secret from the pillar)."""
    pillar = {**CONSUMER, "consumers": {ME: entry}}
    state = _rendered(salt_call, "certsync.deployed", pillar)["certsync-deployed"]
    defaults = salt.utils.yaml.safe_load((SALT_TREE / "certsync" / "defaults.yaml").read_text())
    settings = salt.utils.dictupdate.merge(defaults["certsync"], pillar)
    own = UTILS["certsync_settings.consumer"](settings, ME)
    dest = mailcow_consumer_mod.dest(settings["hostname"], own)
    kind_settings = mailcow_consumer_mod.settings()
    expected = UTILS["certsync_settings.deploy_args"](settings, ME, "npm", "", dest, kind_settings)
    assert expected == _args(state)
    assert TSIG_SECRET not in json.dumps(_args(state))
    if "update" in json.dumps(entry):
        # an allow-list: the provider's settings stay in the consumer's pillar
        assert _args(state)["dane"] == {"max_wait": 60, "update": {"provider": "rfc2136"}}


@pytest.mark.parametrize(
    ("source", "consumer", "key_kept"),
    [
        ({}, {}, False),
        ({}, {"dane": True}, True),
        ({"reuse_key": True}, {}, True),
        ({"reuse_key": False}, {"dane": True}, False),
    ],
    ids=["auto-no-dane", "auto-dane", "forced-on", "forced-off"],
)
def test_certbots_config_is_changed_only_when_reuse_key_says_so(
    salt_call, source, consumer, key_kept
):
    pillar = {
        **SOURCE,
        "source": {**SOURCE["source"], **source},
        "consumers": {"mailcow": consumer, "mailcow-2": {}},
    }
    states = _rendered(salt_call, "certsync.published", pillar)
    assert ("certsync-key-kept" in states) is key_kept


def test_the_source_publication_is_the_roles_own(salt_call):
    pillar = {**SOURCE, "source": {**SOURCE["source"], "reuse_key": True}}
    role = _rendered(salt_call, "certsync.source", pillar)
    alone = _rendered(salt_call, "certsync.published", pillar)
    # a re-issue from NPM's UI drops reuse_key: a renewal's run sets it again
    assert sorted(alone) == ["certsync-key-kept", "certsync-published"]
    for state in alone:
        assert _args(alone[state]) == _args(role[state])
    assert _args(alone["certsync-published"])["consumers"] == ["mailcow", "mailcow-2"]
    assert _args(role["certsync-schedule"])["minutes"] == 30  # the same safety net


@pytest.mark.parametrize(
    ("sls", "pillar"),
    [
        ("certsync.deployed", SOURCE),
        ("certsync.published", CONSUMER),
        ("certsync.dovecot", SOURCE),
    ],
)
def test_the_other_role_gets_a_failing_state_not_a_render_error(salt_call, sls, pillar):
    (state,) = _rendered(salt_call, sls, pillar).values()
    assert "fail_without_changes" in state["test"]


def _schedule(salt_call, schedule=None):
    pillar = {**CONSUMER, **({"schedule": schedule} if schedule is not None else {})}
    return _rendered(salt_call, "certsync.consumer", pillar)["certsync-schedule"]


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (None, {"minutes": 30, "splay": 300}),  # the defaults
        ({"minutes": 0, "seconds": 20, "splay": 1}, {"seconds": 20, "splay": 1}),
        ({"hours": 12}, {"hours": 12, "splay": 300}),  # not the defaults' 30 minutes on top
        ({"splay": 60}, {"minutes": 30, "splay": 60}),
    ],
)
def test_the_schedule_runs_every_interval_the_pillar_gives(salt_call, schedule, expected):
    args = _args(_schedule(salt_call, schedule))
    assert args["function"] == "state.apply" and args["job_args"] == ["certsync"]
    assert args["run_on_start"] is True
    assert {k: v for k, v in args.items() if k in [*expected, "seconds", "minutes", "hours"]} == (
        expected
    )


@pytest.mark.parametrize(
    ("schedule", "named"),
    [
        ({"minutes": 0}, ""),  # would run the formula back to back
        ({"minutes": "often"}, "minutes often"),
        ({"minutes": -5}, "minutes -5"),
        ({"minutes": 30, "splay": "x"}, "splay x"),
    ],
)
def test_a_schedule_without_a_whole_interval_fails_saying_so(salt_call, schedule, named):
    state = _schedule(salt_call, schedule)
    assert "fail_without_changes" in state["test"]
    message = _args(state)["name"]
    assert "certsync:schedule" in message and named in message


def test_the_way_back_and_forth_renders_for_a_consumer(salt_call):
    """certsync.rollback: the deploy's own directory and settings; certsync.resume:
    the pause lifted, then the role's deploy."""
    deploy = _args(_rendered(salt_call, "certsync.deployed", CONSUMER)["certsync-deployed"])
    (rolled,) = _rendered(salt_call, "certsync.rollback", CONSUMER).values()
    args = _args(rolled)
    assert "rolled_back" in rolled["certsync"]
    for key in ("name", "hostname", "mailcow_dir", "services", "endpoints", "probe_address"):
        assert args[key] == deploy[key], key
    resume = _rendered(salt_call, "certsync.resume", CONSUMER)
    assert sorted(resume) == ["certsync-deployed", "certsync-resumed"]
    assert _args(resume["certsync-resumed"])["name"] == deploy["name"]


def test_a_consumers_own_alerts_are_merged_over_the_defaults_key_by_key(salt_call):
    """A consumer that sets only its event log keeps the defaults' interval and days,
    and gets the log's directory."""
    own = {**CONSUMER["consumers"][ME], "alerts": {"event_log": "/var/log/certsync/events.json"}}
    role = _rendered(salt_call, "certsync.consumer", {**CONSUMER, "consumers": {ME: own}})
    beacon = _args(role["certsync-alerts"])
    assert (beacon["interval"], beacon["alert_days"], beacon["grace"]) == (300, 21, 600)
    assert _args(role["certsync-event-log-dir"]) == {
        "name": "/var/log/certsync",
        "mode": "0750",
        "makedirs": True,
    }


def test_the_source_role_configures_the_watch_engine_with_the_beacons_settings(salt_call):
    role = _rendered(salt_call, "certsync.source", SOURCE)
    engine = _args(role["certsync-watch"])
    assert engine["name"].endswith("/minion.d/certsync-watch.conf")
    (entry,) = engine["dataset"]["engines"]
    beacon = {
        key: value
        for arg in _args(role["certsync-beacon"]).items()
        for key, value in [arg]
        if key not in ("name", "save", "interval")
    }
    assert entry == {"certsync_watch": {**beacon, "publish": True, "keep_key": False}}
    assert beacon == {
        "hostname": "mail.example.test",
        "kind": "npm",
        "dir": "npm-5",
        "live_dir": "/etc/letsencrypt/live",
    }
    restart = _args(role["certsync-watch-started"])
    assert restart["onchanges"] == [{"file": "certsync-watch"}]
    assert restart["onlyif"] == "systemctl is-active --quiet salt-minion"
    told = _args(role["certsync-watch-restart-needed"])
    assert told["onchanges"] == [{"file": "certsync-watch"}]
    assert told["unless"] == "systemctl is-active --quiet salt-minion"
    assert "restart this salt-minion" in told["text"]


def test_not_as_a_service_the_operator_is_told_to_restart_the_minion(salt_call):
    """salt-call here is no salt-minion service: the engine's new configuration says
    to restart the minion, instead of 'onlyif condition is false' alone."""
    role = _rendered(salt_call, "certsync.source", SOURCE)
    written = salt_call(
        "state.single",
        "test.show_notification",
        "name=certsync-watch-restart-needed",
        f"text={_args(role['certsync-watch-restart-needed'])['text']}",
        f"unless={_args(role['certsync-watch-restart-needed'])['unless']}",
    )
    (state,) = written.data.values()
    assert state["result"] is True and state["comment"].startswith(
        "The certsync_watch engine starts with the minion: restart this salt-minion"
    ), state


def test_certsync_absent_stops_the_engine_or_says_to_restart(salt_call):
    absent = _rendered(salt_call, "certsync.absent", SOURCE)
    assert _args(absent["certsync-watch-stopped"])["onchanges"] == [
        {"file": "certsync-watch-absent"}
    ]
    assert "writes nothing more" in _args(absent["certsync-watch-restart-needed"])["text"]


@pytest.mark.parametrize(("watch", "state"), [(False, "file"), ("yes", "test")])
def test_the_watch_engine_can_be_turned_off_and_a_bad_switch_is_named(salt_call, watch, state):
    pillar = {**SOURCE, "source": {**SOURCE["source"], "watch": watch}}
    role = _rendered(salt_call, "certsync.source", pillar)
    assert "certsync-watch-started" not in role
    assert state in role["certsync-watch"]
    if watch == "yes":
        assert _args(role["certsync-watch"])["name"] == (
            "certsync:source:watch must be true or false, not 'yes'"
        )


def _fun(state):
    """A rendered state's function, e.g. ``file.blockreplace``."""
    (module,) = [key for key in state if not key.startswith("__")]
    (fun,) = [arg for arg in state[module] if isinstance(arg, str)]
    return f"{module}.{fun}"


def _dovecot_pillar(**own):
    return {**CONSUMER, "consumers": {ME: {**CONSUMER["consumers"][ME], **own}}}


def test_the_consumer_keeps_dovecots_sessions_through_a_reload(salt_call):
    role = _rendered(salt_call, "certsync.consumer", _dovecot_pillar())
    extra = "/srv/mailcow/data/conf/dovecot/extra.conf"
    assert _args(role["certsync-dovecot-extra-conf"]) == {"name": extra, "replace": False}
    block = _args(role["certsync-dovecot-keeps-sessions"])
    assert _fun(role["certsync-dovecot-keeps-sessions"]) == "file.blockreplace"
    assert (block["name"], block["content"]) == (extra, "shutdown_clients = no")
    reload = role["certsync-dovecot-reloaded"]
    assert _args(reload)["services"] == ["dovecot-mailcow"]
    assert _args(reload)["watch"] == ["certsync-dovecot-keeps-sessions"]


@pytest.mark.parametrize(
    ("keep", "fun"), [(False, "file.replace"), ("yes", "test.fail_without_changes")]
)
def test_keeping_dovecots_sessions_can_be_turned_off_and_a_bad_switch_is_named(
    salt_call, keep, fun
):
    role = _rendered(salt_call, "certsync.consumer", _dovecot_pillar(dovecot_keep_sessions=keep))
    assert "certsync-dovecot-extra-conf" not in role
    assert _fun(role["certsync-dovecot-keeps-sessions"]) == fun
    if keep == "yes":
        assert _args(role["certsync-dovecot-keeps-sessions"])["name"] == (
            f"certsync:consumers:{ME}:dovecot_keep_sessions must be true or false, not 'yes'"
        )


def test_without_dovecot_among_the_services_its_configuration_is_left_alone(salt_call):
    services = ["postfix-mailcow", "nginx-mailcow"]
    role = _rendered(salt_call, "certsync.consumer", _dovecot_pillar(services=services))
    assert not [state for state in role if "dovecot" in state]


def _applied(salt_call, state):
    """Apply one rendered state for real (state.single, its arguments as rendered)."""
    args = [
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in _args(state).items()
    ]
    ret = salt_call("state.single", _fun(state), *args)
    assert ret.returncode == 0, ret
    return ret


def test_the_dovecot_block_goes_in_and_out_leaving_the_operators_lines(salt_call, tmp_path):
    """The rendered file states, applied for real: the block is added once after the
    operator's own lines, and both dovecot_keep_sessions: false and certsync.absent
    take it out again, the rest byte for byte."""
    conf = tmp_path / "data" / "conf" / "dovecot"
    conf.mkdir(parents=True)
    extra = conf / "extra.conf"
    own = "# the operator's own\nmail_max_userip_connections = 50\n"
    extra.write_text(own)
    pillar = _dovecot_pillar(mailcow_dir=str(tmp_path))
    role = _rendered(salt_call, "certsync.consumer", pillar)
    for _ in range(2):
        _applied(salt_call, role["certsync-dovecot-extra-conf"])
        _applied(salt_call, role["certsync-dovecot-keeps-sessions"])
    text = extra.read_text()
    assert text.startswith(own) and text.count("shutdown_clients = no") == 1, text
    off = _dovecot_pillar(mailcow_dir=str(tmp_path), dovecot_keep_sessions=False)
    for sls, given, state in (
        ("certsync.consumer", off, "certsync-dovecot-keeps-sessions"),
        ("certsync.absent", pillar, "certsync-dovecot-block-removed"),
    ):
        extra.write_text(text)
        _applied(salt_call, _rendered(salt_call, sls, given)[state])
        assert extra.read_text() == own, sls


@pytest.mark.parametrize(
    ("sls", "pillar"),
    [
        *((sls, CONSUMER) for sls in ("certsync", "certsync.consumer", "certsync.deployed",
          "certsync.dovecot", "certsync.schedule", "certsync.rsync_retired", "certsync.egress",
          "certsync.rollback", "certsync.resume", "certsync.dns")),
        *((sls, SOURCE) for sls in ("certsync", "certsync.source", "certsync.published")),
    ],
)  # fmt: skip
def test_every_sls_that_changes_anything_begins_with_the_settings_check(salt_call, sls, pillar):
    """The check runs first (order 1) and stops the run when it fails (failhard)."""
    gate = _rendered(salt_call, sls, pillar, gate=True)["certsync-settings"]
    args = {k: v for arg in gate["certsync"] if isinstance(arg, dict) for k, v in arg.items()}
    assert (gate["certsync"][-1], args["order"], args["failhard"]) == ("settings_valid", 1, True)


def test_each_route_a_consumer_takes_is_a_deploy_of_its_own(salt_call):
    """The two-domain mailcow of docs/topics/routes.md: the default route's states as
    they were, and route b's beside them, into its per-name dir."""
    pillar = {
        **CONSUMER,
        "certificates": {"b": {"hostname": "mail.b.example.test", "consumers": {ME: {}}}},
    }
    role = _rendered(salt_call, "certsync.consumer", pillar)
    default, b = _args(role["certsync-deployed"]), _args(role["certsync-deployed-b"])
    assert default == _args(
        _rendered(salt_call, "certsync.deployed", CONSUMER)["certsync-deployed"]
    )
    assert "route" not in default
    assert b == {**default, "name": "/srv/mailcow/data/assets/ssl/mail.b.example.test",
                 "hostname": "mail.b.example.test", "route": "b"}  # fmt: skip
    assert _args(role["certsync-pair-dir-b"]) == {
        "name": "/srv/mailcow/data/assets/ssl/mail.b.example.test",
        "mode": "0755",
    }
    assert _args(role["certsync-recipient-key"])["sources"] == ["npm"]


def test_a_source_of_several_routes_publishes_and_watches_each(salt_call):
    pillar = {
        **SOURCE,
        "certificates": {
            "b": {"hostname": "mail.b.test", "source": {"dir": "npm-6"}, "consumers": {"m2": {}}}
        },
    }
    role = _rendered(salt_call, "certsync.source", pillar)
    assert "route" not in _args(role["certsync-published"])
    b = _args(role["certsync-published-b"])
    assert (b["name"], b["consumers"], b["route"], b["dir"]) == (
        "mail.b.test",
        ["m2"],
        "b",
        "npm-6",
    )
    beacon = _args(role["certsync-beacon"])
    assert beacon["routes"]["default"]["dir"] == "npm-5"
    assert beacon["routes"]["b"] == {**beacon["routes"]["default"], "hostname": "mail.b.test",
                                     "dir": "npm-6"}  # fmt: skip
    engine = _args(role["certsync-watch"])["dataset"]["engines"][0]["certsync_watch"]
    assert engine["routes"] == beacon["routes"]
    # the single-certificate pillar keeps the beacon's settings flat, as before routes
    flat = _args(_rendered(salt_call, "certsync.source", SOURCE)["certsync-beacon"])
    assert (flat["hostname"], flat["dir"]) == ("mail.example.test", "npm-5")


def test_a_consumer_of_a_route_alone_has_that_routes_states(salt_call):
    """The HAProxy host of docs/topics/routes.md: no default route; its deploy, pair
    dir, resume and roll back are the route's."""
    pillar = {
        "source": {"minion": "npm"},
        "certificates": {
            "shop": {
                "hostname": "shop.example.test",
                "consumers": {ME: {"kind": "service", "dir": "/srv/certsync/shop"}},
            }
        },
    }
    role = _rendered(salt_call, "certsync.consumer", pillar)
    assert "certsync-deployed" not in role
    deploy = _args(role["certsync-deployed-shop"])
    assert (deploy["name"], deploy["route"], deploy["consumer"]) == (
        "/srv/certsync/shop",
        "shop",
        "service",
    )
    assert _args(role["certsync-pair-dir-shop"])["name"] == "/srv/certsync/shop"
    resume = _rendered(salt_call, "certsync.resume", pillar)
    assert _args(resume["certsync-resumed-shop"])["name"] == "/srv/certsync/shop"
    rollback = _rendered(salt_call, "certsync.rollback", pillar)
    assert _args(rollback["certsync-rolled-back"])["name"] == "/srv/certsync/shop"


def test_certsync_absent_withdraws_and_cleans_every_route(salt_call):
    routes = {"b": {"hostname": "mail.b.test", "source": {"dir": "npm-6"}, "consumers": {"m2": {}}}}
    source = _rendered(salt_call, "certsync.absent", {**SOURCE, "certificates": routes})
    withdrawn = _args(source["certsync-mine-entries-removed"])
    assert (withdrawn["consumers"], withdrawn["routes"]) == (["m2", "mailcow", "mailcow-2"], ["b"])
    routes = {"b": {"hostname": "mail.b.example.test", "consumers": {ME: {}}}}
    consumer = _rendered(salt_call, "certsync.absent", {**CONSUMER, "certificates": routes})
    assert _args(consumer["certsync-leftovers-removed"])["name"] == "/srv/mailcow/data/assets/ssl"
    assert (
        _args(consumer["certsync-leftovers-removed-b"])["name"]
        == "/srv/mailcow/data/assets/ssl/mail.b.example.test"
    )
