"""
The certsync pillar, as the formula reads it
============================================

Thin loader functions over ``salt://_utils/certsync_settings.py``: this
minion's ``certsync`` pillar merged over the formula's ``defaults.yaml``
(the copy in its file cache), checked, and read for one role. The
formula's SLS, the monitor and ``certsync_status`` ask here; credentials are
masked in every answer.
"""

import logging
import os

import salt.utils.files
import salt.utils.yaml
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "certsync_settings"


def __virtual__():
    if "certsync_settings.merged" not in __utils__ or "certsync_routes.views" not in __utils__:
        return (
            False,
            "certsync_settings needs salt://_utils/certsync_settings.py and certsync_routes.py: "
            "sync_all",
        )
    return __virtualname__


def formula():
    """
    The ``certsync`` pillar merged over the formula's ``defaults.yaml``, as
    ``map.jinja`` merges them, credentials shown as ``**********``.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync_settings.formula
    """
    return __utils__["certsync_settings.masked_credentials"](_formula_settings(), declared())


def source(route="default"):
    """
    The source's ``kind`` and its ``settings`` of that kind, from the
    ``certsync:source`` pillar over the defaults (for a ``route`` of
    ``certsync:certificates``: its ``source`` over those): what the formula's
    SLS give ``certsync_source`` (``npm``: ``live_dir`` and, when set, ``dir``).

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_settings.source
        salt npm-host certsync_settings.source route=shop
    """
    return _source_of(_view(route))


def _source_of(view):
    """:py:func:`source` of a route's merged settings."""
    kind, where = __utils__["certsync_settings.source_where"](view.get("source"))
    known, unknown_kind = _kind_settings(kind)
    if unknown_kind:  # its states say so, by name
        return {"kind": kind, "settings": where}
    # the defaults hold npm's settings: a source of another kind does not get them
    return {"kind": kind, "settings": {k: v for k, v in where.items() if k in known}}


def _kind_settings(kind):
    """The names of the settings a source of ``kind`` takes, and None; or None and
    why the kind is unknown."""
    try:
        return __salt__["certsync_source.settings"](kind), None
    except SaltInvocationError as exc:
        return None, f"certsync:source:kind: {exc}"


def declared():
    """
    The setting names the DNS providers loaded here declare as credentials
    (``certsync_dns_<name>.credential_keys``; the providers found by their
    files: ``certsync_registry``). Any setting named ``*_secret``,
    ``*_token``, ``password`` or ``passphrase`` is a credential too.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync_settings.declared
    """
    keys = set()
    loaded = __utils__["certsync_registry.loaded"]
    for provider in loaded(__opts__, __salt__, "certsync_dns_", "credential_keys"):
        keys.update(str(key) for key in __salt__[f"certsync_dns_{provider}.credential_keys"]())
    return sorted(keys)


#: Where the formula's defaults sit on the master's file server.
DEFAULTS_PATH = "certsync/defaults.yaml"


def _cached_defaults():
    """The text of the copy of defaults.yaml in this minion's file cache, or None.
    The last state run took it (map.jinja imports it) when it synced the modules
    that run now: a deploy job reads the defaults those modules came with, without
    a request to the master."""
    saltenv = __opts__.get("saltenv") or "base"
    path = os.path.join(__opts__["cachedir"], "files", saltenv, DEFAULTS_PATH)
    try:
        with salt.utils.files.fopen(path, "r") as cached:
            return cached.read()
    except OSError:
        return None


def _formula_defaults():
    """The formula's defaults.yaml (``certsync``): the file cache's copy, else the
    master's (a minion that never ran the formula's states; ``cp`` caches it)."""
    text = _cached_defaults()
    if text is None:
        text = __salt__["cp.get_file_str"](f"salt://{DEFAULTS_PATH}") or ""
    return (salt.utils.yaml.safe_load(text) or {}).get("certsync", {})


def _certsync_pillar():
    # __pillar__ itself, not pillar.get: Salt 3008 masks what pillar.get returns.
    found = __pillar__.get("certsync")
    return dict(found) if isinstance(found, dict) else {}


def _formula_settings():
    """The certsync pillar merged over the formula's defaults.yaml."""
    return __utils__["certsync_settings.merged"](_formula_defaults(), _certsync_pillar())


def _view(route):
    """The merged settings of one route (``certsync_routes.view``)."""
    try:
        return __utils__["certsync_routes.view"](_formula_settings(), route)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None


def _own_view(route):
    """The merged settings of this minion's ``route``; unset: the default route, or
    the first route it takes (as a consumer, else as the source) when it takes no
    default one."""
    if route is None:
        taken = __utils__["certsync_routes.of_minion"](_formula_settings(), __opts__["id"])
        route = (taken["consumer"] or taken["source"] or ["default"])[0]
    return _view(route)


def check():
    """
    This minion's ``certsync`` pillar against the formula's ``defaults.yaml``:
    every key the formula does not know (with the closest one it knows), a
    missing ``hostname``, entries that are no mapping, a credential of
    another minion (its key named, never its value: each consumer's
    credentials belong in a pillar SLS targeted to it alone), for each route
    this minion consumes a place its consumer kind cannot give it or a hostname
    the kind cannot serve from there, two routes writing one place; and this minion's
    ``role`` (``source``, ``consumer`` or None) with the reason. ``valid`` is
    False on any problem, and when the pillar names a source or consumers but
    not this minion (unless ``certsync:no_role`` is true). Credentials are
    never part of the answer.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync_settings.check
    """
    defaults = _formula_defaults()
    pillar = _certsync_pillar()
    kind = __utils__["certsync_settings.source_where"](pillar.get("source"))[0]
    kind_settings, unknown_kind = _kind_settings(kind)
    route_kinds, unknown_kinds = _route_source_kinds(pillar)
    problems = [
        *([unknown_kind] if unknown_kind else []),
        *unknown_kinds,
        *__utils__["certsync_routes.problems"](pillar),
        *__utils__["certsync_settings.problems"](pillar, defaults, kind_settings, route_kinds),
    ]
    cfg = __utils__["certsync_settings.merged"](defaults, pillar)
    role, why = __utils__["certsync_routes.role"](cfg, __opts__["id"])
    problems += __utils__["certsync_settings.foreign_credentials"](
        pillar, __opts__["id"], role, declared()
    )
    problems += _consumer_kind_problems(cfg)
    if not problems:
        problems += _placement_problems(cfg)
    valid = not problems and (role is not None or cfg.get("no_role") is True)
    if not valid:
        __context__["retcode"] = 1
    return {"valid": valid, "role": role, "why": why, "problems": problems}


def _route_source_kinds(pillar):
    """The settings of each source kind a route of ``certsync:certificates`` names
    (``{kind: settings}``), and why each unknown one is."""
    top = pillar.get("source") if isinstance(pillar.get("source"), dict) else {}
    found, unknown = {}, []
    for name, route in __utils__["certsync_routes.certificates"](pillar).items():
        given = route.get("source") if isinstance(route, dict) else None
        if not isinstance(given, dict):
            continue
        kind = __utils__["certsync_settings.source_where"]({**top, **given})[0]
        settings, why = _kind_settings(kind)
        if why:
            unknown.append(f"certsync:certificates:{name}:source:kind: {why.split(': ', 1)[1]}")
        else:
            found[kind] = settings
    return found, unknown


def _consumer_kind_problems(cfg):
    """Each consumer, of any route, whose kind this minion does not have, or whose
    entry sets a setting of another consumer kind only (``certsync_consumer``)."""
    kinds = {
        k: __salt__["certsync_consumer.settings"](k) for k in __salt__["certsync_consumer.kinds"]()
    }
    every = {name for names in kinds.values() for name in names}
    found = []
    for route, view in __utils__["certsync_routes.views"](cfg).items():
        for minion, entry in view["consumers"].items():
            try:
                merged = __utils__["certsync_settings.consumer"](view, minion)
            except ValueError:
                continue  # named by problems()
            where = _entry_key(route, minion)
            kind = __salt__["certsync_consumer.kind"](merged.get("kind"))
            if kind not in kinds:
                found.append(
                    f"{where}:kind: no consumer kind {str(kind)[:40]!r} "
                    f"(the kinds: {', '.join(sorted(kinds))})"
                )
                continue
            strays = sorted(str(k) for k in entry or {} if k in every and k not in kinds[kind])
            if strays:
                found.append(
                    f"{where}: {', '.join(strays)} is no setting of the {kind} consumer "
                    f"(it takes {', '.join(kinds[kind])})"
                )
    return list(dict.fromkeys(found))


def _entry_key(route, minion):
    """The pillar key of a consumer's entry in a route."""
    if __utils__["certsync_routes.is_default"](route):
        return f"certsync:consumers:{minion}"
    return f"certsync:certificates:{route}:consumers:{minion}"


def _placement_problems(cfg):
    """For each route this minion consumes: a place its kind cannot give it, names its
    kind cannot serve from there (``certsync_consumer``'s ``unservable``), and where two
    routes would write the same place (their pairs' directories, a service's files);
    each named by its route."""
    writes, found = {}, []
    for route in __utils__["certsync_routes.of_minion"](cfg, __opts__["id"])["consumer"]:
        view = __utils__["certsync_routes.view"](cfg, route)
        where = _entry_key(route, __opts__["id"])
        try:
            kind, given, dest = _placed(view)
            refused = __salt__["certsync_consumer.call"](
                kind, "unservable", dest, view.get("hostname"), given
            )
        except (CommandExecutionError, SaltInvocationError) as exc:
            found.append(f"{where}: {exc}")
            continue
        found += [f"{where}: {sentence}" for sentence in refused]
        files = given.get("files") if isinstance(given.get("files"), list) else []
        writes[route] = [
            dest,
            *(f["path"] for f in files if isinstance(f, dict) and isinstance(f.get("path"), str)),
        ]
    return found + __utils__["certsync_routes.collisions"](writes)


def _kind(settings):
    """This consumer's kind (``certsync_consumer``), the names of that kind's settings,
    and this consumer's values of them."""
    kind = __salt__["certsync_consumer.kind"](settings.get("kind"))
    try:
        known = __salt__["certsync_consumer.settings"](kind)
    except SaltInvocationError as exc:
        raise CommandExecutionError(f"certsync:consumers:{__opts__['id']}:kind: {exc}") from None
    return kind, known, __salt__["certsync_consumer.own"](kind, settings)


def _own_settings(cfg):
    consumers = cfg.get("consumers")
    if not isinstance(consumers, dict) or __opts__["id"] not in consumers:  # never a substring
        where = _entry_key(cfg.get("route"), __opts__["id"]).rsplit(":", 1)[0]
        raise CommandExecutionError(
            f"{__opts__['id']} is not a consumer in the certsync pillar ({where})"
        )
    try:
        return __utils__["certsync_settings.consumer"](cfg, __opts__["id"])
    except ValueError as exc:
        raise CommandExecutionError(str(exc)) from None


def _dest(cfg, kind, given):
    route = cfg.get("route") or "default"
    return __salt__["certsync_consumer.call"](kind, "dest", cfg.get("hostname"), given, route)


def _placed(cfg):
    """This consumer's kind, its settings of that kind and the directory its pair of
    the route ``cfg`` is the view of goes in; raises when its settings give none."""
    kind, _, given = _kind(_own_settings(cfg))
    return kind, given, _dest(cfg, kind, given)


def dest(route=None):
    """
    The directory this consumer's pair of ``route`` (unset: the default
    route, or its first when it takes no default one) goes in, as its consumer
    kind says (``certsync_consumer``'s ``dest``: a place of the kind's own, or
    of the route's; a ``service`` consumer's ``dir``): what the formula's SLS
    give the states, the one place the path is built.

    CLI Example:

    .. code-block:: bash

        salt mail-host certsync_settings.dest
        salt mail-host certsync_settings.dest route=shop
    """
    return _placed(_own_view(route))[2]


def consumer(route=None):
    """
    This consumer's settings for ``route`` (unset: the default route, or its
    first when it takes no default one): its entry under
    ``certsync:consumers`` (a route's: under
    ``certsync:certificates:<route>:consumers``, over the former) merged over
    ``consumer_defaults`` (``relay`` and ``alerts`` key by key), with the
    ``route``, the ``hostname``, the ``source`` minion and ``dest`` (the
    directory its pair goes in); endpoints as its consumer kind resolves them.
    Credentials (``tsig_secret``, ``api_token``, ``password``) are shown as
    ``**********``, as ``pillar.get`` shows them.

    CLI Example:

    .. code-block:: bash

        salt mail-host certsync_settings.consumer
        salt mail-host certsync_settings.consumer route=shop
    """
    return __utils__["certsync_settings.masked_credentials"](
        _consumer(_own_view(route)), declared()
    )


def _consumer(cfg):
    settings = _own_settings(cfg)
    kind, _, given = _kind(settings)
    settings.update(
        route=cfg.get("route") or "default",
        hostname=cfg["hostname"],
        source=(cfg.get("source") or {}).get("minion"),
        dest=_dest(cfg, kind, given),
    )
    try:
        prepared = __salt__["certsync_consumer.prepare"](
            kind, settings["dest"], settings["hostname"], settings.get("endpoints"), given
        )
        settings["endpoints"] = prepared["endpoints"]
    except (CommandExecutionError, SaltInvocationError) as exc:
        log.debug("certsync: endpoints as given (%s)", exc)  # the check names the problem
    return settings


def deploy_args(fingerprint="", route=None):
    """
    What this consumer's deploy of ``route`` (unset: the default route, or its
    first when it takes no default one) is given, from its settings: the
    arguments of the formula's ``certsync.deployed`` SLS, the same the
    master's runner sends on a renewal (``certsync_deploy.deployed``),
    without credentials.

    CLI Example:

    .. code-block:: bash

        salt mail-host certsync_settings.deploy_args
        salt mail-host certsync_settings.deploy_args route=shop
    """
    cfg = _own_view(route)
    settings = _own_settings(cfg)
    source = (cfg.get("source") or {}).get("minion")
    kind, known, given = _kind(settings)
    try:
        args = __utils__["certsync_settings.deploy_args"](
            cfg, __opts__["id"], source, fingerprint, _dest(cfg, kind, given), known
        )
    except ValueError as exc:
        raise CommandExecutionError(str(exc)) from None
    if kind != __salt__["certsync_consumer.kind"]():
        args["consumer"] = kind
    return args


#: What the deploy takes that a roll back does not (it restores what is there).
_DEPLOY_ONLY = ("source_minion", "fingerprint", "min_days", "allow_older", "paused")


def rollback_args(route=None):
    """
    What this consumer's roll back of ``route`` is given
    (``certsync.rolled_back`` in the formula's ``certsync.rollback``):
    ``deploy_args`` without what only a deploy takes.

    CLI Example:

    .. code-block:: bash

        salt mail-host certsync_settings.rollback_args
    """
    return {k: v for k, v in deploy_args(route=route).items() if k not in _DEPLOY_ONLY}


def reuse_key_wanted(route=None):
    """
    Whether the formula makes certbot keep the key of the source of ``route``
    (unset: the default route, or this minion's first) (``reuse_key = True``),
    from this minion's pillar: ``certsync:source:reuse_key`` true or
    false, or ``auto`` (the default): only when a published TLSA 3 1 1 record
    pins the key (a consumer has ``dane`` on, or ``dns:tlsa_ports`` is set).
    Returns ``wanted`` and ``why``.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_settings.reuse_key_wanted
        salt npm-host certsync_settings.reuse_key_wanted route=shop
    """
    return _reuse_key_of(_own_view(route))


def _reuse_key_of(view):
    """:py:func:`reuse_key_wanted` of a route's merged settings."""
    try:
        wanted, why = __utils__["certsync_settings.reuse_key_wanted"](view)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None
    return {"wanted": wanted, "why": why}


def routes():
    """
    The routes this minion takes part in, by role: under ``source``, each
    route it publishes (``hostname``, the source ``kind`` and its
    ``settings``, the ``consumers``, and ``keep_key``: whether certbot must
    keep the key); under ``consumer``, each route it deploys (``hostname``,
    the ``source`` minion, its consumer ``kind`` and ``dest``; both None and
    ``refused`` why when its settings give it no place). What the
    formula's SLS loop over; ``default`` is the route of the
    single-certificate keys.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync_settings.routes
    """
    cfg = _formula_settings()
    taken = __utils__["certsync_routes.of_minion"](cfg, __opts__["id"])
    found = {"source": {}, "consumer": {}}
    for route in taken["source"]:
        view = __utils__["certsync_routes.view"](cfg, route)
        found["source"][route] = {
            "hostname": view.get("hostname"),
            **_source_of(view),
            "consumers": sorted(str(c) for c in view["consumers"]),
            "keep_key": _reuse_key_of(view)["wanted"],
        }
    for route in taken["consumer"]:
        view = __utils__["certsync_routes.view"](cfg, route)
        found["consumer"][route] = {
            "hostname": view.get("hostname"),
            "source": __utils__["certsync_routes.source_minion"](view),
            **_place(view),
        }
    return found


def _place(view):
    """A consumed route's consumer ``kind`` and ``dest``; both None, and ``refused``
    why, when its settings give it none (the settings check names it)."""
    try:
        kind, _, dest = _placed(view)
        return {"kind": kind, "dest": dest}
    except (CommandExecutionError, SaltInvocationError) as exc:
        return {"kind": None, "dest": None, "refused": str(exc)}
