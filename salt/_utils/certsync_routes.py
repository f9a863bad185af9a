"""
Routes: which certificate goes to which consumers
=================================================

Synced with ``saltutil.sync_utils`` and called through
``__utils__["certsync_routes.<name>"]``. A route is one certificate (its
``hostname``, the names it must cover, and its ``source``) and the consumers
it goes to. The single-certificate pillar (``certsync:hostname``,
``certsync:source``, ``certsync:consumers``) is the route ``default``; each
``certsync:certificates:<name>`` is one more:

.. code-block:: yaml

    certsync:
      certificates:
        shop:
          hostname: shop.example.com       # the name the certificate must cover
          source: {minion: npm-host}       # over certsync:source (optional)
          consumers:
            web-host: {kind: service, ...} # over certsync:consumers:<id>

A route's view has the shape of the single-certificate settings (its
``hostname``, ``source`` and ``consumers``; everything else shared), so the
code that reads one certificate's settings reads a route's.
"""

import re

#: The route the single-certificate keys make (today's mine entries and events).
DEFAULT = "default"
#: A route's name: lower-case letters, digits and ``-`` (no ``_``: it is part of
#: the mine entry's name, ``certsync_route_<route>_<consumer>``).
NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
#: What a route under ``certsync:certificates:<name>`` holds.
KEYS = ("hostname", "source", "consumers")
#: The mine entry of a route other than the default for one consumer: this prefix,
#: the route and the consumer's id.
MINE_PREFIX = "certsync_route_"


def _mapping(value):
    return value if isinstance(value, dict) else {}


def certificates(cfg):
    """The ``certsync:certificates`` mapping of ``cfg``, or an empty one."""
    return _mapping(_mapping(cfg).get("certificates"))


def has_default(cfg):
    """Whether ``cfg`` has the single-certificate route: a ``hostname`` or
    ``consumers`` set at the top, or no ``certificates`` at all (then the missing
    hostname is the problem to name)."""
    cfg = _mapping(cfg)
    return bool(cfg.get("hostname") or _mapping(cfg.get("consumers")) or not certificates(cfg))


def is_default(route):
    """Whether ``route`` is the default route (or unset, which means it)."""
    return route in (None, "", DEFAULT)


def is_name(name):
    """Whether ``name`` can name a route under ``certsync:certificates``."""
    return isinstance(name, str) and name != DEFAULT and bool(NAME.fullmatch(name))


def views(cfg):
    """Each route of the merged settings ``cfg``, ``{name: view}``, sorted by name
    with ``default`` first: a view is ``cfg`` with the route's ``hostname``, its
    ``source`` (over ``certsync:source``), its ``consumers`` (each over the same
    minion's ``certsync:consumers`` entry) and ``route`` (its name). Routes that are
    no mapping or badly named are left out (the check names them)."""
    cfg = _mapping(cfg)
    shared = {key: value for key, value in cfg.items() if key != "certificates"}
    found = {DEFAULT: {**shared, "route": DEFAULT}} if has_default(cfg) else {}
    top_source = _mapping(cfg.get("source"))
    top_consumers = _mapping(cfg.get("consumers"))
    for name, entry in sorted(certificates(cfg).items(), key=lambda item: str(item[0])):
        if not is_name(name) or not isinstance(entry, dict):
            continue
        consumers = _mapping(entry.get("consumers"))
        found[name] = {
            **shared,
            "route": name,
            "hostname": entry.get("hostname") or "",
            "source": {**top_source, **_mapping(entry.get("source"))},
            "consumers": {
                minion: {**_mapping(top_consumers.get(minion)), **_mapping(own)}
                for minion, own in consumers.items()
            },
        }
    return found


def view(cfg, route=DEFAULT):
    """The view of one ``route`` of ``cfg`` (see :py:func:`views`; unset: the
    default); a ValueError naming the routes there are when it has none of that name."""
    found = views(cfg)
    route = DEFAULT if is_default(route) else route
    if route not in found:
        known = ", ".join(found) or "none"
        raise ValueError(
            f"the certsync pillar has no route {str(route)[:40]!r} (its routes: {known})"
        )
    return found[route]


def source_minion(view):
    """The source minion a route's view names, or None."""
    return _mapping(_mapping(view).get("source")).get("minion") or None


def of_minion(cfg, minion_id):
    """The routes ``minion_id`` takes part in: ``{"source": [names], "consumer":
    [names]}``, each in :py:func:`views`' order."""
    taken = {"source": [], "consumer": []}
    for name, found in views(cfg).items():
        if source_minion(found) == minion_id:
            taken["source"].append(name)
        if minion_id in _mapping(found.get("consumers")):
            taken["consumer"].append(name)
    return taken


def role(cfg, minion_id):
    """This minion's role in the merged settings ``cfg``, and why: ``source`` (of a
    route), ``consumer`` (of a route), or None (with the ids the pillar names, to
    spot a minion id that differs from the pillar's, e.g. Salt's default FQDN id).
    A minion that is both is the source (its consumer routes are named by the check)."""
    taken = of_minion(cfg, minion_id)
    for what in ("source", "consumer"):
        if taken[what]:
            return what, f"{minion_id} is the {what} of {_routes_named(taken[what])}"
    if _mapping(cfg).get("no_role") is True:
        return None, "certsync:no_role is set: this minion has no certsync role on purpose"
    sources = sorted({str(source_minion(v)) for v in views(cfg).values() if source_minion(v)})
    consumers = sorted({str(c) for v in views(cfg).values() for c in _mapping(v.get("consumers"))})
    named = [f"source {', '.join(map(repr, sources))}"] if sources else []
    if consumers:
        named.append("consumers " + ", ".join(map(repr, consumers)))
    if not named:
        return None, (
            f"the certsync pillar of {minion_id!r} names no source and no consumer: is it "
            "assigned to this minion (pillar top.sls)?"
        )
    return None, (
        f"this minion's id is {minion_id!r}, but the certsync pillar names "
        f"{' and '.join(named)}: add it there under its own id (Salt's default id is the "
        "FQDN), or set certsync:no_role: true for a minion without a role"
    )


def _routes_named(names):
    """How routes are named in a sentence: the default route by its keys."""
    shown = [
        "certsync (certsync:source, certsync:consumers)" if n == DEFAULT else f"route {n}"
        for n in names
    ]
    return ", ".join(shown)


def mine_name(consumer, route=DEFAULT, default_prefix="certsync_cert_"):
    """The mine entry a route's source publishes for ``consumer`` (a checked minion
    id): ``certsync_cert_<consumer>`` for the default route, as before routes,
    ``certsync_route_<route>_<consumer>`` for the others."""
    if is_default(route):
        return default_prefix + consumer
    if not is_name(route):
        raise ValueError(f"{str(route)[:40]!r} is no route name")
    return f"{MINE_PREFIX}{route}_{consumer}"


def label(route):
    """How a route is shown beside a hostname in a line of text: nothing for the
    default route, `` (route <name>)`` for the others."""
    return "" if is_default(route) else f" (route {route})"


def problems(pillar):
    """What is wrong with the routes of the ``certsync`` pillar, as sentences: a
    ``certificates`` that is no mapping, a badly named route, a route that is no
    mapping, holds a key no route has, or lacks its hostname, source or consumers.
    The settings in a route's ``source`` and ``consumers`` are checked where those
    of the single-certificate keys are (``certsync_settings.problems``)."""
    pillar = _mapping(pillar)
    given = pillar.get("certificates")
    if given is None:
        return []
    if not isinstance(given, dict):
        return [f"certsync:certificates must map route names to routes, not {repr(given)[:40]}"]
    found = []
    for name, entry in given.items():
        where = f"certsync:certificates:{str(name)[:40]}"
        if not is_name(name):
            found.append(
                f"{where}: a route's name is lower-case letters, digits and '-' (up to 32, "
                f"not {DEFAULT!r}, which the keys certsync:hostname, source and consumers make)"
            )
            continue
        if not isinstance(entry, dict):
            found.append(f"{where} must be a mapping (hostname, source, consumers)")
            continue
        found += [
            f"{where}:{str(key)[:40]} is no setting of a route (it takes {', '.join(KEYS)})"
            for key in entry
            if key not in KEYS
        ]
        hostname = entry.get("hostname")
        if not isinstance(hostname, str) or not hostname.strip():
            found.append(f"{where}:hostname is not set: the name the route's certificate covers")
        if entry.get("source") is not None and not isinstance(entry["source"], dict):
            found.append(f"{where}:source must be a mapping (minion: <id>, ...)")
        consumers = entry.get("consumers")
        if not isinstance(consumers, dict) or not consumers:
            found.append(f"{where}:consumers must map the minion ids it goes to to their settings")
    return found


def collisions(writes):
    """Where two routes of one consumer would write the same path: ``writes`` maps
    each route to the paths it writes (its pair's directory and files). A list of
    sentences naming both routes and the path."""
    owner, found = {}, []
    for route, paths in writes.items():
        for path in dict.fromkeys(str(p).rstrip("/") for p in paths):
            if path in owner and owner[path] != route:
                found.append(
                    f"routes {owner[path]} and {route} would both write {path}: give each its "
                    "own place (a dir, or files, of its own)"
                )
            owner.setdefault(path, route)
    return found
