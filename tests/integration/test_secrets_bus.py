"""
No credential in a job: a renewal with a new key rolled over through RFC 2136
and through Cloudflare's API, end to end over the Salt bus (a real master with
the reactor, the NPM minion with the real certbot, the mailcow minion with the
look-alike, Knot taking the TSIG-signed updates, or the Cloudflare API stand-in
writing through to it), every daemon logging at ``trace``. The TSIG secret or
the API token lives in the consumer's pillar only, in an SLS targeted to it
alone (harness.fleet.write_pillar splits it out, as the docs say): the
source's ``pillar.raw`` and settings check, and the master's caches of the
source, never hold it; afterwards it is in no job's arguments or return
(``jobs.list_job``, the master's job cache), no event, no log line.
"""

import base64
import pathlib

import pytest
from saltfactories.utils import random_string

from harness.cloudflare_api import CloudflareApi
from harness.fleet import BusRecorder, master_config, stack_settings, wait_until, write_pillar
from harness.knot import UpdatableDNS
from harness.mailcow_stack import HOST, NAMES

TLSA_NAME = f"_25._tcp.{HOST}"
CONVERGE_TIMEOUT = 120
CF_TOKEN = "cf-bus-token-" + "9" * 27  # the stand-in's token, made up here


@pytest.fixture
def knot(tmp_path):
    server = UpdatableDNS(tmp_path / "knot")
    yield server
    server.stop()


def _files_under(root):
    return [p for p in pathlib.Path(root).rglob("*") if p.is_file() and not p.is_symlink()]


def _credential(provider, knot, old_record):
    """The consumer's ``dane`` pillar, the credential in it and its forms to look for,
    and the Cloudflare stand-in (None for RFC 2136)."""
    if provider == "rfc2136":
        raw = base64.b64decode(knot.secret)
        needles = {
            "base64": knot.secret.encode(),
            "hex": raw.hex().encode(),
            "bytes repr": repr(raw)[2:-1].encode(),
        }
        return knot.pillar_dane(max_wait=30), needles, None
    api = CloudflareApi(knot, auto_ttl=2).start()
    api.token(CF_TOKEN)
    usage, selector, mtype, cert = old_record.split()
    data = {"usage": int(usage), "selector": int(selector), "matching_type": int(mtype)}
    api.seed(TLSA_NAME, {**data, "certificate": cert}, write_through=False)
    dane = api.dane(max_wait=30)
    dane["update"]["api_token"] = CF_TOKEN
    return dane, {"token": CF_TOKEN.encode()}, api


# Docker-heavy (the mailcow look-alike): run on one Salt release, as scripts/test.sh says
@pytest.mark.one_release
@pytest.mark.parametrize("provider", ["rfc2136", "cloudflare"])
def test_a_dane_rollover_over_the_bus_keeps_the_credential_out_of_jobs_events_and_logs(
    salt_factories, tmp_path, npm_certbot, make_stack, knot, provider
):
    npm_certbot.issue(5, NAMES)
    first = npm_certbot.current(5)
    stack = make_stack(first, acme=True)
    old_record = f"3 1 1 {first.spki_sha256}"
    knot.start([f"_25._tcp.mail IN TLSA {old_record}"], ttl=2)
    dane, needles, api = _credential(provider, knot, old_record)

    source, consumer = random_string("npm-"), random_string("mailcow-")
    settings = {**stack_settings(stack), "dane": dane}
    pillar_dir = tmp_path / "pillar"
    write_pillar(pillar_dir, source, {consumer: settings}, npm_certbot.live_dir, schedule=False)
    trace = {"log_level_logfile": "trace"}
    master = salt_factories.salt_master_daemon(
        random_string("master-"), overrides={**master_config(pillar_dir), **trace}
    )
    minions = [master.salt_minion_daemon(m, overrides=trace) for m in (source, consumer)]
    with master.started():
        bus = BusRecorder(master.config).start()
        try:
            for minion in minions:
                minion.start()
            cli = master.salt_cli(timeout=120)
            assert master.salt_run_cli().run("saltutil.sync_all").returncode == 0
            for minion_id in (source, consumer):
                assert cli.run("saltutil.sync_all", minion_tgt=minion_id).returncode == 0
            cli.run("state.apply", "certsync", minion_tgt=source)  # beacon, reuse_key
            cli.run("state.apply", "certsync", minion_tgt=consumer)  # recipient key
            wait_until(
                lambda: set(stack.served().values()) == {first.fingerprint},
                CONVERGE_TIMEOUT,
                interval=1,
                what="the first certificate served",
            )

            # names edited in NPM's UI: a new key, rolled over through the zone
            npm_certbot.issue(5, [*NAMES, "webmail.example.test"])
            new = npm_certbot.current(5)
            new_record = f"3 1 1 {new.spki_sha256}"
            wait_until(
                lambda: (
                    set(stack.served().values()) == {new.fingerprint}
                    and knot.tlsa(TLSA_NAME) == {new_record}
                ),
                CONVERGE_TIMEOUT,
                interval=1,
                what="the new key served and the old TLSA record removed",
            )
            # the source's pillar, as the minion and the master's runner see it
            raw = cli.run("pillar.raw", minion_tgt=source)
            assert raw.returncode == 0 and raw.data.get("certsync"), raw
            checked = cli.run("certsync_settings.check", minion_tgt=source)
            assert checked.returncode == 0 and checked.data["valid"] is True, checked
            source_views = {
                "the source's pillar.raw": raw.stdout.encode(),
                "the source's settings check": checked.stdout.encode(),
            }
            jobs = master.salt_run_cli(timeout=120).run("jobs.list_jobs")
            assert jobs.returncode == 0 and jobs.data, jobs
            shown = [
                master.salt_run_cli(timeout=120).run("jobs.list_job", jid).stdout
                for jid in jobs.data
            ]
        finally:
            bus.stop()
            for minion in minions:
                minion.terminate()
            if api:
                api.stop()
    deploys = [e for e in bus.events if e["data"].get("fun") == "certsync_deploy.deployed"]
    assert deploys, "the reactor sent no deploy job"

    if api:  # the token reached the API, and only there
        assert {auth for *_, auth in api.requests} == {f"Bearer {CF_TOKEN}"}
    cache = _files_under(pathlib.Path(master.config["cachedir"]) / "jobs")
    assert cache, "the master's job cache was not scanned"
    # the master's caches of the source (its pillar, when cached; its minion data)
    source_caches = [
        p
        for p in _files_under(master.config["cachedir"])
        if source in str(p) and "jobs" not in p.parts
    ]
    logs = [pathlib.Path(d.config["log_file"]) for d in (master, *minions)]
    assert all(b"[TRACE" in log.read_bytes() for log in logs), "a daemon did not log at trace"
    places = {
        **{str(path): path.read_bytes() for path in [*cache, *logs, *source_caches]},
        **source_views,
        "jobs.list_job": "\n".join(shown).encode(),
        "the event bus": "\n".join(repr(e) for e in bus.events).encode(),
    }
    for where, blob in places.items():
        for form, needle in needles.items():
            assert needle not in blob, f"the {provider} credential ({form}) in {where}"
