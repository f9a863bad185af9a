"""
The ``npm`` source kind: Nginx Proxy Manager's certbot tree
===========================================================

One provider behind ``certsync_source`` (as each of certbot's DNS plugins is
one file behind one interface): where NPM's certbot keeps the pair for a
hostname, which files change when it renews, and whether its next renewal
keeps the key. Its settings are the pillar's ``certsync:source`` keys:

live_dir
    certbot's ``live/`` directory as NPM mounts it, searched for the lineage
    (``npm-N``) whose certificate covers the hostname, the newest usable one
    (``certsync.find_source``).

dir
    The lineage under ``live_dir`` (``npm-5``), to skip the search.

source
    Instead of both: the lineage directory itself.
"""

import os

from salt.exceptions import SaltInvocationError

__virtualname__ = "certsync_source_npm"


def __virtual__():
    if "certsync.find_source" not in __salt__:
        return (False, "certsync_source_npm needs the certsync execution module")
    return __virtualname__


def settings():
    """
    The names of this kind's settings.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source_npm.settings
    """
    return ["live_dir", "dir", "source"]


def _absolute(value, what):
    if not (isinstance(value, str) and os.path.isabs(value)):
        raise SaltInvocationError(f"{what} must be an absolute path, not {repr(value)[:300]}")
    return value


def _lineage(hostname, source=None, live_dir=None, dir=None):
    """The lineage directory the settings name, or the one found for ``hostname``."""
    if source and live_dir:
        raise SaltInvocationError("give either source or live_dir, not both")
    if source:
        return _absolute(source, "source (a lineage directory)")
    if not live_dir:
        raise SaltInvocationError("the npm source needs live_dir (and dir) or source, a lineage")
    live_dir = _absolute(live_dir, "live_dir")
    if dir:
        if not isinstance(dir, str) or "/" in dir or dir in (".", ".."):
            raise SaltInvocationError(f"dir must be a lineage name such as npm-5, not {dir!r}")
        return os.path.join(live_dir, dir)
    return __salt__["certsync.find_source"](hostname, live_dir)["dir"]


def locate(hostname, source=None, live_dir=None, dir=None):
    """
    The pair for ``hostname``: ``fullchain``, ``privkey`` and ``dir`` (the
    lineage directory, read through NPM's symlinks).

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source_npm.locate mail.example.com live_dir=/etc/letsencrypt/live
    """
    lineage = _lineage(hostname, source, live_dir, dir)
    return {
        "fullchain": os.path.join(lineage, "fullchain.pem"),
        "privkey": os.path.join(lineage, "privkey.pem"),
        "dir": lineage,
    }


def watched(hostname, source=None, live_dir=None, dir=None):
    """
    The files whose change (a new inode, size or time, or a relinked
    ``live/`` symlink) means certbot renewed: each lineage's ``fullchain.pem``
    under ``live_dir`` (a new lineage too; ``live_dir`` itself while it has
    none), or the one lineage's. Nothing is parsed.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source_npm.watched mail.example.com live_dir=/etc/letsencrypt/live
    """
    if source or dir:
        return [os.path.join(_lineage(hostname, source, live_dir, dir), "fullchain.pem")]
    live_dir = _absolute(live_dir, "live_dir")
    try:
        entries = sorted(os.listdir(live_dir))
    except OSError:
        return [live_dir]
    # an empty live/ is watched itself: its first lineage is a change
    return [os.path.join(live_dir, entry, "fullchain.pem") for entry in entries] or [live_dir]


def renewal(hostname, source=None, live_dir=None, dir=None):
    """
    How certbot will renew the lineage (``certsync.renewal``), with
    ``next_renewal_keeps_key``.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source_npm.renewal mail.example.com live_dir=/etc/letsencrypt/live
    """
    return __salt__["certsync.renewal"](_lineage(hostname, source, live_dir, dir))


def keep_key(hostname, source=None, live_dir=None, dir=None, test=False):
    """
    Make certbot keep the lineage's key at its next renewal
    (``certsync.set_reuse_key``: ``reuse_key = True`` in its renewal file).
    ``changed``, and ``where`` the setting is (the renewal file).

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source_npm.keep_key mail.example.com \\
            live_dir=/etc/letsencrypt/live test=True
    """
    lineage = _lineage(hostname, source, live_dir, dir)
    done = __salt__["certsync.set_reuse_key"](lineage, test=test)
    return {**done, "where": done["renewal_file"]}


def release_key(hostname, source=None, live_dir=None, dir=None, test=False):
    """
    Undo ``keep_key``: take out the ``reuse_key`` line certsync wrote in the
    lineage's renewal file, or put back the one it replaced
    (``certsync.unset_reuse_key``; what ``certsync.absent`` applies). npm only:
    other kinds keep no setting of certsync's.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source_npm.release_key mail.example.com \\
            live_dir=/etc/letsencrypt/live test=True
    """
    lineage = _lineage(hostname, source, live_dir, dir)
    return __salt__["certsync.unset_reuse_key"](lineage, test=test)
