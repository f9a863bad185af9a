"""
Certificate consumers behind one interface
==========================================

A consumer kind is one execution module, ``certsync_consumer_<kind>``, with
the functions in ``FUNCTIONS``. The deploy (``certsync_deploy``) installs the
pair into its directory and calls the kind, through this module, for the
rest: which settings it takes, which directories the pair goes in, what it
checks before a deploy, how its services take the new pair (reload), what a
restart is, and which of its services serve a given endpoint. Nothing else
knows a consumer's layout or its services. A new kind is one new module
(``mailcow`` is ``certsync_consumer_mailcow``, ``service`` a plain host's
systemd units, HAProxy among them).

Every function of a kind takes the settings ``prepare`` returned as its
last argument, ``settings``:

``settings()``
    The names of the settings the kind takes.
``dest(hostname, given, route)``
    The directory certsync keeps the pair in (and its previous pair, for a
    roll back), from the kind's settings as given, for the certificate of
    ``route`` (``default``: the single-certificate keys; a kind that serves
    several certificates may keep each route's in a place of its own).
``prepare(dest, hostname, endpoints, settings)``
    The settings checked and completed: ``services`` (what ``reload``
    reloads, a list of names), ``endpoints`` (as ``tlsprobe`` takes them),
    ``backoff`` (what restarts are counted by), ``writes`` (the copies
    of the pair ``reload`` writes, if any: it runs with no service then) and
    ``sni_only`` (optional: true when the pair is served by SNI alone, not to
    a client that names no host, so it is not probed without SNI).
``layout(dest, fullchain, hostname, settings)``
    ``dirs`` (``dest`` first), ``names`` (SNI names to probe beside the
    hostname), ``files`` (``{dir: {name: text}}``: files written beside the pair in
    that dir, with it), ``originals`` (``{name: keep_as}``, see ``certsync.install``)
    and ``notes``.
``unservable(dest, hostname, given)``
    Why the kind cannot serve the certificate of ``hostname`` from ``dest``
    with the settings as given (sentences; none: it can): the settings check
    refuses such a route by name before any deploy.
``checks(hostname, validation, test, settings)``
    Lines for the comment; raises to refuse the deploy.
``preflight(settings)``
    Raises when a service is not there, before anything changes.
``drift(dest, settings)``
    How the kind's own copies differ from the pair in ``dest`` (lines).
``reload(dest, settings)``
    Make the services take the pair in ``dest``:
    ``{service: {ok, output or error}}``, and under ``written`` the line
    that says which copies of the pair it wrote.
``restart(services, dest, settings)``
    Restart those services: the same shape.
``stale(protocols, settings)``
    The services to restart when these endpoints serve another certificate.
``uncovered(dest, hostname, settings)``
    What the monitor's ``uncovered`` alert reports: ``uncovered`` (``{entry:
    row}``, the places the kind leaves alone because the deployed certificate
    does not cover their names) and ``dropped`` (``{entry: row}``, names the
    kind no longer serves from their own place).
"""

from salt.exceptions import SaltInvocationError

__virtualname__ = "certsync_consumer"

#: The interface every consumer kind implements.
FUNCTIONS = (
    "settings",
    "dest",
    "prepare",
    "unservable",
    "layout",
    "checks",
    "preflight",
    "drift",
    "reload",
    "restart",
    "stale",
    "uncovered",
)
#: The consumer kind where none is named.
DEFAULT_KIND = "mailcow"


def __virtual__():
    return __virtualname__


def kinds():
    """
    The consumer kinds this minion has: every ``certsync_consumer_<kind>``
    module that loaded (found by its file: ``certsync_registry``).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer.kinds
    """
    return __utils__["certsync_registry.loaded"](
        __opts__, __salt__, "certsync_consumer_", "settings"
    )


def kind(name=None):
    """
    The consumer kind ``name`` names: ``mailcow`` where none is named.

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer.kind service
    """
    return DEFAULT_KIND if name in (None, "") else name


def call(name, function, *args):
    """
    Call ``function`` (one of ``FUNCTIONS``) of the consumer kind ``name``.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer.call mailcow settings
    """
    if function not in FUNCTIONS:
        raise SaltInvocationError(
            f"{repr(function)[:40]} is no function of a consumer kind ({', '.join(FUNCTIONS)})"
        )
    name = kind(name)
    function_name = f"certsync_consumer_{name}.{function}" if isinstance(name, str) else None
    if function_name not in __salt__:
        raise SaltInvocationError(
            f"unknown consumer kind {repr(name)[:60]}: no certsync_consumer_"
            f"{name if isinstance(name, str) else '<kind>'} module on this minion "
            f"(its kinds: {', '.join(kinds()) or 'none'}; saltutil.sync_modules, and see "
            "the minion's log for load errors)"
        )
    return __salt__[function_name](*args)


def settings(name=None):
    """
    The names of the settings a consumer of the kind ``name`` takes
    (default: ``mailcow``).

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer.settings service
    """
    return call(name, "settings")


def own(name, merged):
    """
    A consumer's settings of the kind ``name`` among its ``merged`` settings (its
    pillar entry over ``consumer_defaults``, which hold every kind's): what
    :py:func:`prepare` takes.

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer.own service '{units: [nginx], mailcow_dir: /opt/m}'
    """
    return {key: merged[key] for key in settings(name) if key in merged}


def prepare(name, dest, hostname, endpoints, given):
    """
    The settings ``given`` for a consumer of the kind ``name`` deploying into ``dest``,
    checked (a setting the kind does not take is named, with the ones it
    takes) and completed by the kind (see the module's documentation).

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer.prepare service /etc/certsync/mail.example.com \\
            mail.example.com '[smtp]' '{units: [postfix]}'
    """
    given = dict(given or {})
    known = settings(name)
    unknown = sorted(str(key) for key in set(given) - set(known))
    if unknown:
        raise SaltInvocationError(
            f"{', '.join(unknown)}: not a setting of the {kind(name)} consumer "
            f"(its settings: {', '.join(known)})"
        )
    return call(name, "prepare", dest, hostname, endpoints, given)
