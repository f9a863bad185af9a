"""
The certsync pillar, as the formula reads it
============================================

Thin loader functions over ``salt://_utils/certsync_settings.py``: this
minion's ``certsync`` pillar merged over the formula's ``defaults.yaml``
(from the master's file server), checked, and read for one role. The
formula's SLS, the monitor and ``certsync_status`` ask here; credentials are
masked in every answer.
"""

import os

import salt.utils.yaml
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync_settings"


def __virtual__():
    if "certsync_settings.role" not in __utils__:
        return (False, "certsync_settings needs salt://_utils/certsync_settings.py: sync_all")
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


def source():
    """
    The source's ``kind`` and its ``settings`` of that kind, from the
    ``certsync:source`` pillar over the defaults: what the formula's SLS give
    ``certsync_source`` (``npm``: ``live_dir`` and, when set, ``dir``).

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_settings.source
    """
    kind, where = __utils__["certsync_settings.source_where"](_formula_settings().get("source"))
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
    (``certsync_dns_<name>.credential_keys``). Any setting named ``*_secret``,
    ``*_token``, ``password`` or ``passphrase`` is a credential too.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync_settings.declared
    """
    keys = set()
    for function in [f for f in __salt__ if f.endswith(".credential_keys")]:
        if function.startswith("certsync_dns_"):
            keys.update(str(key) for key in __salt__[function]())
    return sorted(keys)


def _formula_defaults():
    """The formula's defaults.yaml (``certsync``), from the master's file server."""
    text = __salt__["cp.get_file_str"]("salt://certsync/defaults.yaml") or ""
    return (salt.utils.yaml.safe_load(text) or {}).get("certsync", {})


def _certsync_pillar():
    # __pillar__ itself, not pillar.get: Salt 3008 masks what pillar.get returns.
    found = __pillar__.get("certsync")
    return dict(found) if isinstance(found, dict) else {}


def _formula_settings():
    """The certsync pillar merged over the formula's defaults.yaml."""
    return __utils__["certsync_settings.merged"](_formula_defaults(), _certsync_pillar())


def check():
    """
    This minion's ``certsync`` pillar against the formula's ``defaults.yaml``:
    every key the formula does not know (with the closest one it knows), a
    missing ``hostname``, entries that are no mapping, a credential of
    another minion (its key named, never its value: each consumer's
    credentials belong in a pillar SLS targeted to it alone); and this minion's
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
    problems = [
        *([unknown_kind] if unknown_kind else []),
        *__utils__["certsync_settings.problems"](pillar, defaults, kind_settings),
    ]
    cfg = __utils__["certsync_settings.merged"](defaults, pillar)
    role, why = __utils__["certsync_settings.role"](cfg, __opts__["id"])
    problems += __utils__["certsync_settings.foreign_credentials"](
        pillar, __opts__["id"], role, declared()
    )
    valid = not problems and (role is not None or cfg.get("no_role") is True)
    if not valid:
        __context__["retcode"] = 1
    return {"valid": valid, "role": role, "why": why, "problems": problems}


def dest(mailcow_dir):
    """
    The directory a consumer's pair goes in, under the mailcow checkout
    ``mailcow_dir``: what the formula's SLS give the states, the one place
    the path is built.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_settings.dest /opt/mailcow-dockerized
    """
    return __utils__["certsync_settings.dest"](mailcow_dir)


def consumer():
    """
    This consumer's settings: its entry under ``certsync:consumers`` merged
    over ``consumer_defaults`` (``relay`` and ``alerts`` key by key), with the
    ``hostname``, the ``source`` minion and ``dest`` (the directory mailcow
    reads the pair from). Credentials
    (``tsig_secret``, ``api_token``, ``password``) are shown as ``**********``,
    as ``pillar.get`` shows them.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_settings.consumer
    """
    return __utils__["certsync_settings.masked_credentials"](
        _consumer(_formula_settings()), declared()
    )


def _consumer(cfg):
    consumers = cfg.get("consumers")
    if not isinstance(consumers, dict) or __opts__["id"] not in consumers:  # never a substring
        raise CommandExecutionError(
            f"{__opts__['id']} is not a consumer in the certsync pillar (certsync:consumers)"
        )
    try:
        settings = __utils__["certsync_settings.consumer"](cfg, __opts__["id"])
    except ValueError as exc:
        raise CommandExecutionError(str(exc)) from None
    settings.update(
        hostname=cfg["hostname"],
        source=(cfg.get("source") or {}).get("minion"),
        dest=__utils__["certsync_settings.dest"](settings["mailcow_dir"]),
    )
    endpoints = settings.get("endpoints")
    bare = isinstance(endpoints, list) and all(":" not in str(e) for e in endpoints)
    conf = os.path.join(settings["mailcow_dir"], "mailcow.conf")
    from_conf = "mailcow.endpoints" in __salt__ and os.path.isfile(conf)
    if endpoints and bare and settings.get("services") and from_conf:
        # Ports and addresses from mailcow.conf, as certsync.deployed takes them.
        settings["endpoints"] = __salt__["mailcow.endpoints"](settings["mailcow_dir"], endpoints)
    return settings


def deploy_args(fingerprint=""):
    """
    What this consumer's deploy is given, from its settings: the arguments
    of the formula's ``certsync.deployed`` SLS, the same the master's runner
    sends on a renewal (``certsync_deploy.deployed``), without credentials.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_settings.deploy_args
    """
    cfg = _formula_settings()
    source = (cfg.get("source") or {}).get("minion")
    try:
        return __utils__["certsync_settings.deploy_args"](cfg, __opts__["id"], source, fingerprint)
    except ValueError as exc:
        raise CommandExecutionError(str(exc)) from None


def reuse_key_wanted():
    """
    Whether the formula makes certbot keep the source's key (``reuse_key =
    True``), from this minion's pillar: ``certsync:source:reuse_key`` true or
    false, or ``auto`` (the default): only when a published TLSA 3 1 1 record
    pins the key (a consumer has ``dane`` on, or ``dns:tlsa_ports`` is set).
    Returns ``wanted`` and ``why``.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_settings.reuse_key_wanted
    """
    try:
        wanted, why = __utils__["certsync_settings.reuse_key_wanted"](_formula_settings())
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None
    return {"wanted": wanted, "why": why}
