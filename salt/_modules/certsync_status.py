"""
This minion's part in certsync, for ``salt-run certsync.status``
================================================================

The one module that asks all the others (the certificate, the wire, mailcow,
the relay and the way out, DNS, the monitor's records) and is asked by none
of them: what the runner gathers from every minion the pillar names.
"""

import os
import tempfile

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync_status"


def __virtual__():
    if "certsync.deployed_info" not in __salt__ or "certsync_settings.formula" not in __salt__:
        return (False, "certsync_status needs the certsync and certsync_settings modules")
    return __virtualname__


def report():
    """
    This minion's part in certsync, as the pillar describes it, for
    ``salt-run certsync.status``: on the source, the certificate it holds and
    how certbot will renew it (``certsync_source.renewal``: is the key kept?); on
    a consumer, the deployed certificate and what every endpoint serves
    (``served``; ``unreachable``: the endpoints that answer no TLS handshake,
    with the error), the
    per-name dirs left alone (``uncovered``) and the names mailcow serves
    with the top-level pair that the certificate lacks (``missing_names``, the
    names dropped from the hostname's own dir among them),
    with a ``relay`` in the pillar whether mail leaves through it
    (``mailcow.relay_status``) and the way out is open
    (``certsync_egress.check``), and
    with DANE on (pillar ``dane``) the TLSA records: whether one matches the
    deployed certificate (and ``source_matches``: the one the source
    publishes now), which are ``stale`` (match neither: remove) and, when
    the last deploy was held back for it, the record ``pending``
    publication and ``why`` (the last run's reason: a record to publish, a
    TTL to wait, a DNS provider's error); ``paused`` when deploys are paused (a roll back, or the
    pillar). On a minion with neither role: ``role`` None and ``why``. For a
    minion of several routes (the pillar's ``certsync:certificates``): the
    part of its first ``route``, and the others' under ``routes``.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_status.report
    """
    cfg = __salt__["certsync_settings.formula"]()
    me = __opts__["id"]
    taken = __utils__["certsync_routes.of_minion"](cfg, me)
    if taken["source"]:
        return _by_route(taken["source"], lambda route: _source_status(cfg, route))
    if not taken["consumer"]:
        return {"role": None, "why": __utils__["certsync_routes.role"](cfg, me)[1]}
    return _by_route(taken["consumer"], _consumer_status)


def _by_route(routes, part):
    """The part of the first of ``routes`` (with its ``route``), and under ``routes``
    the others' (``{route: part}``), when there are others."""
    ret = {**part(routes[0]), "route": routes[0]}
    if len(routes) > 1:
        ret["routes"] = {route: part(route) for route in routes[1:]}
    return ret


def _consumer_status(route):
    """A consumer's part for one route: what it deployed and what is served."""
    # no credentials passed on: the modules that use them read them from the pillar
    settings = __utils__["certsync_settings.without_credentials"](
        __salt__["certsync_settings.consumer"](route=route),
        __salt__["certsync_settings.declared"](),
    )
    dest = settings["dest"]
    deployed = __salt__["certsync.deployed_info"](dest)
    ret = {"role": "consumer", "deployed": deployed and deployed["fingerprint"]}
    ret.update(_paused_view(settings))
    if deployed:
        ret["days_left"] = deployed["days_left"]
        ret.update(_mailcow_view(settings, deployed))
    ret.update(_served_view(settings, settings["hostname"]))
    relay = settings.get("relay") or {}
    if relay.get("host"):
        ret["relay"] = _relay_view(settings, relay)
    if settings.get("dane"):
        ret["tlsa"] = _tlsa_status(settings, dest)
        if "certsync_monitor.last_deploy" in __salt__:
            last = __salt__["certsync_monitor.last_deploy"](dest) or {}
            if last.get("dane_pending"):
                ret["tlsa"]["pending"] = last["dane_pending"]
                ret["tlsa"]["why"] = last.get("summary") or ""
    return ret


def _source_status(cfg, route):
    """The source's part for one route: its certificate, and how its next renewal goes."""
    view = __utils__["certsync_routes.view"](cfg, route)
    hostname = view["hostname"]
    kind, where = __utils__["certsync_settings.source_where"](view.get("source"))
    found = __salt__["certsync_source.locate"](hostname, kind, **where)
    leaf = __salt__["certsync.info"](found["fullchain"])
    try:
        renewal_view = __salt__["certsync_source.renewal"](hostname, kind, **where)
    except (CommandExecutionError, SaltInvocationError) as exc:
        renewal_view = {"error": str(exc)}
    return {
        "role": "source",
        **{key: leaf[key] for key in ("fingerprint", "spki_sha256", "not_after", "days_left")},
        "renewal": renewal_view,
    }


def _served_view(settings, hostname):
    """``served``: what each endpoint serves; ``unreachable``: those that answer no
    TLS handshake (off, or down: no certificate to compare), with the error."""
    probes = {}
    if settings.get("endpoints"):
        probes = __salt__["tlsprobe.probe"](
            hostname, settings["endpoints"], settings.get("probe_address"), timeout=5
        )
        __context__.pop("retcode", None)
    view = {"served": {n: p["fingerprint"] for n, p in probes.items() if p.get("fingerprint")}}
    unreachable = {
        name: probe.get("error") or "no certificate"
        for name, probe in probes.items()
        if not probe.get("fingerprint")
    }
    if unreachable:
        view["unreachable"] = unreachable
    return view


def _paused_view(settings):
    """``paused``: why deploys are paused (a roll back, the pillar), when they are."""
    monitor = __salt__.get("certsync_monitor.paused")
    pause = monitor(settings["dest"]) if monitor else None
    if pause:
        return {"paused": pause["reason"]}
    return {"paused": "paused: true in the pillar"} if settings.get("paused") else {}


def _mailcow_view(settings, deployed):
    """The per-name dirs left alone, and the names mailcow serves that the deployed
    certificate lacks (MAILCOW_HOSTNAME, ADDITIONAL_SAN, autodiscover/autoconfig)."""
    view, dest, dropped = {}, settings["dest"], []
    try:
        plan = __salt__["certsync_consumer_mailcow.sni_plan"](
            dest, os.path.join(dest, "cert.pem"), hostname=settings["hostname"]
        )
        dropped = [name for row in plan["dropped"].values() for name in row["names"]]
        if settings.get("sni", True):
            view["uncovered"] = plan["uncovered"]
    except CommandExecutionError as exc:
        view["uncovered"] = {"error": str(exc)}
    conf = os.path.join(settings["mailcow_dir"], "mailcow.conf")
    if settings.get("services") and os.path.isfile(conf) and "mailcow.missing_names" in __salt__:
        try:
            view["missing_names"] = __salt__["mailcow.missing_names"](
                deployed["sans"], settings["mailcow_dir"], settings.get("mail_domains") or None
            )
        except (CommandExecutionError, SaltInvocationError) as exc:
            view["missing_names"] = [f"error: {exc}"]
    if dropped:  # dropped from the hostname's own dir: served the top-level pair now
        view["missing_names"] = list(dict.fromkeys([*view.get("missing_names", []), *dropped]))
    return view


def _relay_view(settings, relay):
    """Is mail leaving through the relay (postfix's log and queue), and is the way out
    open (the egress check)? ``ok`` is False when the last attempt failed or a
    target is blocked."""
    target = f"{relay['host']}:{relay['port']}"
    view = {"relay": target}
    try:
        status = __salt__["mailcow.relay_status"](
            relay=target, window=relay["window"], path=settings["mailcow_dir"]
        )
        view.update(status["relays"].get(target.lower()) or {"sent": 0})
        view["queue"] = status["queue"]
    except (CommandExecutionError, SaltInvocationError, KeyError) as exc:
        view["error"] = str(exc)
    egress = __salt__["certsync_egress.check"](
        relay=target,
        relay_address=relay.get("address") or None,
        cafile=relay.get("cafile") or None,
        master=relay.get("master_address") or None,
    )
    __context__.pop("retcode", None)
    view["blocked"] = [
        f"{row['target']} {row['host']}:{row['port']}: {row['error']}"
        for row in egress["checks"]
        if not row["ok"]
    ]
    view["ok"] = not view.get("error") and not view.get("failing_since") and egress["ok"]
    return view


def _tlsa_status(settings, dest):
    """The published TLSA records against the deployed certificate and the one the source
    publishes now (after a roll back they differ): which are stale, matching neither."""
    hostname, dane = settings["hostname"], settings["dane"]
    with tempfile.TemporaryDirectory(prefix="certsync-status-") as work:
        certs = {"deployed": os.path.join(dest, "cert.pem")}
        route = None if settings.get("route") in (None, "default") else settings["route"]
        chain = _published_chain(settings.get("source"), route)
        if chain:
            certs["source"] = os.path.join(work, "source.pem")
            with open(certs["source"], "w", encoding="ascii") as handle:
                handle.write(chain)
        try:
            options = __salt__["certsync_dane.dane_lookup"](dane)
            check = __salt__["maildns.tlsa_check"](hostname, certs, **options)
        except (KeyError, TypeError, CommandExecutionError, SaltInvocationError) as exc:
            return {"error": f"TLSA not checked: {exc}"}
    view = {
        "name": check["name"],
        "deployed_matches": check["matching"]["deployed"],
        "matching_records": [row["record"] for row in check["records"] if row["matches"]],
        "stale": check["stale"],
    }
    if "source" in certs:
        view["source_matches"] = check["matching"]["source"]
    return view


def _published_chain(source, route=None):
    """The chain ``source`` published for this consumer (of ``route``; public), or None."""
    if not source or "certsync_mine.published_chain" not in __salt__:
        return None
    try:
        chain = __salt__["certsync_mine.published_chain"](source, route=route)
    except (CommandExecutionError, SaltInvocationError):
        return None
    return chain if isinstance(chain, str) and chain.isascii() else None
