"""
certsync on the master: routes from the pillar, the reactor's targets, the fleet view
====================================================================================

The pillar is the one place that names the source and its consumers: the
source minion's ``certsync:source:minion`` (itself) and ``certsync:consumers``.
The routes are read from the pillar the master compiles for the source, at
each event, so a changed pillar takes effect at the next event with nothing
else kept in step. The reactor SLS (``salt://certsync/reactor/``) hand the
sender's id to :py:func:`on_renewed`, :py:func:`on_recipient` and
:py:func:`on_published`, which target only what that pillar names: an event
never names its targets. The consumers' deploy arguments come from the same
pillar (the top file gives every certsync minion the same ``certsync`` pillar).

:py:func:`status` asks every minion of every route for its part
(``certsync_status.report``).
"""

import json
import logging
import re
import threading

import salt.cache
import salt.client
import salt.fileserver
import salt.key
import salt.pillar
import salt.utils.files
import salt.utils.mine
import salt.utils.minions
import salt.utils.yaml
import salt.version

log = logging.getLogger(__name__)

__virtualname__ = "certsync"

#: The reactor runs its runner calls in threads that share this module's __context__.
_SHARED = threading.Lock()
#: Held while a pillar is compiled (the compilers are kept in __context__).
_COMPILING = threading.Lock()
#: Pillar compilers kept, one per minion and grains (the oldest goes first).
PILLAR_COMPILERS = 32


def __virtual__():
    needed = ("certsync_settings.source_consumers", "certsync_routes.views")
    if any(function not in (__utils__ or {}) for function in needed):
        # never send a consumer's credentials along: the shared rule must be here
        return (
            False,
            "the certsync runner needs salt://_utils/certsync_settings.py and "
            "certsync_routes.py: salt-run saltutil.sync_all",
        )
    return __virtualname__


def _certsync_pillar(minion):
    """The ``certsync`` pillar the master compiles for ``minion`` now (grains from
    the master's cache, as ``pillar.show_pillar`` takes them)."""
    grains = salt.utils.minions.get_minion_data(minion, __opts__)[1] or {}
    with _COMPILING:  # one compiler is not made for two threads at once
        pillar = _pillar_compiler(minion, grains).compile_pillar()
    found = pillar.get("certsync") if isinstance(pillar, dict) else None
    return found if isinstance(found, dict) else {}


def _pillar_compiler(minion, grains):
    """The pillar compiler for ``minion`` with these grains, kept while the reactor
    keeps this runner's loader: making one loads the execution modules a pillar SLS
    may call (some 70 ms at every event); compiling renders the pillar anew. Each
    minion and grains has its own (salt['grains.get'] in a pillar SLS must see that
    minion's grains); at most PILLAR_COMPILERS are kept."""
    key = (minion, json.dumps(grains, sort_keys=True, default=str))
    kept = __context__.setdefault("certsync.pillar_compilers", {})
    if key not in kept:
        if len(kept) >= PILLAR_COMPILERS:
            kept.pop(next(iter(kept)))
        kept[key] = salt.pillar.get_pillar(__opts__, grains, minion, saltenv="base")
    return kept[key]


def _source_minion(cfg):
    source = cfg.get("source")
    return source.get("minion") if isinstance(source, dict) else None


def _source_config(source):
    """``source``'s certsync pillar and the consumers it names in the default route,
    when it names ``source`` as that route's source (no consumers otherwise)."""
    cfg, routes = _source_routes(source)
    return cfg, routes.get("default", [])


def _source_routes(source):
    """``source``'s certsync pillar and, for each route whose source it names
    ``source`` (``certsync_routes``), the consumers it names (routes with none left out)."""
    if not __utils__["certsync_args.is_minion_id"](source):
        return {}, {}
    cfg = _certsync_pillar(source)
    is_minion_id = __utils__["certsync_args.is_minion_id"]
    found = {}
    for route, view in __utils__["certsync_routes.views"](cfg).items():
        consumers = __utils__["certsync_settings.source_consumers"](view, source, is_minion_id)
        if consumers:
            found[route] = consumers
    return cfg, found


def _why_no_consumers(source, cfg, route="default"):
    """Why ``source`` routes to nobody, from the pillar the master compiles for it."""
    if not __utils__["certsync_args.is_minion_id"](source):
        return f"{_shown(source)} is no minion id"
    if not cfg:
        return (
            f"the master compiles no certsync pillar for {source}: is it assigned to that "
            "minion id in the pillar's top.sls?"
        )
    try:
        view = __utils__["certsync_routes.view"](cfg, route)
    except ValueError as exc:
        return f"{source}'s {exc}"
    named = _source_minion(view)
    where = _route_key(route)
    if named != source:
        return f"{source}'s certsync pillar names {_shown(named or '')} as {where}source:minion"
    return f"{source}'s certsync pillar names no consumer under {where}consumers"


def _route_key(route):
    """Where a route's keys are in the pillar: ``certsync:`` or a route's own."""
    if __utils__["certsync_routes.is_default"](route):
        return "certsync:"
    return f"certsync:certificates:{route}:"


def _nobody(why, **empty):
    log.warning("certsync: %s", why)
    return {"targets": [], **empty, "why": why}


def _consumers_of(source):
    """The consumers ``source``'s own pillar names, when it names ``source`` as the source."""
    return _source_config(source)[1]


def routes(source=None, by_route=False):
    """
    The routes the reactor follows, ``{source id: [consumer ids]}`` (those of
    the default route, ``certsync:consumers``; with ``by_route``, every route:
    ``{source id: {route: [consumer ids]}}``), from the pillar the master
    compiles now: for ``source``, or for every accepted minion whose cached
    pillar names it as a source.

    CLI Example:

    .. code-block:: bash

        salt-run certsync.routes
        salt-run certsync.routes source=npm-host by_route=true
    """
    if source is not None:
        found = {source: _source_routes(source)[1]}
    else:
        found = {}
        for minion in sorted(salt.key.get_key(__opts__).list_status("accepted").get("minions", [])):
            cached = (salt.utils.minions.get_minion_data(minion, __opts__)[2] or {}).get("certsync")
            if __utils__["certsync_routes.of_minion"](cached, minion)["source"]:
                found[minion] = _source_routes(minion)[1]
    if by_route:
        return {minion: named for minion, named in found.items() if named or source}
    return {
        minion: named.get("default", [])
        for minion, named in found.items()
        if named.get("default") or source
    }


def _formula_defaults():
    """The formula's defaults (``salt://certsync/defaults.yaml``, which map.jinja
    merges the pillar over), from the master's own file server."""
    found = salt.fileserver.Fileserver(__opts__).find_file("certsync/defaults.yaml", "base")
    path = found.get("path") if isinstance(found, dict) else None
    if not path:
        return {}
    with salt.utils.files.fopen(path) as handle:
        loaded = salt.utils.yaml.safe_load(handle)
    defaults = loaded.get("certsync") if isinstance(loaded, dict) else None
    return defaults if isinstance(defaults, dict) else {}


def _settings(cfg):
    """A pillar's certsync settings over the formula's defaults, as map.jinja merges them."""
    return __utils__["certsync_settings.merged"](_formula_defaults(), cfg)


def _mapping(value):
    return value if isinstance(value, dict) else {}


def _send(targets, fun, kwarg):
    """``fun`` on ``targets`` (a list), not waited for: the job id. The LocalClient
    is made once per runner loader, which the reactor keeps (making one loads
    Salt's execution modules: some 25 ms at every event)."""
    with _SHARED:
        if "certsync.local_client" not in __context__:
            __context__["certsync.local_client"] = salt.client.get_local_client(
                mopts=dict(__opts__)
            )
        client = __context__["certsync.local_client"]
        return client.cmd_async(targets, fun, [], tgt_type="list", kwarg=kwarg)


def _publish_routes(source, cfg, routes):
    """:py:func:`_publish` for each route (``{route: consumers}``): the targets, the
    first job and each route's (``jobs``), and why a route was refused."""
    jobs, refused = {}, []
    for route, consumers in routes.items():
        sent = _publish(source, cfg, consumers, route)
        if sent.get("refused"):
            refused.append(sent["refused"] + __utils__["certsync_routes.label"](route))
        else:
            jobs[route] = sent["jid"]
    done = {"targets": [source] if jobs else [], "jid": next(iter(jobs.values()), None)}
    if len(routes) > 1:
        done["jobs"] = jobs
    if refused:
        done["refused"] = "; ".join(refused)
    return done


def _publish(source, cfg, consumers, route="default"):
    """``certsync_mine.publish_source`` on ``source`` with its pillar's settings of
    ``route`` (over the formula's defaults, as the SLS has them), not waited for: no
    state run."""
    settings = __utils__["certsync_routes.view"](_settings(cfg), route)
    kind, where = __utils__["certsync_settings.source_where"](settings.get("source"))
    try:
        keep_key = __utils__["certsync_settings.reuse_key_wanted"](settings)[0]
    except ValueError as exc:
        log.error("certsync: no publication from %s: %s", source, exc)
        return {"targets": [], "jid": None, "refused": str(exc)}
    kwarg = {
        "hostname": settings.get("hostname"),
        "consumers": consumers,
        "keep_key": keep_key,
        "kind": kind,
        **({} if __utils__["certsync_routes.is_default"](route) else {"route": route}),
        **where,
    }
    jid = _send([source], "certsync_mine.publish_source", kwarg)
    log.info("certsync: certsync_mine.publish_source on %s (job %s)", source, jid)
    return {"targets": [source], "jid": jid}


def on_renewed(source):
    """
    A source saw a new certificate (its beacon's ``certsync/renewed``): for
    each route whose source its pillar names it, with consumers, it publishes
    (``certsync_mine.publish_source`` with the settings of that route: the
    publication alone, without a state run; a route whose certificate did not
    change only refreshes its mine entries). For the reactor; by hand it
    re-publishes.

    CLI Example:

    .. code-block:: bash

        salt-run certsync.on_renewed npm-host
    """
    cfg, routes = _source_routes(source)
    if not routes:
        return _nobody(_why_no_consumers(source, cfg), jid=None)
    return _publish_routes(source, cfg, routes)


def on_recipient(consumer):
    """
    A consumer made a new recipient key (``certsync/recipient``): its source,
    when the source's pillar names this consumer, publishes again, as on a
    renewal.

    CLI Example:

    .. code-block:: bash

        salt-run certsync.on_recipient mailcow-host
    """
    if not __utils__["certsync_args.is_minion_id"](consumer):
        return _nobody(f"{_shown(consumer)} is no minion id", jid=None)
    own = __utils__["certsync_routes.views"](_certsync_pillar(consumer))
    sources = sorted({str(_source_minion(v)) for v in own.values() if _source_minion(v)})
    if not sources:
        return _nobody(
            f"{consumer}'s certsync pillar names no source (certsync:source:minion)", jid=None
        )
    done = {"targets": [], "jobs": {}, "why": []}
    for source in sources:
        cfg, routes = _source_routes(source)
        # only the routes whose source's pillar names this consumer back
        taken = {route: named for route, named in routes.items() if consumer in named}
        if not taken:
            done["why"].append(_not_named_back(source, cfg, routes, consumer))
            continue
        sent = _publish_routes(source, cfg, taken)
        if len(sources) == 1:
            return sent
        done["targets"] += sent["targets"]
        done["jobs"][source] = sent.get("jobs") or sent["jid"]
    if not done["targets"]:
        return _nobody("; ".join(done["why"]), jid=None)
    done["jid"] = None
    return done


def _not_named_back(source, cfg, routes, consumer):
    """Why ``source``'s pillar routes nothing to ``consumer``."""
    if not routes:
        return _why_no_consumers(source, cfg)
    named = sorted({c for consumers in routes.values() for c in consumers})
    return (
        f"{source}'s certsync pillar does not name {consumer} under certsync:consumers "
        f"(it names {', '.join(named)})"
    )


def _shown(value):
    return repr(value)[:80]


def on_published(source, fingerprint=None, route=None):
    """
    A source published (``certsync/published``): each consumer its pillar
    names in the ``route`` the event names (unset: the default route; only a
    route whose source that pillar names ``source`` is followed) deploys the
    publication, in one job (``certsync_deploy.deployed``:
    the deploy the ``certsync.deployed`` state runs, without a state run),
    told only which source's entry to take and which certificate to expect
    (``fingerprint``, when it is a SHA-256 hex digest; the mine entry
    decides what is deployed). Each consumer takes its settings from its own
    pillar, as the formula's SLS does, and refuses, by key, settings that
    fail the formula's check or that name another source. Not waited for;
    returns the targets and the job.

    CLI Example:

    .. code-block:: bash

        salt-run certsync.on_published npm-host
    """
    announced = fingerprint if isinstance(fingerprint, str) else ""
    announced = announced if re.fullmatch(r"[0-9a-f]{64}", announced) else ""
    default = __utils__["certsync_routes.is_default"](route)
    if not default and not __utils__["certsync_routes.is_name"](route):
        return _nobody(f"{_shown(route)} is no route name", jobs={})
    cfg, routes = _source_routes(source)
    consumers = routes.get("default" if default else route)
    if not consumers:
        return _nobody(_why_no_consumers(source, cfg, route), jobs={})
    args = {
        "source_minion": source,
        **({"fingerprint": announced} if announced else {}),
        **({} if default else {"route": route}),
    }
    jid = _send(consumers, "certsync_deploy.deployed", args)
    log.info("certsync: certsync_deploy.deployed on %s (job %s)", ", ".join(consumers), jid)
    return {"targets": consumers, "jobs": {jid: consumers}}


def _mine_of(cache, minion):
    """A minion's mine data in the master's cache: Salt 3007 moved it to a bank of its own."""
    if salt.version.__saltstack_version__.major >= 3007:
        return cache.fetch("mine", minion)
    return cache.fetch(f"minions/{minion}", "mine")


def _mine_fingerprint(cache, source, consumer, route="default"):
    """The fingerprint of the entry a source published for a consumer.

    Read from the master's own mine cache: mine.get from a runner is refused
    by the entry's ACL (only the consumer may read it). Nothing but the
    fingerprint leaves this function.
    """
    entry = (_mine_of(cache, source) or {}).get(
        __utils__["certsync_routes.mine_name"](consumer, route)
    )
    if isinstance(entry, dict) and salt.utils.mine.MINE_ITEM_ACL_ID in entry:
        entry = entry.get(salt.utils.mine.MINE_ITEM_ACL_DATA)
    return entry.get("fingerprint") if isinstance(entry, dict) else None


def status(timeout=60):
    """
    Show, per consumer (and route: a row ``<consumer>/<route>`` for a route of
    the pillar's ``certsync:certificates``): the source's fingerprint, the
    fingerprint in the mine
    entry for it, the deployed fingerprint, what every endpoint serves, the
    days left and, with DANE on, the TLSA records (``stale`` ones can be
    removed); per source: its certificate and how certbot renews it
    (``renewal``: is the key kept?). ``result`` is False (and ``salt-run``
    exits 1) when they do not all agree, no TLSA record matches the deployed
    certificate, mail is not leaving through a consumer's relay or its way out
    is blocked (``relay``), a source's next renewal would change a key that a published
    TLSA record pins, or a minion did not answer.

    CLI Example:

    .. code-block:: bash

        salt-run certsync.status
    """
    known = routes(by_route=True)
    if not known:
        return {
            "result": False,
            "retcode": 1,
            "comment": "no minion's pillar names it as the certsync source of any consumer",
        }
    minions = sorted(
        set(known) | {c for named in known.values() for cs in named.values() for c in cs}
    )
    client = salt.client.get_local_client(__opts__["conf_file"])
    views = client.cmd(minions, "certsync_status.report", tgt_type="list", timeout=int(timeout))
    accepted = set(salt.key.get_key(__opts__).list_status("accepted").get("minions", []))
    cache = salt.cache.factory(__opts__)
    consumers_report, sources_report, ok = {}, {}, True
    for source, route, consumers in _each_route(known):
        src = _route_part(views.get(source), route)
        source_fp = src.get("fingerprint")
        for consumer in consumers:
            view = _route_part(views.get(consumer), route)
            row = {
                "source": source,
                **({} if route == "default" else {"route": route}),
                "source_fingerprint": source_fp,
                "mine_fingerprint": _mine_fingerprint(cache, source, consumer, route),
                "deployed_fingerprint": view.get("deployed"),
                "served": view.get("served", {}),
                "unreachable": view.get("unreachable", {}),
                "paused": view.get("paused"),
                "days_left": view.get("days_left"),
                "uncovered": view.get("uncovered", {}),
                "missing_names": view.get("missing_names", []),
            }
            row.update({key: view[key] for key in ("tlsa", "relay") if view.get(key)})
            if view or consumer in views:
                problems = _consumer_problems(source, view, row) if view else []
                problems = problems or ([] if view else [_unanswered(views[consumer], route)])
            elif consumer not in accepted:
                problems = [
                    f"no minion with the id {consumer!r} is accepted on this master (salt-key "
                    "-L): the pillar must name the consumer by its minion id"
                ]
            else:
                problems = [f"{consumer} did not answer within {int(timeout)} s"]
            row["agree"] = not problems
            if problems:
                row["error"] = "; ".join(problems)
            ok = ok and row["agree"]
            consumers_report[_row_key(consumer, route)] = row
        pinned = [
            c
            for c in consumers
            if _pins_source_key(consumers_report[_row_key(c, route)], source_fp)
        ]
        sources_report[_row_key(source, route)] = _source_row(src, pinned)
        ok = ok and sources_report[_row_key(source, route)]["result"]
    return {
        "result": ok,
        "retcode": 0 if ok else 1,
        "sources": sources_report,
        "consumers": consumers_report,
    }


def _each_route(known):
    """(source, route, consumers) of ``routes(by_route=True)``, sorted."""
    for source, named in sorted(known.items()):
        for route, consumers in named.items():
            yield source, route, consumers


def _route_part(view, route):
    """A minion's ``certsync_status.report`` for one route: the report itself for its
    first route, else its ``routes`` entry (empty when it has none)."""
    view = view if isinstance(view, dict) else {}
    if view.get("route", "default") == route:
        return view
    part = (view.get("routes") or {}).get(route)
    return part if isinstance(part, dict) else {}


def _unanswered(answer, route):
    if isinstance(answer, dict) and answer.get("role"):
        return f"its report has no part for route {route}"
    return f"answered {answer!r}"[:200]


def _row_key(minion, route):
    """A status row's key: the minion id, and ``/<route>`` beside the default route."""
    return minion if route == "default" else f"{minion}/{route}"


def _consumer_problems(source, view, row):
    """Why a consumer that answered does not agree with its source, one phrase each."""
    if view.get("role") != "consumer":
        return [f"it does not take itself for a consumer: {view.get('why', 'no reason given')}"]
    source_fp = row["source_fingerprint"]
    if source_fp is None:
        return [f"the source {source} did not give its certificate's fingerprint"]
    problems = []
    for what, key in (
        ("the mine entry for it holds", "mine_fingerprint"),
        ("deployed", "deployed_fingerprint"),
    ):
        if row[key] != source_fp:
            problems.append(f"{what} {_short(row[key])}, not the source's {_short(source_fp)}")
    problems += [
        f"{endpoint} serves {_short(fingerprint)}"
        for endpoint, fingerprint in sorted(row["served"].items())
        if fingerprint != source_fp
    ]
    problems += [
        f"{endpoint} answers no TLS handshake ({why})"
        for endpoint, why in sorted(row["unreachable"].items())
    ]
    if row.get("tlsa") and row["tlsa"].get("deployed_matches") is not True:
        problems.append("no TLSA record matches the deployed certificate")
    if row.get("relay") and row["relay"].get("ok") is not True:
        problems.append(f"mail does not leave through the relay {row['relay'].get('relay')}")
    if problems and view.get("paused"):  # why it differs; paused alone is no problem
        problems.insert(0, f"deploys are paused ({view['paused']})")
    return problems


def _short(fingerprint):
    return f"{fingerprint[:16]}..." if isinstance(fingerprint, str) and fingerprint else "nothing"


def _pins_source_key(row, source_fp):
    """Whether a consumer serving the source's certificate has a TLSA record pinning its key
    (usage 1 or 3, selector 1: the SubjectPublicKeyInfo)."""
    if row.get("deployed_fingerprint") != source_fp or not row.get("tlsa"):
        return False
    records = row["tlsa"].get("matching_records") or []
    return any(str(record).split()[:2] in (["3", "1"], ["1", "1"]) for record in records)


def _source_row(view, pinned):
    """The source's certificate and renewal; False when certbot will not renew it (its
    renewal file refused or missing) or its next renewal breaks a pinned key."""
    renewal = view.get("renewal") or {}
    row = {
        "fingerprint": view.get("fingerprint"),
        "days_left": view.get("days_left"),
        "renewal": renewal,
        "tlsa_pinned_by": pinned,
        "result": bool(view),
    }
    if not view:
        row["error"] = "the source did not answer"
    elif renewal.get("error"):  # e.g. a renewal file certbot refuses: no renewal at all
        row["result"] = False
        row["error"] = f"certbot's renewal of this lineage: {renewal['error']}"
    elif pinned and renewal.get("next_renewal_keeps_key") is not True:
        row["result"] = False
        row["error"] = (
            "the next renewal makes a new key, and a published TLSA record for "
            f"{', '.join(pinned)} pins the current one: apply certsync.key_kept "
            "(pillar certsync:source:reuse_key) or roll the TLSA record over"
        )
    return row
