"""
certsync's beacon: renewals on the source, alerts on a consumer
===============================================================

:depends: the ``certsync`` and ``certsync_source`` (on a consumer ``certsync_monitor``)
    execution modules

On the source (NPM) minion it fires ``salt/beacon/<minion id>/certsync/renewed``
with the hostname, fingerprint, ``not_after`` and source directory (never key
material) when the certificate covering ``hostname`` has a new fingerprint.

.. code-block:: yaml

    beacons:
      certsync:
        - hostname: mail.example.com
        - kind: npm                          # the default; see certsync_source
        - live_dir: /etc/letsencrypt/live   # the source's settings of its kind
        - interval: 1

A source of several routes (the pillar's ``certsync:certificates``) watches
each route's certificate, and its ``renewed`` event names the ``route``:

.. code-block:: yaml

    beacons:
      certsync:
        - routes:
            default: {hostname: mail.example.com, live_dir: /etc/letsencrypt/live}
            shop: {hostname: shop.example.com, live_dir: /etc/letsencrypt/live}
        - interval: 1

Between changes it only ``stat``\\ s the files the source kind names
(``certsync_source.watched``: for NPM each lineage's ``fullchain.pem``,
through ``live/``'s symlinks); it parses them only when one changed. The last fingerprint
it announced is kept in the minion's cachedir, so a restart or a state run does
not fire it again; the certsync schedule covers a lost event. The
``certsync_watch`` engine runs this beacon the moment inotify sees the source
change; they share the record, so a renewal is announced once. A source caught
mid-write (Caddy 2.6 rewrites its ``.crt`` in place) is read again on the next
ticks; one still unreadable after ``RETRIES`` ticks fires one
``salt/beacon/<minion id>/certsync/error`` and waits for its next change.

On a consumer (``alert_days`` set) it runs ``certsync_monitor.check`` and fires
``salt/beacon/<minion id>/certsync/alert/<condition>`` once when a condition
starts (``expiry``, ``mismatch``, ``unreachable``, ``deploy_failed``,
``dane_pending``, ``uncovered``, ``relay_failing``; again only after it
cleared); a mismatch or an unreachable endpoint must last ``grace`` seconds
first (default 600: a renewal is served seconds after the source has it, a
restarted service answers again within seconds). A failure of the beacon
itself is ``salt/beacon/<minion id>/certsync/error``. With ``textfile`` it
also writes the Prometheus metrics there. With ``alerts:event_log`` in the
consumer's pillar, each alert that fires or clears is also a JSON line there
(``certsync_monitor.log_event``).

.. code-block:: yaml

    beacons:
      certsync:
        - alert_days: 21
        - grace: 600
        - textfile: /var/lib/prometheus/node-exporter/certsync.prom
        - interval: 300
"""

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

#: Conditions that must last DEFAULT_GRACE (or ``grace``) seconds before they alert.
GRACED = ("mismatch", "unreachable")
#: Ticks a source that changed but cannot be read is read again before it is an error.
RETRIES = 3
#: Seconds a mismatch must last before it is an alert (a renewal converges in seconds).
DEFAULT_GRACE = 600
#: The beacon's own keys and Salt's; the others are the source's settings of its kind.
BEACON_KEYS = frozenset(
    {
        "hostname",
        "kind",
        "interval",
        "enabled",
        "disable_during_state_run",
        "run_once",
        "run_on_start",
        "beacon_module",
        "routes",
    }
)
#: A DNS host name (it also names the beacon's record file in the cachedir).
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z"
)

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
    """Check the beacon configuration (the source kind checks its own settings)."""
    cfg = _config(config)
    valid, why = _settled(cfg)
    if not valid or "alert_days" in cfg:
        return valid, why
    try:
        for route in routes(cfg).values():
            _source("watched", route)
    except (CommandExecutionError, SaltInvocationError) as exc:
        return False, f"certsync beacon: {exc}"
    return True, "Valid beacon configuration"


def _settled(cfg):
    """The checks that need no file system: made again on every tick, cheaply."""
    if "alert_days" in cfg:
        days = cfg["alert_days"]
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            return False, f"certsync beacon: alert_days must be a whole number, not {days!r}"
        grace = cfg.get("grace", DEFAULT_GRACE)
        if isinstance(grace, bool) or not isinstance(grace, int) or grace < 0:
            return False, f"certsync beacon: grace must be whole seconds, not {grace!r}"
        if cfg.get("textfile") and not str(cfg["textfile"]).endswith(".prom"):
            return False, "certsync beacon: textfile must be a *.prom file"
        return True, "Valid beacon configuration"
    if "routes" in cfg:
        return _routes_settled(cfg)
    hostname = cfg.get("hostname")
    if not hostname:
        return False, "certsync beacon: hostname is required"
    if not isinstance(hostname, str) or not _HOSTNAME.match(hostname):
        return False, f"certsync beacon: hostname {hostname!r} is not a DNS host name"
    if not isinstance(cfg.get("kind", ""), str):
        return False, f"certsync beacon: kind must be a source kind, not {cfg['kind']!r}"
    if not _where(cfg):
        return False, "certsync beacon: give the source's settings (npm: live_dir or source)"
    return True, "Valid beacon configuration"


def _routes_settled(cfg):
    """The checks of ``routes``: a mapping of route names to certificates, each as the
    beacon's own settings would be."""
    routes = cfg["routes"]
    if not isinstance(routes, dict) or not routes:
        return False, "certsync beacon: routes must map route names to their settings"
    if "hostname" in cfg:
        return False, "certsync beacon: give hostname in each route, not beside routes"
    for name, route in routes.items():
        if not isinstance(route, dict) or "routes" in route:
            return False, f"certsync beacon: route {str(name)[:40]!r} must be a mapping"
        valid, why = _settled(route)
        if not valid:
            return False, f"{why} (route {str(name)[:40]})"
    return True, "Valid beacon configuration"


def routes(cfg):
    """The certificates a source's beacon watches, ``{route: settings}``: its
    ``routes``, or its own settings as the one route (None: the default route, which
    its events do not name)."""
    if "routes" in cfg:
        return {str(name): route for name, route in cfg["routes"].items()}
    return {None: cfg}


def _where(cfg):
    """The source's settings of its kind: every key that is not the beacon's or Salt's."""
    return {key: value for key, value in cfg.items() if key not in BEACON_KEYS}


def _source(function, cfg):
    """``certsync_source.<function>`` for this beacon's source (its kind validates it)."""
    kind = cfg.get("kind")
    return __salt__[f"certsync_source.{function}"](cfg["hostname"], kind, **_where(cfg))


def _signature(cfg):
    """What changes when the source writes or relinks a certificate: cheap to compute."""
    parts = []
    for path in _source("watched", cfg):
        try:
            st = os.stat(path)
            parts.append((path, os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError as exc:
            parts.append((path, exc.errno))
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _record_name(hostname, route=None):
    """The record of what was last announced for a route's certificate: by its
    hostname alone for the default route; with the route for another (two routes may
    watch one hostname in two lineages: an RSA and an EC certificate)."""
    return f"beacon-{hostname}" if route in (None, "default") else f"beacon.{route}.{hostname}"


def _read_record(name):
    return __salt__["certsync_monitor.record"](name)


def _write_record(name, record):
    __salt__["certsync_monitor.keep_record"](name, record)


@contextlib.contextmanager
def _announcing(name):
    """Held while the record ``name`` is compared and written: the certsync_watch
    engine runs this beacon in its own process, and a renewal is announced once."""
    path = os.path.join(__opts__["cachedir"], "certsync", f"{name}.json.lock")
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _last_announced(name):
    return _read_record(name).get("fingerprint")


def _record(name, fingerprint):
    _write_record(name, {"fingerprint": fingerprint})


def _current(cfg):
    found = _source("locate", cfg)
    info = __salt__["certsync.info"](found["fullchain"])
    return {
        "hostname": cfg["hostname"],
        "fingerprint": info["fingerprint"],
        "not_after": info["not_after"],
        "source": found["dir"],
    }


def _alerts(cfg):
    """An ``alert/<condition>`` event for each condition that started since the last look."""
    try:
        report = __salt__["certsync_monitor.check"](cfg["alert_days"])
    except (CommandExecutionError, SaltInvocationError) as exc:
        log.warning("certsync beacon: %s", exc)
        return [{"tag": "error", "error": str(exc)}]
    if cfg.get("textfile"):
        try:
            __salt__["certsync_monitor.textfile"](cfg["textfile"], report=report)
        except (CommandExecutionError, SaltInvocationError, OSError) as exc:
            log.warning("certsync beacon: metrics not written: %s", exc)
    record = _read_record("beacon-alerts")
    now, grace = time.time(), cfg.get("grace", DEFAULT_GRACE)
    seen = record.get("since") if isinstance(record.get("since"), dict) else {}
    since = {
        name: seen[name] if isinstance(seen.get(name), (int, float)) else now
        for name, state in report["conditions"].items()
        if state["active"]
    }
    # A renewal is served a few seconds after the source has it, a restarted service
    # answers again within seconds: these count only once they outlast the grace.
    due = {name for name in since if name not in GRACED or now - since[name] >= grace}
    before = record.get("fired") if isinstance(record.get("fired"), list) else []
    fired = {name for name in since if name in before}
    new = sorted(due - fired)
    updated = {"since": since, "fired": sorted(fired | due)}
    if updated != record:
        _write_record("beacon-alerts", updated)
    cleared = sorted(str(name) for name in before if name not in since)
    _log_alerts(report, new, cleared)
    return [
        {
            "tag": f"alert/{name}",
            "condition": name,
            "hostname": report["hostname"],
            "detail": report["conditions"][name]["detail"],
        }
        for name in new
    ]


def _log_alerts(report, fired, cleared):
    """Each alert that fired or cleared in the event log (``alerts:event_log``)."""
    conditions = report["conditions"]
    try:
        for name, state in [*((n, "fired") for n in fired), *((n, "cleared") for n in cleared)]:
            __salt__["certsync_monitor.log_event"](
                "alert",
                condition=name,
                state=state,
                hostname=report["hostname"],
                fingerprint=report.get("source_fingerprint"),
                detail=conditions.get(name, {}).get("detail") if state == "fired" else None,
            )
    except (CommandExecutionError, SaltInvocationError) as exc:
        log.warning("certsync beacon: the event log was not written: %s", exc)


def beacon(config):
    """Return a ``renewed`` event when the certificate's fingerprint changed
    (source), or ``alert/<condition>`` events (consumer, ``alert_days``)."""
    cfg = _config(config)
    if "alert_days" in cfg:
        return _alerts(cfg)
    valid, why = _settled(cfg)
    if not valid:  # Salt validates first; the record's file name depends on it
        return [{"tag": "error", "error": why}]
    events = []
    for route, settings in routes(cfg).items():
        found = _renewed(settings, route)
        events += [{**event, "route": route} if route else event for event in found]
    return events


def _renewed(cfg, route=None):
    """A ``renewed`` event when the certificate of one route's settings changed."""
    seen = __context__.setdefault("certsync.beacon", {})
    hostname, name = cfg["hostname"], _record_name(cfg["hostname"], route)
    try:  # the source kind refuses a bad setting here
        signature = _signature(cfg)
    except (CommandExecutionError, SaltInvocationError) as exc:
        return _failed(seen, name, hostname, None, exc)
    if seen.get(name, {}).get("signature") == signature:
        return []
    try:
        current = _current(cfg)
    except (CommandExecutionError, SaltInvocationError) as exc:
        return _failed(seen, name, hostname, signature, exc)
    seen[name] = {"signature": signature}
    with _announcing(name):
        if current["fingerprint"] == _last_announced(name):
            return []
        _record(name, current["fingerprint"])
    return [{"tag": "renewed", **current}]


def _failed(seen, name, hostname, signature, exc):
    """A source caught mid-write (a ``.crt`` before its ``.key``) is read again on
    the next ticks; one that stays unreadable is one ``error`` event, then waits
    for its next change (a refused setting: for another error)."""
    state, error = seen.get(name, {}), str(exc)
    if signature is None and state.get("error") == error:
        return []
    tries = state.get("tries", 0) + 1 if state.get("failing", False) == signature else 1
    if signature is not None and tries < RETRIES:
        seen[name] = {"failing": signature, "tries": tries}
        log.debug("certsync beacon: %s (read again on the next tick)", exc)
        return []
    seen[name] = {"signature": signature, "error": error}
    log.warning("certsync beacon: %s", exc)
    return [{"tag": "error", "hostname": hostname, "error": error}]
