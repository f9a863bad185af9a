"""
Is the mail server healthy? Alerts and Prometheus metrics for a consumer
=========================================================================

:depends: the ``certsync`` and ``tlsprobe`` execution modules; prometheus_client
    for :py:func:`textfile`; the ``mailcow`` module for the relay

``check`` looks at what the consumer's endpoints serve (on the wire; with no
endpoints configured, at the deployed file, as endpoint ``deployed``), the
fingerprint its source published in the mine, and the result of the last
``certsync.deployed`` run, and reports these alert conditions:

``expiry``
    an endpoint serves a certificate with fewer than ``days`` days left;
``mismatch``
    an endpoint serves another certificate than the source's;
``unreachable``
    an endpoint answers no TLS handshake (refused, timed out, another
    protocol): a port that is off, or a service that is down. No deploy
    restarts a service for it;
``deploy_failed``
    the last ``certsync.deployed`` run failed;
``dane_pending``
    the last run held a new certificate back because no published TLSA
    record matches it yet (the detail is the exact record to publish);
``uncovered``
    a mailcow per-name directory lists names the deployed certificate does
    not cover, so certsync leaves it alone; its own certificate (expiry in
    the detail) is renewed by nobody once mailcow's ACME client is off;
``relay_failing``
    with a ``relay`` configured (``{host, port}``): mail through it was
    deferred or bounced and none was sent since, for longer than its
    ``grace`` (``mailcow.relay_status`` over ``window`` seconds of
    postfix-mailcow's log).

``textfile`` writes the same as node_exporter textfile-collector metrics,
atomically, with ``prometheus_client``'s own writer. The ``certsync`` beacon
(``alert_days``) calls both, and fires
``certsync/alert/<condition>`` once when a condition starts.

``log_event`` appends alerts (fired and cleared) and deploy results to the
event log set at ``alerts:event_log`` in the consumer's pillar: one JSON
object per line, for Wazuh, Filebeat or rsyslog to read.

Settings come from the formula's pillar (``certsync:consumers:<id>``).
"""

import datetime
import hashlib
import json
import logging
import math
import os
import re
import stat
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "certsync_monitor"

DEFAULT_DAYS = 21
#: The event log's size bound when ``alerts:event_log_max_bytes`` is not set: 10 MiB.
EVENT_LOG_MAX_BYTES = 10 * 1024 * 1024
#: What an event log line may carry besides ``program``, ``time``, ``event``, ``minion``.
EVENT_FIELDS = (
    "condition",
    "state",
    "result",
    "installed",
    "hostname",
    "fingerprint",
    "dest",
    "route",
    "detail",
)
#: Events and the values of their ``state`` / ``result``.
EVENTS = {"alert": ("fired", "cleared"), "deploy": ("succeeded", "failed")}
METRICS = {
    "certsync_cert_expiry_timestamp_seconds": "Expiry (not_after) of the certificate an "
    "endpoint serves, Unix time.",
    "certsync_cert_matches_source": "1 when the endpoint serves the source's certificate.",
    "certsync_probe_success": "1 when the TLS handshake with the endpoint succeeded.",
    "certsync_last_deploy_success": "1 when the last certsync.deployed run succeeded.",
    "certsync_last_deploy_run_timestamp_seconds": "When certsync.deployed last ran, Unix time.",
    "certsync_last_successful_deploy_timestamp_seconds": "When certsync.deployed last "
    "succeeded, Unix time.",
    "certsync_alert": "1 while the alert condition holds.",
    "certsync_sni_dir_uncovered": "1 for a mailcow per-name dir certsync leaves alone: the "
    "source certificate does not cover every name in its domains file.",
    "certsync_sni_dir_expiry_timestamp_seconds": "Expiry (not_after) of the certificate in "
    "such a dir, Unix time: nobody renews it once mailcow's own ACME client is off.",
    "certsync_relay_last_success_timestamp_seconds": "When postfix last sent a message "
    "through the relay, Unix time (within the window read).",
    "certsync_relay_deferred": "Delivery attempts through the relay deferred within the window.",
    "certsync_relay_bounced": "Delivery attempts through the relay bounced within the window.",
    "certsync_relay_status_success": "1 when postfix-mailcow's log and queue could be read.",
    "certsync_mail_queue_messages": "Messages in postfix-mailcow's queue, per queue.",
    "certsync_mail_queue_oldest_deferred_age_seconds": "Age of the oldest deferred message "
    "in postfix-mailcow's queue (0 when none).",
}


def __virtual__():
    if "certsync_settings.consumer" not in __salt__:
        return (False, "the certsync execution module is not available")
    return __virtualname__


def _record_path(dest, kind="deploy"):
    digest = hashlib.sha256(os.path.abspath(dest).encode()).hexdigest()[:16]
    return os.path.join(__opts__["cachedir"], "certsync", f"{kind}-{digest}.json")


def _write_record(path, record):
    __utils__["certsync_files.write_json_record"](path, record)


#: The names of the records :py:func:`record` and :py:func:`keep_record` take.
_RECORD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,250}")


def _named_record(name):
    if not isinstance(name, str) or not _RECORD_NAME.fullmatch(name):
        raise SaltInvocationError(f"a record name is letters, digits, . and -, not {name!r:.80}")
    return os.path.join(__opts__["cachedir"], "certsync", f"{name}.json")


def record(name):
    """
    certsync's JSON record ``name`` in the cachedir (``certsync/<name>.json``):
    a mapping, empty when there is none or it does not read as one. What the
    source beacon keeps between its runs (``beacon-<hostname>``, ``beacon.<route>.<hostname>``,
    ``beacon-alerts``) is read through here.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_monitor.record beacon-alerts
    """
    return __utils__["certsync_files.read_json_record"](_named_record(name)) or {}


def keep_record(name, value):
    """
    Replace certsync's JSON record ``name`` in the cachedir with ``value`` (a
    mapping), atomically, 0600 in a 0700 directory: the one writer of every
    record certsync keeps.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_monitor.keep_record beacon-alerts '{}'
    """
    if not isinstance(value, dict):
        raise SaltInvocationError("a record is a mapping")
    _write_record(_named_record(name), value)
    return True


def paused(dest):
    """
    Whether deploys into ``dest`` are paused (by ``certsync.rolled_back``, the
    formula's ``certsync.rollback``): ``since`` (Unix time) and ``reason``, or
    None. ``certsync.deployed`` deploys nothing while they are.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_monitor.paused /opt/mailcow-dockerized/data/assets/ssl
    """
    path = _record_path(dest, "paused")
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _unreadable_pause(path, time.time(), exc.strerror)
    if not stat.S_ISREG(found.st_mode):
        return _unreadable_pause(path, found.st_mtime, "not a regular file")
    record = __utils__["certsync_files.read_json_record"](path)
    since = record.get("since") if record else None
    if isinstance(since, bool) or not isinstance(since, (int, float)) or not math.isfinite(since):
        return _unreadable_pause(path, found.st_mtime, "not a pause record certsync wrote")
    return {"since": since, "reason": str(record.get("reason", ""))[:300]}


def _unreadable_pause(path, since, why):
    """A pause record that is there but cannot be read: still a pause (fail closed: a
    lost pause would re-install the certificate rolled back from), saying why."""
    log.warning("certsync: %s: the pause record cannot be read (%s): still paused", path, why)
    return {
        "since": since,
        "reason": f"the pause record {path} cannot be read ({why}); resume to deploy again",
    }


def pause(dest, reason):
    """
    Pause the deploys into ``dest`` (the schedule's, the reactor's) until
    :py:func:`resume`. Returns the pause.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_monitor.pause /opt/mailcow-dockerized/data/assets/ssl \
            reason="rolled back by hand"
    """
    record = {"since": time.time(), "reason": str(reason)[:300]}
    _write_record(_record_path(dest, "paused"), record)
    return record


def restarts(scope, within=3600):
    """
    The services that ``certsync.deployed`` restarted within the last
    ``within`` seconds for ``scope`` (what the consumer kind counts restarts
    by: mailcow's checkout, a ``service`` consumer's directory): {service:
    when, Unix time}. The state restarts a service at most once an hour from
    these.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_monitor.restarts /opt/mailcow-dockerized
    """
    record = __utils__["certsync_files.read_json_record"](_record_path(scope, "restarts"))
    now = time.time()
    return {
        service: when
        for service, when in (record or {}).items()
        if isinstance(when, (int, float)) and 0 <= now - when < within
    }


def note_restarts(scope, services):
    """
    Note that ``certsync.deployed`` restarted ``services`` for ``scope`` now
    (what :py:func:`restarts` reads). Returns the record.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_monitor.note_restarts /opt/mailcow-dockerized '[postfix-mailcow]'
    """
    path = _record_path(scope, "restarts")
    record = __utils__["certsync_files.read_json_record"](path) or {}
    record = {k: v for k, v in record.items() if isinstance(v, (int, float))}
    record.update(dict.fromkeys(services, time.time()))
    _write_record(path, record)
    return record


def resume(dest):
    """
    Let deploys into ``dest`` run again. Returns the pause it ended, or None.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_monitor.resume /opt/mailcow-dockerized/data/assets/ssl
    """
    was = paused(dest)
    path = _record_path(dest, "paused")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # a directory planted there: named, the pause kept
        raise CommandExecutionError(f"{path}: cannot remove the pause: {exc.strerror}") from None
    return was


def last_deploy(dest):
    """
    The last ``certsync.deployed`` run for the directory ``dest``: when,
    whether it succeeded, whether it installed, when it last succeeded; None
    before the first run.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_monitor.last_deploy /opt/mailcow-dockerized/data/assets/ssl
    """
    return __utils__["certsync_files.read_json_record"](_record_path(dest))


def record_deploy(
    dest, result, installed=False, summary="", dane_pending=None, certificate=None, route=None
):
    """
    Note the result of a ``certsync.deployed`` run for ``dest`` (the state
    calls this; ``summary`` is its comment's first line, never key material;
    ``dane_pending`` the TLSA record the DANE gate waits for, when it held
    the deploy; ``certificate`` the ``fingerprint`` and ``not_before`` of the
    certificate it installed, kept until the next install; ``route`` the
    route of the pillar's ``certsync:certificates`` it deployed, named in the
    event log).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_monitor.record_deploy /srv/mailcow/data/assets/ssl True
    """
    now = time.time()
    previous = last_deploy(dest) or {}
    record = {
        "dest": os.path.abspath(dest),
        "time": now,
        "result": bool(result),
        "installed": bool(installed),
        "summary": str(summary).splitlines()[0][:300] if summary else "",
        "last_success": now if result else previous.get("last_success"),
        "last_install": now if result and installed else previous.get("last_install"),
        "dane_pending": str(dane_pending)[:300] if dane_pending and not result else None,
        "certificate": _installed(certificate) if installed else previous.get("certificate"),
    }
    _write_record(_record_path(dest), record)
    _log_deploy(record, route)
    return record


def _event_log():
    """This consumer's event log from its pillar: (path, max_bytes), path None when off.
    A bad setting is an error naming its pillar key."""
    setting = __utils__["certsync_settings.consumer_setting"]
    cfg, me = __pillar__.get("certsync"), __opts__["id"]
    path, where = setting(cfg, me, "alerts", "event_log")
    if not path:
        return None, None
    if not isinstance(path, str) or not os.path.isabs(path) or "\n" in path:
        raise SaltInvocationError(f"{where} must be an absolute path, not {path!r}")
    size, where = setting(cfg, me, "alerts", "event_log_max_bytes")
    if size in (None, ""):
        return path, EVENT_LOG_MAX_BYTES
    return path, __utils__["certsync_args.number"](size, where, 4096, 2**40, whole=True)


def log_event(event, **fields):
    """
    Append one event to this consumer's event log (``alerts:event_log`` in
    its pillar; nothing when it is not set) as one JSON object on one line:
    ``program`` (certsync), ``time`` (UTC, ISO 8601), ``event`` (``alert``
    or ``deploy``), ``minion``, and the fields given among ``condition``,
    ``state`` (fired/cleared), ``result`` (succeeded/failed), ``installed``,
    ``hostname``, ``fingerprint``, ``dest``, ``route`` (beside the default
    route), ``detail``. Never key material:
    the callers pass names, fingerprints and one-line summaries. At
    ``alerts:event_log_max_bytes`` (10 MiB) the file is rotated to
    ``<path>.1``. Returns the line written, or None.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_monitor.log_event alert condition=expiry state=fired \
            detail='a test line for the SIEM'
    """
    if event not in EVENTS:
        raise SaltInvocationError(f"event {event!r} is not one of {', '.join(EVENTS)}")
    fields = {key: value for key, value in fields.items() if not key.startswith("__")}
    unknown = set(fields) - set(EVENT_FIELDS)
    if unknown:
        raise SaltInvocationError(f"unknown event fields: {', '.join(sorted(unknown))}")
    status = fields.get("state" if event == "alert" else "result")
    if status not in EVENTS[event]:
        raise SaltInvocationError(
            f"a {event} event's {'state' if event == 'alert' else 'result'} must be one of "
            f"{', '.join(EVENTS[event])}, not {status!r}"
        )
    path, max_bytes = _event_log()
    if path is None:
        return None
    record = {
        "program": "certsync",
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "event": event,
        "minion": __opts__["id"],
    }
    for key in EVENT_FIELDS:
        value = fields.get(key)
        if isinstance(value, bool):
            record[key] = value
        elif value is not None:  # text: one line, escaped, cut short
            text = " ".join(str(value).split())
            record[key] = __utils__["certsync_util.printable"](text)[:1000]
    line = json.dumps(record, sort_keys=True, ensure_ascii=True)
    __utils__["certsync_files.append_rotated"](path, line + "\n", max_bytes)
    return line


def _log_deploy(record, route=None):
    """The deploy's result in the event log; a log that cannot be written is a warning,
    never a failed deploy."""
    try:
        log_event(
            "deploy",
            result="succeeded" if record["result"] else "failed",
            installed=record["installed"],
            dest=record["dest"],
            route=None if route in (None, "", "default") else route,
            fingerprint=record["certificate"]["fingerprint"] if record["installed"] else None,
            detail=record["dane_pending"] or record["summary"],
        )
    except (CommandExecutionError, SaltInvocationError) as exc:
        log.warning("certsync: the event log was not written: %s", exc)


def _installed(certificate):
    """The fingerprint and issue time of the certificate a deploy installed (what keeps
    an older publication from replacing it)."""
    certificate = certificate if isinstance(certificate, dict) else {}
    return {key: str(certificate.get(key) or "")[:64] for key in ("fingerprint", "not_before")}


def _epoch(iso):
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _source_fingerprint(source, route=None):
    if not source:
        return None, "no source minion in the pillar"
    try:
        return __salt__["certsync_mine.published_fingerprint"](source, route=route), None
    except (CommandExecutionError, SaltInvocationError) as exc:
        return None, str(exc)


def check(days=DEFAULT_DAYS, timeout=10):
    """
    The alert conditions of this consumer (``expiry``, ``mismatch``,
    ``unreachable``, ``deploy_failed``, ...: see the module's docs), each with
    ``active`` and a ``detail`` line, and what each endpoint serves. A
    consumer of several routes (the pillar's ``certsync:certificates``): the
    report of its first route (each report names its ``route``), ``routes``
    the others' (``{route: report}``), and each condition active when it is on
    any route, its detail naming the route (the first route's own conditions
    under ``route_conditions``).

    days
        Alert when a served certificate has fewer days left. Default: 21.

    timeout
        Seconds per probe. Default: 10.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_monitor.check days=14
    """
    days = __utils__["certsync_args.number"](days, "days", 0, 3650, whole=True)
    taken = list(__salt__["certsync_settings.routes"]()["consumer"]) or ["default"]
    reports = {route: _check_route(route, days, timeout, route == taken[0]) for route in taken}
    first = reports.pop(taken[0])
    if not reports:
        return first
    first["route_conditions"] = dict(first["conditions"])
    for name, condition in first["route_conditions"].items():
        active = {taken[0]: condition, **{r: rep["conditions"][name] for r, rep in reports.items()}}
        active = {r: c for r, c in active.items() if c["active"]}
        first["conditions"][name] = {
            "active": bool(active),
            "detail": "; ".join(
                f"{c['detail']}{__utils__['certsync_routes.label'](r)}" for r, c in active.items()
            ),
        }
    return {**first, "routes": reports}


def _check_route(route, days, timeout, with_relay):
    """:py:func:`check`'s report of one route (the relay, this minion's, with the first)."""
    settings = __salt__["certsync_settings.consumer"](route=route)
    probes = _served(settings, timeout)
    source_fp, source_error = _source_fingerprint(
        settings.get("source"), None if route == "default" else route
    )
    now = time.time()
    endpoints = {}
    for name, probe in sorted(probes.items()):
        row = {"ok": probe["ok"], "fingerprint": probe.get("fingerprint")}
        if probe["ok"]:
            row["not_after"] = _epoch(probe["not_after"])
            row["days_left"] = round((row["not_after"] - now) / 86400, 1)
        else:
            row["error"] = probe.get("error")
        row["matches_source"] = bool(source_fp) and row["fingerprint"] == source_fp
        endpoints[name] = row
    last = last_deploy(settings["dest"])
    uncovered, dropped = _uncovered(settings)
    conditions = _conditions(endpoints, days, source_fp, source_error, last)
    relay = _relay(settings, now) if with_relay else None
    if relay is not None:
        conditions["relay_failing"] = _relay_failing(relay, now)
    conditions["uncovered"] = {
        "active": bool(uncovered or dropped),
        "detail": "; ".join(
            [
                *(
                    f"SNI dir {entry} ({', '.join(row['missing'])} not covered) serves a "
                    f"certificate that expires {row['not_after'] or 'unknown'}"
                    for entry, row in sorted(uncovered.items())
                ),
                *(
                    f"{', '.join(row['names'])} dropped from the hostname's SNI dir {entry}: "
                    "served the certificate, which does not cover them"
                    for entry, row in sorted(dropped.items())
                ),
            ]
        ),
    }
    return {
        "route": route,
        "hostname": settings["hostname"],
        "source_fingerprint": source_fp,
        "endpoints": endpoints,
        "last_deploy": last,
        "uncovered": uncovered,
        "dropped": dropped,
        "relay": relay,
        "conditions": conditions,
    }


def _relay(settings, now):
    """``mailcow.relay_status`` of the configured relay (None when there is none)."""
    relay = settings.get("relay") or {}
    if not relay.get("host"):
        return None
    target = f"{relay['host']}:{relay['port']}"
    report = {"relay": target, "grace": float(relay["grace"]), "checked": now}
    try:
        status = __salt__["mailcow.relay_status"](
            relay=target, window=relay["window"], path=settings["mailcow_dir"]
        )
    except (CommandExecutionError, SaltInvocationError, KeyError) as exc:
        return {**report, "error": str(exc)}
    row = status["relays"].get(target.lower()) or {}
    return {**report, "row": row, "queue": status["queue"]}


def _relay_failing(relay, now):
    if relay.get("error"):
        return {"active": False, "detail": f"relay status unknown: {relay['error']}"}
    row = relay["row"]
    since = row.get("failing_since")
    failing = bool(since) and now - _epoch(since) >= relay["grace"]
    if not failing:
        return {"active": False, "detail": ""}
    failure = row["last_failure"]
    sent = row.get("last_success") or "the window began"
    return {
        "active": True,
        "detail": f"no mail sent through {relay['relay']} since {sent}; failing since {since}: "
        f"{failure['status']} {failure['dsn']} ({failure['problem']}): {failure['reason']}",
    }


def _uncovered(settings):
    """What the consumer's kind leaves alone because the deployed certificate does not
    cover it, and the names it dropped (``certsync_consumer``'s ``uncovered``)."""
    kind = __salt__["certsync_consumer.kind"](settings.get("kind"))
    try:
        given = __salt__["certsync_consumer.own"](kind, settings)
        prepared = __salt__["certsync_consumer.prepare"](
            kind, settings["dest"], settings["hostname"], settings.get("endpoints"), given
        )
        found = __salt__["certsync_consumer.call"](
            kind, "uncovered", settings["dest"], settings["hostname"], prepared
        )
    except (CommandExecutionError, SaltInvocationError):
        return {}, {}
    return found["uncovered"], found["dropped"]


def _served(settings, timeout):
    """What each endpoint serves; with no endpoints (files only), the deployed file."""
    if not settings.get("endpoints"):
        deployed = __salt__["certsync.deployed_info"](settings["dest"])
        if deployed is None:
            return {"deployed": {"ok": False, "error": f"no certificate in {settings['dest']}"}}
        return {"deployed": {"ok": True, **deployed}}
    probes = __salt__["tlsprobe.probe"](
        settings["hostname"],
        settings["endpoints"],
        settings.get("probe_address"),
        timeout=timeout,
    )
    __context__.pop("retcode", None)
    return probes


def _conditions(endpoints, days, source_fp, source_error, last):
    expiring = [
        f"{name} {row['days_left']} days"
        for name, row in endpoints.items()
        if row["ok"] and row["days_left"] < days
    ]
    if source_fp is None:
        differ = [f"source fingerprint unknown: {source_error}"]
    else:
        differ = [
            f"{name} serves {row['fingerprint'][:16]}..."
            for name, row in endpoints.items()
            if row["ok"] and not row["matches_source"]
        ]
    unreachable = [f"{name} ({row['error']})" for name, row in endpoints.items() if not row["ok"]]
    pending = (last or {}).get("dane_pending")
    failed = last is not None and not last["result"] and not pending
    return {
        "expiry": {
            "active": bool(expiring),
            "detail": f"fewer than {days} days left: {', '.join(expiring)}" if expiring else "",
        },
        "mismatch": {
            "active": bool(differ),
            "detail": (f"not the source's {source_fp[:16]}...: " if source_fp else "")
            + "; ".join(differ)
            if differ
            else "",
        },
        "unreachable": {
            "active": bool(unreachable),
            "detail": f"answers no TLS handshake: {'; '.join(unreachable)}" if unreachable else "",
        },
        "deploy_failed": {
            "active": failed,
            "detail": f"last run failed: {last['summary']}" if failed else "",
        },
        "dane_pending": {
            "active": bool(pending),
            "detail": f"the new certificate waits for its TLSA record: {pending} "
            f"({last['summary']})"
            if pending
            else "",
        },
    }


def _samples(report):
    """(metric, labels, value) of a :py:func:`check` report, each route's labelled with
    its hostname and route, and this minion's relay."""
    conditions = report.get("route_conditions", report["conditions"])
    yield from _route_samples({**report, "conditions": conditions})
    for routed in (report.get("routes") or {}).values():
        yield from _route_samples(routed)
    yield from _relay_samples({"hostname": report["hostname"]}, report.get("relay"))


def _route_samples(report):
    """(metric, labels, value) of one route's report."""
    host = {"hostname": report["hostname"], "route": report.get("route", "default")}
    for endpoint, row in report["endpoints"].items():
        labels = {**host, "endpoint": endpoint}
        yield "certsync_probe_success", labels, int(row["ok"])
        yield "certsync_cert_matches_source", labels, int(row["matches_source"])
        if row["ok"]:
            yield "certsync_cert_expiry_timestamp_seconds", labels, float(row["not_after"])
    last = report["last_deploy"]
    if last:
        yield "certsync_last_deploy_success", host, int(last["result"])
        yield "certsync_last_deploy_run_timestamp_seconds", host, float(last["time"])
        if last.get("last_success"):
            yield "certsync_last_successful_deploy_timestamp_seconds", host, last["last_success"]
    for condition, state in report["conditions"].items():
        yield "certsync_alert", {**host, "condition": condition}, int(state["active"])
    for entry, row in sorted((report.get("uncovered") or {}).items()):
        labels = {**host, "dir": entry}
        yield "certsync_sni_dir_uncovered", labels, 1
        if row.get("not_after"):
            yield "certsync_sni_dir_expiry_timestamp_seconds", labels, _epoch(row["not_after"])


def _relay_samples(host, relay):
    if relay is None:
        return
    labels = {**host, "relay": relay["relay"]}
    yield "certsync_relay_status_success", labels, int("error" not in relay)
    if "error" in relay:
        return
    row = relay["row"]
    if row.get("last_success"):
        yield "certsync_relay_last_success_timestamp_seconds", labels, _epoch(row["last_success"])
    yield "certsync_relay_deferred", labels, row.get("deferred", 0)
    yield "certsync_relay_bounced", labels, row.get("bounced", 0)
    for queue, count in sorted(relay["queue"]["by_queue"].items()):
        yield "certsync_mail_queue_messages", {**host, "queue": queue}, count
    age = relay["queue"]["oldest_deferred_age"] or 0
    yield "certsync_mail_queue_oldest_deferred_age_seconds", host, age


def _prometheus():
    """prometheus_client, imported when metrics are asked for: a deploy, which
    records its run through this module, does not pay for the import."""
    try:
        import prometheus_client.core  # noqa: PLC0415 (only metrics need it)
    except ImportError:
        raise CommandExecutionError(
            "the Prometheus metrics need the prometheus_client library (salt-pip install "
            "prometheus-client on Salt's onedir packages)"
        ) from None
    return prometheus_client


class _Report:
    """A prometheus_client collector of one report's samples (gauges)."""

    def __init__(self, report, family):
        self.report = report
        self.family = family

    def collect(self):
        families = {}
        for name, labels, value in _samples(self.report):
            if name not in families:
                families[name] = self.family(name, METRICS[name], labels=sorted(labels))
            families[name].add_metric([str(labels[k]) for k in sorted(labels)], float(value))
        return [families[name] for name in METRICS if name in families]


def _registry(report):
    prometheus = _prometheus()
    registry = prometheus.CollectorRegistry(auto_describe=False)
    registry.register(_Report(report, prometheus.core.GaugeMetricFamily))
    return registry


def textfile(path, days=DEFAULT_DAYS, report=None):
    """
    Write the metrics to ``path`` for node_exporter's textfile collector
    (``--collector.textfile.directory``), atomically: a temporary file in
    the same directory, fsync, rename. The file is 0644.

    path
        A ``.prom`` file, e.g.
        ``/var/lib/prometheus/node-exporter/certsync.prom``.

    days
        The expiry alert window for ``certsync_alert``. Default: 21.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_monitor.textfile /var/lib/prometheus/node-exporter/certsync.prom
    """
    if not str(path).endswith(".prom"):
        raise SaltInvocationError(f"{path}: the textfile collector reads only *.prom files")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise CommandExecutionError(f"{path}: the directory does not exist")
    report = report or check(days)
    registry = _registry(report)
    # prometheus_client writes a temporary file beside ``path`` and renames it
    _prometheus().write_to_textfile(str(path), registry)
    os.chmod(str(path), 0o644)
    samples = sum(len(family.samples) for family in registry.collect())
    return {"path": str(path), "samples": samples}
