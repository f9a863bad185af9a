"""
Renewal over the Salt bus, end to end, with real daemons: a master with the
reactor, the NPM (source) minion, the mailcow (consumer) minion serving real
TLS from containers, and a third minion that must learn nothing.

The scenarios run in order on one fleet, as its life would go.
"""

import base64
import pathlib
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from saltfactories.utils import random_string

from harness.acme import NpmCertbot
from harness.fleet import (
    HOST,
    MINION_CONFIG,
    BusRecorder,
    deployed_fingerprint,
    master_config,
    stack_settings,
    wait_until,
    write_pillar,
)
from harness.haproxy import HAProxy
from harness.mailcow_stack import NAMES, MailcowStack
from harness.pki import issue

# Docker-heavy (the mailcow look-alike): run on one Salt release, as scripts/test.sh says
pytestmark = pytest.mark.one_release

CONVERGE_TIMEOUT = 120
NPM_ID = 5
#: What the reactor sends a consumer on a renewal: the deploy without a state run.
DEPLOY = "certsync_deploy.deployed"


class Fleet:
    """The daemons and files of one certsync deployment; NPM's side is the real certbot."""

    def __init__(self, root, ca, pebble):
        self.root = pathlib.Path(root)
        self.ca = ca
        self.certbot = NpmCertbot(self.root / "npm", pebble)
        self.live_dir = self.certbot.live_dir
        self.issued = []

    def _issued_now(self):
        self.issued.append(self.certbot.current(NPM_ID))
        return self.issued[-1]

    def renew(self):
        """NPM's hourly renewal (certbot renew --force-renewal): the new pair."""
        self.certbot.renew(NPM_ID)
        return self._issued_now()

    def reissue(self, names=tuple(NAMES)):
        """A re-issue from NPM's UI (certbot certonly with other names): always a new key."""
        self.certbot.issue(NPM_ID, list(names))
        return self._issued_now()

    def served(self):
        return self.stack.served()

    def wait_served(self, fingerprint, timeout=CONVERGE_TIMEOUT):
        wait_until(
            lambda: set(self.served().values()) == {fingerprint},
            timeout,
            interval=1,
            what=f"every endpoint to serve {fingerprint[:16]}",
        )

    def salt(self, minion, *args):
        return self.master.salt_cli(timeout=120).run(*args, minion_tgt=minion)


@pytest.fixture(scope="module")
def fleet(salt_factories, tmp_path_factory, docker_engine, mailcow_image, ca, pebble):
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), ca, pebble)
    fleet.reissue()
    snakeoil = issue(HOST, sans=[HOST], key_kind="rsa-2048")  # mailcow's own, at install
    fleet.stack = MailcowStack(
        docker_engine, mailcow_image, fleet.root / "mailcow", snakeoil, acme=True
    )
    fleet.stack.start()
    roles = ("npm", "mailcow", "other", "spare")  # spare: a consumer the pillar adds later
    fleet.ids = {role: random_string(f"{role}-") for role in roles}
    source, consumer = fleet.ids["npm"], fleet.ids["mailcow"]
    pillar_dir = fleet.root / "pillar"
    fleet.textfile = fleet.root / "textfile" / "certsync.prom"
    fleet.textfile.parent.mkdir()
    alerts = {"days": 21, "interval": 1, "grace": 0, "textfile": str(fleet.textfile)}
    settings = {**stack_settings(fleet.stack), "alerts": alerts}
    # no DANE here: reuse_key forced on, so that a renewal keeps the key (auto: only with DANE)
    write_pillar(pillar_dir, source, {consumer: settings}, fleet.live_dir, reuse_key=True)
    fleet.pillar_dir, fleet.settings = pillar_dir, settings
    fleet.master = salt_factories.salt_master_daemon(
        random_string("master-"), overrides=master_config(pillar_dir)
    )
    fleet.minions = {
        role: fleet.master.salt_minion_daemon(minion_id, overrides=MINION_CONFIG)
        for role, minion_id in fleet.ids.items()
    }
    with fleet.master.started():
        fleet.bus = BusRecorder(fleet.master.config).start()
        for minion in fleet.minions.values():
            minion.start()
        fleet.master.salt_run_cli().run("saltutil.sync_all")
        for minion_id in fleet.ids.values():
            synced = fleet.salt(minion_id, "saltutil.sync_all")
            assert synced.returncode == 0, synced
        try:
            yield fleet
        finally:
            fleet.bus.stop()
            for minion in fleet.minions.values():
                minion.terminate()
            fleet.stack.remove()


def test_one_state_apply_per_role_makes_the_fleet_whole(fleet):
    """A new consumer: its recipient key goes out, the source seals for it, it deploys."""
    source, consumer = fleet.ids["npm"], fleet.ids["mailcow"]
    ret = fleet.salt(source, "state.apply", "certsync")
    assert ret.returncode != 0  # no recipient key from the consumer yet: said, not hidden
    published = ret.data[next(k for k in ret.data if "certsync-published" in k)]
    assert "No recipient key in the mine for " + consumer in published["comment"]
    kept = ret.data[next(k for k in ret.data if "certsync-key-kept" in k)]
    assert kept["changes"]["key_kept"] == {"old": False, "new": True}, kept
    assert kept["changes"]["where"].endswith(".conf"), kept  # certbot's renewal file
    fleet.salt(consumer, "state.apply", "certsync")
    fleet.wait_served(fleet.issued[0].fingerprint)
    conf = (fleet.stack.root / "mailcow.conf").read_text()
    assert "SKIP_LETS_ENCRYPT=y" in conf
    acme = fleet.stack.service_container("acme-mailcow")  # recreated by the formula
    assert "SKIP_LETS_ENCRYPT=y" in acme.attrs["Config"]["Env"]


def test_renewal_is_served_with_no_manual_call_and_keeps_the_key(fleet):
    """NPM's own renewal; the source state set reuse_key, so the TLSA 3 1 1 data holds."""
    before = fleet.stack.served_spki()
    assert set(before.values()) == {fleet.issued[-1].spki_sha256}
    start = time.monotonic()
    renewed = fleet.renew()
    assert renewed.fingerprint != fleet.issued[-2].fingerprint
    fleet.wait_served(renewed.fingerprint)
    print(f"renewal to served on every endpoint: {time.monotonic() - start:.1f}s")
    assert fleet.stack.served_spki() == before


def test_a_reissue_with_a_new_key_goes_through(fleet):
    """Names edited in NPM's UI: certbot certonly for the lineage, a new key."""
    renewed = fleet.reissue([*NAMES, "webmail.example.test"])
    assert renewed.spki_sha256 != fleet.issued[-2].spki_sha256
    fleet.wait_served(renewed.fingerprint)


def test_the_third_minion_reads_nothing_of_the_entries(fleet):
    source, consumer, other = fleet.ids["npm"], fleet.ids["mailcow"], fleet.ids["other"]
    entry = f"certsync_cert_{consumer}"
    mine = fleet.salt(other, "mine.get", source, entry)
    assert mine.returncode == 0
    assert mine.data == {}
    assert fleet.salt(other, "mine.get", consumer, "certsync_recipient").data == {}
    own = fleet.salt(consumer, "mine.get", source, entry).data
    assert own[source]["fingerprint"] == fleet.issued[-1].fingerprint
    assert list(own[source]["sealed"]) == [consumer]


def _raw_private_value(key):
    value = key.private_numbers().private_value
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _secret_forms(issued):
    der = issued.key_der()
    pem = issued.key_pem()
    body = b"".join(pem.splitlines()[1:-1])
    return {
        "DER": der,
        "PEM body": body[:48],
        "PEM first line": pem.splitlines()[1],
        "base64 of DER": base64.b64encode(der)[:48],
        "hex of DER": der.hex().encode()[:64],
        "raw private value": _raw_private_value(issued.key),
    }


def _files_under(*roots):
    for root in roots:
        for path in pathlib.Path(root).rglob("*"):
            if path.is_file() and not path.is_symlink():
                yield path


def test_the_key_is_nowhere_in_plaintext_on_the_master_or_the_bus(fleet):
    master_root = pathlib.Path(fleet.master.config["root_dir"])
    source_log = pathlib.Path(fleet.minions["npm"].config["log_file"])
    consumer_log = pathlib.Path(fleet.minions["mailcow"].config["log_file"])
    files = [*_files_under(master_root), source_log, consumer_log]
    # Salt 3007+ keeps the mine under mine/<id>, 3006 as minions/<id>/mine.p
    mine = [path for path in files if "mine" in path.parts or path.name == "mine.p"]
    assert mine, "the master's mine cache was not scanned"
    event_blob = "\n".join(repr(event) for event in fleet.bus.events).encode()
    tags = {event["tag"] for event in fleet.bus.events}
    assert "certsync/published" in tags, sorted(tags)
    for issued in fleet.issued:
        for form, needle in _secret_forms(issued).items():
            for path in files:
                assert needle not in path.read_bytes(), f"{form} of a private key in {path}"
            assert needle not in event_blob, f"{form} of a private key in an event"
            assert needle.decode("latin-1") not in event_blob.decode("latin-1")


def test_a_forged_published_event_from_the_third_minion_installs_nothing(fleet, event_listener):
    consumer = fleet.ids["mailcow"]
    before = (fleet.stack.ssl_dir / "cert.pem").read_bytes()
    forged = fleet.ca.leaf(HOST)
    start = time.time()
    sent = fleet.salt(
        fleet.ids["other"],
        "event.send",
        "certsync/published",
        f'{{"fingerprint": "{forged.fingerprint}", "consumers": ["{consumer}"]}}',
    )
    assert sent.returncode == 0
    event_listener.wait_for_events(
        [(fleet.master.id, "certsync/published")], timeout=30, after_time=start
    )
    time.sleep(10)  # time for a reaction that must not come
    jobs = event_listener.get_events([(fleet.master.id, "salt/job/*/new")], after_time=start)
    applied = [
        e.data
        for e in jobs
        if e.data.get("fun") in ("state.apply", DEPLOY) and consumer in e.data.get("minions", [])
    ]
    assert applied == []
    assert (fleet.stack.ssl_dir / "cert.pem").read_bytes() == before


def test_an_invalid_certificate_is_refused_and_the_old_keeps_serving(fleet, event_listener):
    """Names edited in NPM's UI so that the certificate no longer covers the mail host."""
    serving = fleet.issued[-1]
    start, mark = time.time(), len(fleet.bus.events)
    wrong = fleet.reissue(["webmail.example.test"])

    def refusal():
        rets = event_listener.get_events(
            [(fleet.master.id, f"salt/job/*/ret/{fleet.ids['mailcow']}")], after_time=start
        )
        for event in rets:
            returned = event.data.get("return")
            if event.data.get("fun") not in ("state.apply", DEPLOY) or not isinstance(
                returned, dict
            ):
                continue
            for key, state in returned.items():  # the reactor's deploy, or a scheduled run's
                refused = isinstance(state, dict) and state.get("result") is False
                if refused and key.startswith("certsync_|-") and key.endswith("_|-deployed"):
                    return state
        return None

    deployed = wait_until(refusal, 90, interval=1, what="the consumer to refuse the certificate")
    assert "does not cover mail.example.test (SANs: webmail.example.test)" in deployed["comment"]
    assert set(fleet.served().values()) == {serving.fingerprint}

    def alerts():
        """The conditions forwarded as certsync/alert by the reactor since the refusal."""
        return sorted(
            e["data"]["condition"]
            for e in fleet.bus.events[mark:]
            if e["tag"] == "certsync/alert" and e["data"].get("minion") == fleet.ids["mailcow"]
        )

    wait_until(lambda: alerts() == ["deploy_failed", "mismatch"], 60, interval=1, what="two alerts")
    time.sleep(5)  # five more beacon rounds: still one event per condition
    assert alerts() == ["deploy_failed", "mismatch"]
    metrics = fleet.textfile.read_text()
    assert 'certsync_last_deploy_success{hostname="mail.example.test",route="default"} 0' in metrics
    assert (
        'certsync_alert{condition="mismatch",hostname="mail.example.test",route="default"} 1'
        in metrics
    )
    status = fleet.master.salt_run_cli(timeout=120).run("certsync.status")
    assert status.returncode == 1
    row = status.data["consumers"][fleet.ids["mailcow"]]
    assert row["source_fingerprint"] == wrong.fingerprint, status.data
    assert row["deployed_fingerprint"] == serving.fingerprint
    assert row["agree"] is False
    good = fleet.reissue()  # back to a valid certificate for what follows
    fleet.wait_served(good.fingerprint)


def test_status_runner_agrees_when_converged(fleet):
    status = fleet.master.salt_run_cli(timeout=120).run("certsync.status")
    assert status.returncode == 0, status.data
    row = status.data["consumers"][fleet.ids["mailcow"]]
    fingerprint = fleet.issued[-1].fingerprint
    assert row["agree"] is True
    assert row["mine_fingerprint"] == row["deployed_fingerprint"] == fingerprint
    assert set(row["served"].values()) == {fingerprint}
    leaf = fleet.issued[-1].cert
    left = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
    assert left - 2 < row["days_left"] <= left + 1
    source = status.data["sources"][fleet.ids["npm"]]
    assert source["result"] is True
    assert source["renewal"]["next_renewal_keeps_key"] is True
    assert source["renewal"]["lineage"] == "npm-5"


def test_master_down_during_a_renewal(fleet):
    fleet.master.terminate()
    try:
        renewed = fleet.renew()
        time.sleep(5)  # the beacon fires into the void
        assert set(fleet.served().values()) != {renewed.fingerprint}
    finally:
        fleet.master.start()
    fleet.wait_served(renewed.fingerprint)


def test_consumer_down_during_a_renewal(fleet, event_listener):
    consumer = fleet.minions["mailcow"]
    consumer.terminate()
    try:
        start = time.time()
        renewed = fleet.renew()

        def published():
            events = event_listener.get_events(
                [(fleet.master.id, "certsync/published")], after_time=start
            )
            return any(e.data["data"]["fingerprint"] == renewed.fingerprint for e in events)

        wait_until(published, 60, interval=1, what="the source to publish the renewal")
        time.sleep(5)
        assert set(fleet.served().values()) != {renewed.fingerprint}
    finally:
        consumer.start()
    fleet.wait_served(renewed.fingerprint)


def _whole_pair(directory):
    """The fingerprint of the certificate in ``directory`` when ``key.pem`` is its key."""
    cert = x509.load_pem_x509_certificate((directory / "cert.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "key.pem").read_bytes(), None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        return None
    return cert.fingerprint(hashes.SHA256()).hex()


def test_master_down_between_the_publication_and_the_deploy(fleet, event_listener):
    """The source published; the master stops as the reactor would send the deploy. The
    pair stays whole, and the deploy comes (the reactor's, or the schedule's)."""
    start = time.time()
    renewed = fleet.renew()

    def published():
        events = event_listener.get_events(
            [(fleet.master.id, "certsync/published")], after_time=start
        )
        return any(e.data["data"]["fingerprint"] == renewed.fingerprint for e in events)

    wait_until(published, 60, interval=0.02, what="the source to publish the renewal")
    fleet.master.terminate()
    try:
        time.sleep(3)
        known = {issued.fingerprint for issued in fleet.issued}
        assert _whole_pair(fleet.stack.ssl_dir) in known
        assert set(fleet.served().values()) <= known
    finally:
        fleet.master.start()
    fleet.wait_served(renewed.fingerprint)


def test_consumer_restarted_during_its_deploy_job(fleet, event_listener):
    """The consumer minion (and its job) killed while the reactor's deploy runs: the pair
    stays whole; once it is back, the deploy is done again (its schedule)."""
    consumer = fleet.minions["mailcow"]
    start = time.time()
    renewed = fleet.renew()

    def deploy_started():
        events = event_listener.get_events([(fleet.master.id, "salt/job/*/new")], after_time=start)
        return any(
            e.data.get("fun") == DEPLOY and fleet.ids["mailcow"] in e.data.get("minions", [])
            for e in events
        )

    wait_until(deploy_started, 60, interval=0.02, what="the deploy job to start")
    time.sleep(0.2)  # into the job: opening the entry, the install, the reload
    consumer.terminate()
    try:
        known = {issued.fingerprint for issued in fleet.issued}
        assert _whole_pair(fleet.stack.ssl_dir) in known
        assert set(fleet.served().values()) <= known
    finally:
        consumer.start()
    fleet.wait_served(renewed.fingerprint)


def test_the_recipient_key_is_private(fleet):
    path = pathlib.Path(fleet.minions["mailcow"].config["pki_dir"]) / "certsync_recipient.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert type(key).__name__.startswith("X25519")


def _deployed_by_reactor(fleet, mark, fingerprint):
    """The minions the reactor sent its deploy to for ``fingerprint``: the jobs the
    runner's ``on_published`` returned, each announcing that fingerprint, from the
    events since the bus recorder's ``mark`` (waited for: a consumer's own scheduled
    run may deploy the publication before the reactor's jobs are sent)."""

    def targets():
        events = fleet.bus.events[mark:]
        announced = {}
        for event in events:
            data = event["data"]
            if not (event["tag"].startswith("salt/job/") and event["tag"].endswith("/new")):
                continue
            kwargs = next((a for a in data.get("arg") or [] if isinstance(a, dict)), {})
            if data.get("fun") == DEPLOY and kwargs.get("fingerprint") == fingerprint:
                announced[data.get("jid")] = set(data.get("minions", []))
        for event in events:
            returned = event["data"].get("return")
            if not (
                event["tag"].startswith("salt/run/")
                and event["data"].get("fun") == "runner.certsync.on_published"
                and isinstance(returned, dict)
            ):
                continue
            jobs = returned.get("jobs") or {}
            if jobs and set(jobs) <= set(announced):
                return set().union(*(announced[jid] for jid in jobs))
        return None

    return wait_until(targets, CONVERGE_TIMEOUT, interval=1, what="the reactor's deploy jobs")


def _service_host(root, haproxy):
    """A plain HAProxy host's consumer settings (kind service): the combined file HAProxy
    loads, handed to it through the runtime API, and its HTTPS endpoint."""
    return {
        "kind": "service",
        "dir": str(root / "pair"),
        "files": [{"path": haproxy.crt, "contents": "combined"}],
        "haproxy_socket": haproxy.socket,
        "endpoints": {"https": haproxy.port},
        "probe_address": "127.0.0.1",
        "verify_timeout": 15,
    }


def test_the_routes_follow_the_pillar_alone(fleet):
    """Add a consumer (a plain HAProxy host: kind service), then remove one, in the pillar
    only: each renewal reaches exactly the consumers the pillar names (the master's config
    names none), and the HAProxy host serves it through the runtime API, no reload."""
    source, consumer, spare = fleet.ids["npm"], fleet.ids["mailcow"], fleet.ids["spare"]
    (fleet.root / "spare-haproxy").mkdir()
    haproxy = HAProxy(fleet.root / "spare-haproxy", issue(HOST, sans=[HOST], key_kind="ec-p256"))
    pid = haproxy.proc.pid
    both = {consumer: fleet.settings, spare: _service_host(fleet.root / "spare", haproxy)}
    try:
        write_pillar(fleet.pillar_dir, source, both, fleet.live_dir, reuse_key=True)
        routes = fleet.master.salt_run_cli(timeout=120).run("certsync.routes")
        assert routes.data == {source: sorted(both)}, routes
        # provisioning the new host: its recipient key goes out, the source seals for it
        fleet.salt(spare, "state.apply", "certsync")
        current = fleet.issued[-1].fingerprint
        wait_until(
            lambda: haproxy.served_sha256() == current,
            CONVERGE_TIMEOUT,
            interval=1,
            what="the added consumer to deploy",
        )

        mark = len(fleet.bus.events)
        renewed = fleet.renew()
        fleet.wait_served(renewed.fingerprint)
        wait_until(
            lambda: haproxy.served_sha256() == renewed.fingerprint,
            CONVERGE_TIMEOUT,
            interval=1,
            what="the renewal on the added consumer",
        )
        assert _deployed_by_reactor(fleet, mark, renewed.fingerprint) == {consumer, spare}
        assert haproxy.proc.pid == pid and haproxy.proc.poll() is None  # never reloaded
        assert deployed_fingerprint(fleet.root / "spare" / "pair") == renewed.fingerprint

        write_pillar(fleet.pillar_dir, source, {spare: both[spare]}, fleet.live_dir, reuse_key=True)
        mark = len(fleet.bus.events)
        again = fleet.renew()
        wait_until(
            lambda: haproxy.served_sha256() == again.fingerprint,
            CONVERGE_TIMEOUT,
            interval=1,
            what="the renewal on the remaining consumer",
        )
        assert _deployed_by_reactor(fleet, mark, again.fingerprint) == {spare}
        assert set(fleet.served().values()) == {renewed.fingerprint}
    finally:
        write_pillar(
            fleet.pillar_dir, source, {consumer: fleet.settings}, fleet.live_dir, reuse_key=True
        )
        haproxy.stop()
