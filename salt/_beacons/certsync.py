"""
Notice a renewed certificate on the source (NPM) minion
=======================================================

:depends: the ``certsync`` execution module

Fires ``salt/beacon/<minion id>/certsync/renewed`` with the hostname,
fingerprint, ``not_after`` and source directory (never key material) when the
certificate covering ``hostname`` has a new fingerprint.

.. code-block:: yaml

    beacons:
      certsync:
        - hostname: mail.example.com
        - live_dir: /etc/letsencrypt/live   # or: source: /etc/letsencrypt/live/npm-5
        - interval: 10

Between changes it only ``stat``\\ s the ``fullchain.pem`` files (through NPM's
``live/`` symlinks); it parses them only when one changed. The last fingerprint
it announced is kept in the minion's cachedir, so a restart or a state run does
not fire it again; the certsync schedule covers a lost event.
"""

import hashlib
import json
import logging
import os

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "certsync"


def __virtual__():
    return __virtualname__


def _config(config):
    merged = {}
    for item in config if isinstance(config, list) else [config]:
        if isinstance(item, dict):
            merged.update(item)
    return merged


def validate(config):
    """Check the beacon configuration."""
    cfg = _config(config)
    if not cfg.get("hostname"):
        return False, "certsync beacon: hostname is required"
    if bool(cfg.get("source")) == bool(cfg.get("live_dir")):
        return False, "certsync beacon: give exactly one of source and live_dir"
    return True, "Valid beacon configuration"


def _watched(cfg):
    if cfg.get("source"):
        return [os.path.join(cfg["source"], "fullchain.pem")]
    live_dir = cfg["live_dir"]
    try:
        entries = sorted(os.listdir(live_dir))
    except OSError:
        return [live_dir]
    return [os.path.join(live_dir, entry, "fullchain.pem") for entry in entries]


def _signature(cfg):
    """What changes when NPM writes or relinks a certificate: cheap to compute."""
    parts = []
    for path in _watched(cfg):
        try:
            st = os.stat(path)
            parts.append((path, os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError as exc:
            parts.append((path, exc.errno))
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _record_path(hostname):
    return os.path.join(__opts__["cachedir"], "certsync", f"beacon-{hostname}.json")


def _last_announced(hostname):
    try:
        with open(_record_path(hostname), encoding="utf-8") as handle:
            return json.load(handle).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def _record(hostname, fingerprint):
    path = _record_path(hostname)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temp = f"{path}.{os.getpid()}"
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump({"fingerprint": fingerprint}, handle)
    os.replace(temp, path)


def _current(cfg):
    if cfg.get("source"):
        fullchain = os.path.join(cfg["source"], "fullchain.pem")
    else:
        fullchain = __salt__["certsync.find_source"](cfg["hostname"], cfg["live_dir"])["fullchain"]
    info = __salt__["certsync.info"](fullchain)
    return {
        "hostname": cfg["hostname"],
        "fingerprint": info["fingerprint"],
        "not_after": info["not_after"],
        "source": os.path.dirname(fullchain),
    }


def beacon(config):
    """Return a ``renewed`` event when the certificate's fingerprint changed."""
    cfg = _config(config)
    seen = __context__.setdefault("certsync.beacon", {})
    signature = _signature(cfg)
    if seen.get(cfg["hostname"]) == signature:
        return []
    seen[cfg["hostname"]] = signature
    try:
        current = _current(cfg)
    except (CommandExecutionError, SaltInvocationError) as exc:
        log.warning("certsync beacon: %s", exc)
        return [{"tag": "error", "hostname": cfg["hostname"], "error": str(exc)}]
    if current["fingerprint"] == _last_announced(cfg["hostname"]):
        return []
    _record(cfg["hostname"], current["fingerprint"])
    return [{"tag": "renewed", **current}]
