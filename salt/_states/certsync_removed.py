"""
What certsync leaves on a host, removed: the formula's ``certsync.absent``
==========================================================================

:depends: the ``certsync`` and ``certsync_mine`` execution modules

Three states for what Salt's own (``beacon.absent``, ``schedule.absent``,
``file.absent``) do not cover: the mine entries on the master, certsync's own
files beside mailcow's pair, and the ``reuse_key`` line certsync wrote in
certbot's renewal file.

.. code-block:: yaml

    certsync-mine-entries-removed:
      certsync_removed.mine_entries:
        - consumers: [mailcow-host]

    certsync-leftovers-removed:
      certsync_removed.leftovers:
        - name: /opt/mailcow-dockerized/data/assets/ssl

    certsync-reuse-key-removed:
      certsync_removed.reuse_key:
        - name: /etc/nginx/letsencrypt/live/npm-5
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync_removed"


def __virtual__():
    if "certsync_mine.withdraw" not in __salt__:
        return (False, "certsync_removed needs the certsync modules: saltutil.sync_all")
    return __virtualname__


def _ret(name):
    return {"name": name, "result": False, "changes": {}, "comment": ""}


def mine_entries(name, consumers=None, routes=None):
    """
    This minion's certsync entries gone from the mine: its recipient key and
    its publication for each of ``consumers`` (a source's), of the default
    route and of each of ``routes``. The master keeps
    no record of which entries exist for another minion's eyes, so this
    always removes them (removing one that is not there is no error).

    .. code-block:: yaml

        certsync-mine-withdrawn:
          certsync_removed.mine_entries:
            - name: certsync
            - consumers: [mailcow-host]
    """
    ret = _ret(name)
    try:
        done = __salt__["certsync_mine.withdraw"](consumers, routes, test=__opts__["test"])
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = f"Mine entries not removed: {exc}"
        return ret
    entries = ", ".join(done["withdrawn"])
    if __opts__["test"]:
        ret.update(result=None, comment=f"Would remove the mine entries {entries}")
        return ret
    ret.update(result=True, comment=f"Removed the mine entries {entries} (where there were any)")
    return ret


def leftovers(name):
    """
    certsync's own files gone from ``name`` (mailcow's ``data/assets/ssl``)
    and its per-name directories: ``*.certsync-prev``, lock files, temp files
    (``certsync.leftovers``). The pairs mailcow serves and the ``domains``
    files stay.

    .. code-block:: yaml

        certsync-leftovers-removed:
          certsync_removed.leftovers:
            - name: /opt/mailcow-dockerized/data/assets/ssl
    """
    ret = _ret(name)
    try:
        found = __salt__["certsync.leftovers"](name, remove=not __opts__["test"])
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = f"Nothing removed: {exc}"
        return ret
    if not found:
        ret.update(result=True, comment=f"No certsync file in {name}")
        return ret
    ret["changes"] = {} if __opts__["test"] else {"removed": found}
    verb = "Would remove" if __opts__["test"] else "Removed"
    ret["result"] = None if __opts__["test"] else True
    ret["comment"] = f"{verb} {len(found)} certsync files in {name}: " + ", ".join(found)
    return ret


def reuse_key(name, hostname=None):
    """
    The ``reuse_key`` line certsync wrote in a lineage's renewal file gone
    (or the line it replaced back), the rest of certbot's file byte for byte
    (``certsync_source_npm.release_key``). ``name``: the lineage's live directory,
    or with ``hostname`` NPM's ``live/`` directory searched for the lineage
    that covers it.

    .. code-block:: yaml

        certsync-reuse-key-unset:
          certsync_removed.reuse_key:
            - name: /etc/nginx/letsencrypt/live
            - hostname: mail.example.com
    """
    ret = _ret(name)
    try:
        where = {"live_dir": name} if hostname else {"source": name}
        done = __salt__["certsync_source_npm.release_key"](hostname, test=__opts__["test"], **where)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = f"reuse_key not removed: {exc}"
        return ret
    if not done["changed"]:
        ret.update(result=True, comment=f"{done['renewal_file']}: {done['why']}")
        return ret
    if __opts__["test"]:
        ret.update(
            result=None, comment=f"Would remove certsync's reuse_key from {done['renewal_file']}"
        )
        return ret
    ret["changes"] = {"reuse_key": "removed", "file": done["renewal_file"]}
    ret.update(result=True, comment=f"Removed certsync's reuse_key from {done['renewal_file']}")
    return ret
