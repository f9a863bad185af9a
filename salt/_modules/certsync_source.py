"""
Certificate sources behind one interface
========================================

A source kind is one execution module, ``certsync_source_<kind>``, with the
same five functions: ``settings`` (the names of its settings), ``locate``
(the pair for a hostname), ``watched`` (the
files whose change means a renewal), ``renewal`` (how the next renewal goes,
``next_renewal_keeps_key`` among it) and ``keep_key`` (make the next renewal
keep the key). The publication, the beacon, the status and a local deploy
call this module with ``kind`` and the pillar's ``certsync:source`` settings
of that kind; nothing else knows a source's layout. A new kind is one new
module (``npm``, NPM's certbot tree, is ``certsync_source_npm``).
"""

from salt.exceptions import SaltInvocationError

__virtualname__ = "certsync_source"

#: The interface every source kind implements.
FUNCTIONS = ("settings", "locate", "watched", "renewal", "keep_key")


def __virtual__():
    return __virtualname__


def _provider(kind, function):
    kind = __utils__["certsync_settings.source_kind"](kind)
    name = f"certsync_source_{kind}.{function}" if isinstance(kind, str) else None
    if name not in __salt__:
        raise SaltInvocationError(
            f"unknown certificate source kind {repr(kind)[:60]}: no certsync_source_"
            f"{kind if isinstance(kind, str) else '<kind>'} module on this minion "
            "(saltutil.sync_modules, and see the minion's log for load errors)"
        )
    return __salt__[name]


def _settings(kind, where):
    """The settings of ``kind`` among a call's keyword arguments: not Salt's own, not
    another kind's (the formula's defaults hold every kind's), not unset."""
    known = settings(kind)
    return {key: value for key, value in where.items() if key in known and value not in ("", None)}


def settings(kind=None):
    """
    The names of the settings a source of ``kind`` takes.

    CLI Example:

    .. code-block:: bash

        salt caddy-host certsync_source.settings caddy
    """
    return _provider(kind, "settings")()


def locate(hostname, kind=None, **where):
    """
    The pair to publish or deploy for ``hostname``: ``fullchain``,
    ``privkey`` and ``dir`` (where it was found), from a source of ``kind``
    with its settings (``npm``: ``live_dir`` [and ``dir``], or ``source``).

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source.locate mail.example.com live_dir=/opt/npm/letsencrypt/live
    """
    return _provider(kind, "locate")(hostname, **_settings(kind, where))


def watched(hostname, kind=None, **where):
    """
    The files whose change means the source renewed (the beacon ``stat``\\ s
    them between renewals).

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source.watched mail.example.com live_dir=/etc/letsencrypt/live
    """
    return _provider(kind, "watched")(hostname, **_settings(kind, where))


def renewal(hostname, kind=None, **where):
    """
    How the source will renew the certificate; ``next_renewal_keeps_key``
    says whether a key pinned by a TLSA record survives it.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source.renewal mail.example.com live_dir=/etc/letsencrypt/live
    """
    return _provider(kind, "renewal")(hostname, **_settings(kind, where))


def keep_key(hostname, kind=None, test=False, **where):
    """
    Make the source keep the key at its next renewal; ``changed`` says
    whether anything had to change, ``where`` names the setting (a file).

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source.keep_key mail.example.com \\
            live_dir=/etc/letsencrypt/live test=True
    """
    return _provider(kind, "keep_key")(hostname, test=test, **_settings(kind, where))
