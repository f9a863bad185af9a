"""
The certsync pillar, read as the formula reads it
=================================================

Synced with ``saltutil.sync_utils`` and called through
``__utils__["certsync_settings.<name>"]`` by the ``certsync`` execution
module and the runner: which keys the formula knows (``defaults.yaml``), and
the decisions taken from the merged settings that more than one place needs,
one merge of the pillar over the defaults (a consumer's settings, its deploy's
arguments), and the rule that credentials stay in the pillar of the minion
that uses them.
"""

import difflib
import re

import salt.utils.dictupdate

#: Mappings whose keys are the operator's own: service names, minion ids, ports,
#: DNS settings checked where they are used (and see _free_form).
FREE_FORM = frozenset(
    {
        "consumers",
        "reload_commands",
        "endpoints",
        "dane",
        "probe_addresses",
        "return_path",
    }
)
#: The formula's own keys under ``certsync:source``; the others are the settings of the
#: source's kind (``certsync_source``), given to it as they are.
FORMULA_SOURCE_KEYS = frozenset({"minion", "kind", "beacon_interval", "watch", "reuse_key"})
#: The source kind where none is named: NPM's certbot tree.
DEFAULT_KIND = "npm"
#: What a consumer's deploy takes from its settings (certsync_deploy.deploy's arguments)
#: beside its kind's own, always, and those passed only when set.
DEPLOY_SETTINGS = ("min_days", "endpoints", "probe_address", "verify_timeout", "dane")
DEPLOY_IF_SET = ("allow_older", "paused")
#: Keys the defaults leave out on purpose (each has a meaning when absent).
OPTIONAL = {"certsync:schedule": ("seconds", "hours", "days")}


def _free_form(key, default):
    """Whether the keys under ``key`` are the operator's own: a FREE_FORM setting, or
    the settings of another program's environment-style file (a mapping whose
    default's keys are upper case, as a consumer kind's configuration file takes them)."""
    if key in FREE_FORM:
        return True
    return isinstance(default, dict) and bool(default) and all(str(k).isupper() for k in default)


def _closest(key, known):
    found = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
    return found[0] if found else None


def _unknown(given, known, path, problems, what="certsync setting"):
    """Each key of ``given`` (at ``path``) that ``known`` lacks, as "is no ``what``"
    with the closest known key; nested mappings are followed."""
    if not isinstance(given, dict) or not isinstance(known, dict):
        return
    allowed = [*known, *OPTIONAL.get(path, ())]
    for key, value in given.items():
        where = f"{path}:{key}"
        if key not in allowed:
            closest = _closest(key, allowed)
            problems.append(
                f"{where} is no {what}" + (f": did you mean {path}:{closest}?" if closest else "")
            )
        elif (
            not _free_form(key, known.get(key)) and isinstance(known.get(key), dict) and known[key]
        ):
            _unknown(value, known[key], where, problems)


#: Settings that take another type beside their default's: ``dane: true`` or a mapping,
#: ``units`` a list or a mapping.
ALSO_TAKES = {"dane": (dict,), "reuse_key": (bool,), "units": (dict,)}


def _type_problem(value, default, where):
    """Why ``value`` is not of the type of its ``default`` (a sentence), or None."""
    key = where.rsplit(":", 1)[-1]
    if value is None or isinstance(value, ALSO_TAKES.get(key, ())):
        return None
    shown = repr(value)[:40]
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"{where} must be true or false, not {shown}"
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{where} must be a number, not {shown}"
        return None
    if isinstance(default, str):
        if not isinstance(value, str):
            return f"{where} must be a string, not {shown}"
        if default and not value.strip():
            return f"{where} must not be empty (the default is {default!r})"
        return None
    if isinstance(default, list) and not isinstance(value, list):
        return f"{where} must be a list, not {shown}"
    if isinstance(default, dict) and not isinstance(value, dict):
        return f"{where} must be a mapping, not {shown}"
    return None


def _wrong_types(given, known, path, problems):
    """Each value of ``given`` (at ``path``) whose type is not its default's in
    ``known``, followed into mappings (the operator's free-form ones left alone)."""
    if not isinstance(given, dict) or not isinstance(known, dict):
        return
    for key, value in given.items():
        if key not in known or (_free_form(key, known[key]) and not isinstance(known[key], bool)):
            continue
        where = f"{path}:{key}"
        found = _type_problem(value, known[key], where)
        if found:
            problems.append(found)
        elif isinstance(value, dict) and isinstance(known[key], dict) and known[key]:
            _wrong_types(value, known[key], where, problems)


def _source_problems(source, defaults, kind_settings, where, found):
    """The problems of a ``source`` mapping at ``where``: unknown keys (the formula's
    and, with ``kind_settings``, its kind's), values of the wrong type."""
    if kind_settings is not None:
        kind = source_where(source)[0]
        allowed = dict.fromkeys([*sorted(FORMULA_SOURCE_KEYS), *kind_settings])
        what = f"setting of the {kind} source (it takes {', '.join(kind_settings)})"
        _unknown(source, allowed, where, found, what)
    else:
        _unknown(source, defaults.get("source"), where, found)
    source_defaults = (
        defaults.get("source")
        if kind_settings is None
        else {k: v for k, v in (defaults.get("source") or {}).items() if k in FORMULA_SOURCE_KEYS}
    )
    if source is not None and not isinstance(source, dict):
        found.append(f"{where} must be a mapping (minion: <id>, ...), not {repr(source)[:40]}")
    else:
        _wrong_types(source, source_defaults, where, found)


def _consumers_problems(consumers, consumer_defaults, where, found):
    """The problems of a ``consumers`` mapping at ``where``: an entry that is no
    mapping, keys no consumer has, values of the wrong type."""
    if consumers is not None and not isinstance(consumers, dict):
        found.append(f"{where} must map minion ids to their settings, not {repr(consumers)[:40]}")
    for minion, entry in (consumers if isinstance(consumers, dict) else {}).items():
        if entry is not None and not isinstance(entry, dict):
            found.append(f"{where}:{minion} must be a mapping (or empty)")
            continue
        _unknown(entry, consumer_defaults, f"{where}:{minion}", found)
        _wrong_types(entry, consumer_defaults, f"{where}:{minion}", found)


def problems(pillar, defaults, kind_settings=None, route_kinds=None):
    """What is wrong with the ``certsync`` pillar against the formula's ``defaults``
    (both the ``certsync`` mapping): each unknown key with the closest known one, a
    missing hostname, a consumers entry that is no mapping; the same in each route of
    ``certsync:certificates`` (whose own shape ``certsync_routes.problems`` checks).
    A list of sentences. ``kind_settings``: the settings of the pillar's source kind,
    which are then the keys ``certsync:source`` may hold beside the formula's own
    (else the defaults'); ``route_kinds``: the same for each route's source kind
    (``{kind: settings}``, a kind left out: checked against the defaults')."""
    if not isinstance(pillar, dict):
        return [f"certsync must be a mapping, not {type(pillar).__name__}"]
    found = []
    _unknown(pillar, {**defaults, "source": {}}, "certsync", found)  # source: below
    _wrong_types(
        {k: v for k, v in pillar.items() if k not in ("consumers", "source", "certificates")},
        defaults,
        "certsync",
        found,
    )
    _source_problems(pillar.get("source"), defaults, kind_settings, "certsync:source", found)
    consumer_defaults = defaults.get("consumer_defaults")
    _consumers_problems(pillar.get("consumers"), consumer_defaults, "certsync:consumers", found)
    routes = pillar.get("certificates") if isinstance(pillar.get("certificates"), dict) else {}
    for name, route in routes.items():
        if not isinstance(route, dict):
            continue  # named by certsync_routes.problems
        where = f"certsync:certificates:{str(name)[:40]}"
        if "source" in route:
            kind = source_where({**(pillar.get("source") or {}), **(route["source"] or {})})[0]
            given = (route_kinds or {}).get(kind)
            _source_problems(route["source"], defaults, given, f"{where}:source", found)
        _consumers_problems(route.get("consumers"), consumer_defaults, f"{where}:consumers", found)
    if not pillar.get("hostname") and (not routes or pillar.get("consumers")):
        found.append(
            "certsync:hostname is not set: the mail host name the certificate covers"
            + (
                " (certsync:consumers names the consumers of that certificate; those of a "
                "route go under certsync:certificates:<name>:consumers)"
                if routes
                else ""
            )
        )
    return found


#: Consumer settings merged key by key (the consumer's own keys over
#: consumer_defaults'), where the others are taken whole from one or the other.
MERGED_BY_KEY = ("relay", "alerts")


def _follow(value, path):
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def consumer_setting(cfg, minion_id, *path):
    """A consumer's own setting from its ``certsync`` pillar (``cfg``):
    ``consumers:<minion_id>`` (where that lacks the setting's first key: its
    entry in the first route that sets it) over ``consumer_defaults`` (key by key at the top, and
    within ``relay`` and ``alerts``, as map.jinja merges them), then ``path``
    followed down; None where anything on the way is missing. Returns the setting
    and the pillar key it was looked up at."""
    cfg = cfg if isinstance(cfg, dict) else {}
    defaults = (
        cfg.get("consumer_defaults") if isinstance(cfg.get("consumer_defaults"), dict) else {}
    )
    consumers = cfg.get("consumers") if isinstance(cfg.get("consumers"), dict) else {}
    own = consumers.get(minion_id) if isinstance(consumers.get(minion_id), dict) else {}
    top = path[0]
    mine = f"certsync:consumers:{minion_id}"
    if top not in own:  # a consumer of routes alone: its entry in its first route
        mine, own = _route_entry(cfg, minion_id, top) or (mine, own)
    if top in MERGED_BY_KEY and len(path) > 1:
        found = isinstance(own.get(top), dict) and path[1] in own[top]
        where, value = (mine, own) if found else ("certsync:consumer_defaults", defaults)
    else:
        where, value = (mine, own) if top in own else ("certsync:consumer_defaults", defaults)
    return _follow(value, path), ":".join([where, *map(str, path)])


def _route_entry(cfg, minion_id, key):
    """The pillar key and entry of ``minion_id`` in the first route of
    ``certsync:certificates`` (by name) whose entry for it sets ``key``, or None."""
    routes = cfg.get("certificates") if isinstance(cfg.get("certificates"), dict) else {}
    for name in sorted(routes, key=str):
        route = routes[name] if isinstance(routes[name], dict) else {}
        consumers = route.get("consumers") if isinstance(route.get("consumers"), dict) else {}
        entry = consumers.get(minion_id)
        if isinstance(entry, dict) and key in entry:
            return f"certsync:certificates:{name}:consumers:{minion_id}", entry
    return None


def reuse_key_wanted(cfg):
    """Whether certbot must keep the source's key at renewal (``reuse_key = True``),
    from the ``certsync`` pillar over the formula's defaults (``cfg``):
    ``source:reuse_key`` true or false, or ``auto``: true when a published TLSA
    record pins the key (a consumer has ``dane`` on, or the DNS audit checks TLSA
    records: ``dns:tlsa_ports``), else certbot's default.
    Returns (wanted, why); a value that is none of these is a ValueError."""
    cfg = cfg if isinstance(cfg, dict) else {}
    source = cfg.get("source") if isinstance(cfg.get("source"), dict) else {}
    setting = source.get("reuse_key", "auto")
    if isinstance(setting, bool):
        return setting, f"certsync:source:reuse_key is {str(setting).lower()}"
    if setting != "auto":
        raise ValueError(
            f"certsync:source:reuse_key must be true, false or auto, not {str(setting)[:40]!r}"
        )
    consumers = cfg.get("consumers") if isinstance(cfg.get("consumers"), dict) else {}
    pinning = sorted(c for c in consumers if consumer_setting(cfg, c, "dane")[0])
    if pinning:
        return True, f"reuse_key auto: DANE is on for {', '.join(pinning)}"
    dns = cfg.get("dns") if isinstance(cfg.get("dns"), dict) else {}
    if dns.get("tlsa_ports"):
        return True, "reuse_key auto: the DNS audit checks published TLSA records (dns:tlsa_ports)"
    return False, "reuse_key auto: no TLSA record pins the key (no dane, no dns:tlsa_ports)"


def source_consumers(cfg, source, is_minion_id):
    """The consumers the ``certsync`` pillar ``cfg`` of ``source`` names, when it names
    ``source`` as the source (none otherwise): minion ids (``is_minion_id``), sorted,
    the source itself left out. Whom a publication is sealed for."""
    cfg = cfg if isinstance(cfg, dict) else {}
    named = cfg.get("source") if isinstance(cfg.get("source"), dict) else {}
    consumers = cfg.get("consumers")
    if named.get("minion") != source or not isinstance(consumers, dict):
        return []
    return sorted(c for c in consumers if is_minion_id(c) and c != source)


def source_kind(kind=None):
    """The source kind ``kind`` names: itself, or :py:data:`DEFAULT_KIND` when unset."""
    return DEFAULT_KIND if kind in (None, "") else kind


def source_where(source):
    """The source's kind and its settings (the set ones: not empty, none or false, the
    defaults' placeholders for every kind's) from the ``certsync:source`` mapping: what
    ``certsync_source`` takes."""
    source = source if isinstance(source, dict) else {}
    kind = source_kind(source.get("kind"))
    where = {
        key: value
        for key, value in source.items()
        if key not in FORMULA_SOURCE_KEYS and value not in ("", None, False)
    }
    return kind, where


def merged(defaults, pillar):
    """The ``certsync`` pillar over the formula's ``defaults`` (both the ``certsync``
    mapping), key by key at every depth: what map.jinja's ``pillar.get(..., merge=True)``
    makes."""
    defaults = defaults if isinstance(defaults, dict) else {}
    pillar = pillar if isinstance(pillar, dict) else {}
    # a section of the wrong type is its default here, as map.jinja has it: the check
    # (problems) names it, and every apply stops at that first state
    pillar = {
        key: value
        for key, value in pillar.items()
        if isinstance(value, dict) or not isinstance(defaults.get(key), dict)
    }
    return salt.utils.dictupdate.merge(defaults, pillar)


def consumer(cfg, minion_id):
    """A consumer's settings from the merged ``cfg``: its ``consumers`` entry over
    ``consumer_defaults`` (``relay`` and ``alerts`` key by key), as map.jinja has them. A pillar the
    formula could not render either is a ValueError saying what is wrong."""
    defaults = cfg.get("consumer_defaults")
    consumers = cfg.get("consumers") if isinstance(cfg.get("consumers"), dict) else {}
    entry = consumers.get(minion_id)
    if not isinstance(defaults, dict):
        raise ValueError(f"certsync:consumer_defaults is not a mapping: {repr(defaults)[:80]}")
    if entry is not None and not isinstance(entry, dict):
        raise ValueError(f"certsync:consumers:{minion_id} is not a mapping: {repr(entry)[:80]}")
    entry = entry or {}
    settings = {**defaults, **entry}
    for key in MERGED_BY_KEY:  # one of the wrong type: named by the check, left out here
        base, own = defaults.get(key), entry.get(key)
        settings[key] = salt.utils.dictupdate.update(
            dict(base if isinstance(base, dict) else {}), dict(own if isinstance(own, dict) else {})
        )
    return settings


#: What a deploy job may carry of a consumer's ``dane`` settings: certsync_dane's own;
#: of ``dane:update``, the provider's name alone. The provider's settings, credentials
#: among them, are read by the consumer from its own pillar (certsync_dane).
DEPLOY_DANE_KEYS = ("port", "nameservers", "dns_port", "max_wait")


def _deploy_dane(dane):
    if not isinstance(dane, dict):
        return dane if dane in (None, True, False) else bool(dane)
    kept = {key: dane[key] for key in DEPLOY_DANE_KEYS if key in dane}
    update = dane.get("update")
    if isinstance(update, dict):
        kept["update"] = {"provider": str(update.get("provider") or "rfc2136")}
    return kept


def deploy_args(cfg, minion_id, source, fingerprint, dest, kind_settings):
    """What a consumer's deploy into ``dest`` is given (``certsync.deployed`` in the
    formula's SLS, and ``certsync_deploy.deployed`` sent by the runner): its settings as
    deploy arguments, told which source minion's entry to take (and which certificate to
    expect). An allow-list: ``DEPLOY_SETTINGS``, ``DEPLOY_IF_SET``, the settings of its
    consumer kind (``kind_settings``) that are set, and of ``dane`` only
    ``DEPLOY_DANE_KEYS`` and the provider's name; for a route's view (see
    ``certsync_routes``) other than the default, its ``route``. A job's arguments
    are kept in the job cache and logged: the consumer reads its provider's settings
    and credentials from its own pillar."""
    settings = consumer(cfg, minion_id)
    route = cfg.get("route")
    args = {
        "name": dest,
        "hostname": cfg.get("hostname"),
        **({"route": route} if route not in (None, "", "default") else {}),
        "source_minion": source,
        **({"fingerprint": fingerprint} if fingerprint else {}),
        **{key: settings.get(key) for key in DEPLOY_SETTINGS},
    }
    args.update({key: settings[key] for key in DEPLOY_IF_SET if settings.get(key)})
    args.update(
        {
            key: settings[key]
            for key in kind_settings
            if key in settings and settings[key] not in (None, "", [], {})
        }
    )
    args["dane"] = _deploy_dane(args.get("dane"))
    return args


#: A setting is a credential when its provider declares it so (each DNS provider's
#: ``CREDENTIAL_KEYS``, asked through ``certsync_dns_<name>.credential_keys``) or when its
#: name says so, which holds for a provider that is not loaded here too: read from the
#: pillar of the minion that uses it, never sent as a job's argument, never shown.
_CREDENTIAL_NAME = re.compile(r"(?:^|_)(?:secret|token|password|passphrase)$")
#: What stands for a credential in a return, as Salt's pillar.get masks.
MASK = "**********"
_DROP = object()


def is_credential(key, declared=()):
    """Whether the setting ``key`` is a credential: one of ``declared`` (the keys the
    loaded DNS providers declare), or named as one (``*_secret``, ``*_token``,
    ``password``, ``passphrase``)."""
    return isinstance(key, str) and (key in declared or bool(_CREDENTIAL_NAME.search(key)))


def _walk_credentials(value, replace, declared):
    """A copy of ``value`` with each credential key's value given to ``replace``
    (which returns the stand-in, or ``_DROP`` to leave the key out)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if is_credential(key, declared):
                stand_in = replace(item)
                if stand_in is not _DROP:
                    out[key] = stand_in
            else:
                out[key] = _walk_credentials(item, replace, declared)
        return out
    if isinstance(value, list):
        return [_walk_credentials(item, replace, declared) for item in value]
    return value


def without_credentials(value, declared=()):
    """A copy of ``value`` (mappings and lists, at any depth) with every credential
    key left out."""
    return _walk_credentials(value, lambda _: _DROP, declared)


def masked_credentials(value, declared=()):
    """A copy of ``value`` with every credential that is set shown as ``**********``:
    what a return that shows settings may hold."""
    return _walk_credentials(value, lambda item: MASK if item else item, declared)


def _credential_paths(value, path, declared):
    """Each (path, key) at which ``value`` holds a credential that is set."""
    if isinstance(value, dict):
        for key, item in value.items():
            where = [*path, str(key)]
            if is_credential(key, declared):
                if item not in (None, "", False):
                    yield where, key
            else:
                yield from _credential_paths(item, where, declared)
    elif isinstance(value, list):
        for number, item in enumerate(value):
            yield from _credential_paths(item, [*path, str(number)], declared)


def _consumer_of(path):
    """The consumer whose entry a pillar path is in (``certsync:consumers:<id>`` or a
    route's ``certsync:certificates:<route>:consumers:<id>``), or None."""
    if path[1:2] == ["consumers"] and len(path) > 3:
        return path[2]
    if path[1:2] == ["certificates"] and path[3:4] == ["consumers"] and len(path) > 5:
        return path[4]
    return None


def foreign_credentials(cfg, minion_id, role, declared=()):
    """The credentials the ``certsync`` pillar ``cfg`` of ``minion_id`` (whose ``role`` is
    source, consumer or None) holds that are not its own: its own are in its consumer
    entries (``certsync:consumers:<minion_id>``, a route's
    ``certsync:certificates:<route>:consumers:<minion_id>``) and, for a consumer,
    ``consumer_defaults``. A list of sentences naming each key and the fix (the value
    is never shown)."""
    found = []
    for path, key in _credential_paths(cfg, ["certsync"], declared):
        owner = _consumer_of(path)
        if owner == str(minion_id) or (role == "consumer" and path[1:2] == ["consumer_defaults"]):
            continue
        owner = f"{owner} alone" if owner else "the consumer that uses it, alone"
        found.append(
            f"{':'.join(path)} is a credential ({key}) of another minion, and this minion "
            f"({minion_id}) can read it: move it to a pillar SLS targeted to {owner} in "
            "the pillar's top.sls, under the same keys (the value is not shown)"
        )
    return found
