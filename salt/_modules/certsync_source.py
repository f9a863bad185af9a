"""
Where a source's certificate pair is
====================================

The one place that knows how a certificate source lays out its pairs: the
publication on the source minion (``certsync.published``) and a deploy from a
local source (``certsync_deploy.deploy`` with ``source`` or ``live_dir``) both
ask ``locate``.
"""

import os

from salt.exceptions import SaltInvocationError

__virtualname__ = "certsync_source"


def __virtual__():
    if "certsync.find_source" not in __salt__:
        return (False, "certsync_source needs the certsync execution module")
    return __virtualname__


def locate(hostname, source=None, live_dir=None):
    """
    The pair to publish or deploy for ``hostname``: ``fullchain``,
    ``privkey`` and ``dir`` (where it was found). Give one of:

    source
        A directory holding ``fullchain.pem`` and ``privkey.pem``, such as
        NPM's ``live/npm-5`` (read through its symlinks; checked by whoever
        reads it).

    live_dir
        NPM's ``live/`` directory, searched for the certificate that covers
        ``hostname`` (``certsync.find_source``: the newest usable one wins).

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source.locate mail.example.com live_dir=/opt/npm/letsencrypt/live
    """
    if source and live_dir:
        raise SaltInvocationError("give either source or live_dir, not both")
    if source:
        return {
            "fullchain": os.path.join(source, "fullchain.pem"),
            "privkey": os.path.join(source, "privkey.pem"),
            "dir": source,
        }
    if live_dir:
        found = __salt__["certsync.find_source"](hostname, live_dir)
        return {key: found[key] for key in ("fullchain", "privkey", "dir")}
    raise SaltInvocationError("a source directory, a live_dir or a source_minion is required")
