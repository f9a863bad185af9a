"""
A certsync fleet on this host: a real salt-master with the reactor, a source
(NPM) minion, consumer (mailcow) minions with mailcow-like stacks, and minions
that have nothing to do with it, all through pytest-salt-factories.
"""

import json
import pathlib
import threading
import time

import salt.utils.event
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .loader import UTILS

SALT_TREE = pathlib.Path(__file__).resolve().parents[1] / "salt"
HOST = "mail.example.test"
NPM_DIR = "npm-5"


#: A minion's own settings as installed. Salt processes beacons once a second but
#: counts a beacon's ``interval`` in ``loop_interval`` steps: pytest-salt-factories'
#: 0.05 would make the formula's 1-second beacon look every 20 seconds.
MINION_CONFIG = {"loop_interval": 1, "log_level_logfile": "debug"}


def wait_until(predicate, timeout, interval=0.5, what="condition"):
    """Poll ``predicate`` until it returns a true value; bounded in time and count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def deployed_fingerprint(ssl_dir):
    """The SHA-256 fingerprint of ``ssl_dir/cert.pem``; None while it is missing or unreadable."""
    try:
        cert = x509.load_pem_x509_certificate((pathlib.Path(ssl_dir) / "cert.pem").read_bytes())
    except (OSError, ValueError):
        return None
    return cert.fingerprint(hashes.SHA256()).hex()


def master_config(pillar_dir):
    """The master's certsync set-up, as docs/topics/on-your-hosts.md gives it: the trees
    and the reactor (the routes come from the pillar)."""
    return {
        "file_roots": {"base": [str(SALT_TREE)]},
        "pillar_roots": {"base": [str(pillar_dir)]},
        "reactor": [
            {"salt/beacon/*/certsync/renewed": ["salt://certsync/reactor/publish.sls"]},
            {"certsync/recipient": ["salt://certsync/reactor/publish.sls"]},
            {"certsync/published": ["salt://certsync/reactor/deploy.sls"]},
            {"salt/beacon/*/certsync/alert/*": ["salt://certsync/reactor/alert.sls"]},
            {"salt/beacon/*/certsync/error": ["salt://certsync/reactor/alert.sls"]},
        ],
        "log_level_logfile": "debug",
    }


def stack_settings(stack):
    """Consumer pillar settings for a mailcow-like stack."""
    return {
        "mailcow_dir": str(stack.root),
        "endpoints": list(stack.endpoints),  # ports and addresses from its mailcow.conf
        "probe_address": "127.0.0.1",
        "verify_timeout": 15,
    }


def file_only_settings(mailcow_dir):
    """Consumer pillar settings for a checkout with no containers: files only."""
    return {"mailcow_dir": str(mailcow_dir), "services": [], "endpoints": []}


TEST_SCHEDULE = {"seconds": 20, "splay": 1}


def write_pillar(pillar_dir, source_id, consumers, live_dir, schedule=None, **source):
    """The certsync pillar: ``consumers`` maps ids to their settings. ``schedule``:
    None for a short schedule (tests), False for the formula's default. ``source``:
    more source settings (``reuse_key``; ``kind`` and its settings with no ``live_dir``)."""
    pillar_dir = pathlib.Path(pillar_dir)
    pillar_dir.mkdir(parents=True, exist_ok=True)
    top = {"base": {minion: ["certsync"] for minion in [source_id, *consumers]}}
    # each consumer's credentials in an SLS of its own, for it alone, as the docs say
    consumers, own = _split_credentials(consumers)
    for number, (minion, secrets) in enumerate(sorted(own.items())):
        name = f"certsync_own_{number}"
        top["base"][minion].append(name)
        mine = {"certsync": {"consumers": {minion: secrets}}}
        (pillar_dir / f"{name}.sls").write_text(json.dumps(mine))
    pillar = {
        "certsync": {
            "hostname": HOST,
            "source": {
                "minion": source_id,
                **({"live_dir": str(live_dir), "dir": NPM_DIR} if live_dir else {}),
                **source,
            },
            "consumers": consumers,
        }
    }
    if schedule is not False:
        pillar["certsync"]["schedule"] = schedule or TEST_SCHEDULE
    (pillar_dir / "top.sls").write_text(json.dumps(top))
    (pillar_dir / "certsync.sls").write_text(json.dumps(pillar))


def _split_credentials(consumers):
    """``consumers`` without their credentials, and each consumer's credentials alone
    (under the same keys)."""

    def split(value):
        if not isinstance(value, dict):
            return value, None
        kept, secrets = {}, {}
        for key, item in value.items():
            if UTILS["certsync_settings.is_credential"](key):
                secrets[key] = item
                continue
            kept[key], found = split(item)
            if found:
                secrets[key] = found
        return kept, secrets or None

    shared, own = {}, {}
    for minion, settings in consumers.items():
        shared[minion], secrets = split(settings)
        if secrets:
            own[minion] = secrets
    return shared, own


def certsync_returns(events):
    """A line per certsync state in the job returns among ``events`` (a BusRecorder's):
    its minion, function, state id, result and comment, for a failed wait's message."""
    lines = []
    for event in list(events):
        data = event.get("data") or {}
        ret = data.get("return") if "/ret/" in event.get("tag", "") else None
        for key, state in (ret if isinstance(ret, dict) else {}).items():
            if key.startswith("certsync_|-") and isinstance(state, dict):
                lines.append(
                    f"{data.get('id')} {data.get('fun')} {state.get('__id__')}: "
                    f"{state.get('result')} {state.get('comment')}"
                )
    return "\n".join(lines)


class BusRecorder(threading.Thread):
    """Every event on a master's bus, recorded from now until stop(); each also
    handed to ``on_event`` (called in this thread) when given."""

    def __init__(self, master_opts, on_event=None):
        super().__init__(daemon=True)
        self.opts = master_opts
        self.on_event = on_event
        self.events = []
        self.listening = threading.Event()
        self._stop_flag = threading.Event()

    def run(self):
        with salt.utils.event.get_master_event(
            self.opts, self.opts["sock_dir"], listen=True
        ) as bus:
            bus.subscribe("")
            self.listening.set()
            while not self._stop_flag.is_set():
                event = bus.get_event(wait=0.5, full=True)
                if event:
                    self.events.append(event)
                    if self.on_event:
                        self.on_event(event)

    def start(self):
        super().start()
        if not self.listening.wait(30):
            raise RuntimeError("could not listen on the master's event bus")
        return self

    def stop(self):
        self._stop_flag.set()
        self.join(10)
