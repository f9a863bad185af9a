"""
Fleet view of certsync, from the master
=======================================

Reads the routes from the master's ``certsync_routes`` ({source id:
[consumer ids]}) and asks every minion for its part (``certsync.status``).
"""

import salt.cache
import salt.client
import salt.utils.mine

__virtualname__ = "certsync"

#: Mine entry a source publishes for one consumer (certsync module's cert_mine_name).
CERT_MINE_PREFIX = "certsync_cert_"


def __virtual__():
    return __virtualname__


def _mine_fingerprint(cache, source, consumer):
    """The fingerprint of the entry a source published for a consumer.

    Read from the master's own mine cache: mine.get from a runner is refused
    by the entry's ACL (only the consumer may read it). Nothing but the
    fingerprint leaves this function.
    """
    entry = (cache.fetch("mine", source) or {}).get(CERT_MINE_PREFIX + consumer)
    if isinstance(entry, dict) and salt.utils.mine.MINE_ITEM_ACL_ID in entry:
        entry = entry.get(salt.utils.mine.MINE_ITEM_ACL_DATA)
    return entry.get("fingerprint") if isinstance(entry, dict) else None


def status(timeout=60):
    """
    Show, per consumer: the source's fingerprint, the fingerprint in the mine
    entry for it, the deployed fingerprint, what every endpoint serves, the
    days left and, with DANE on, the TLSA records (``stale`` ones can be
    removed). ``result`` is False (and ``salt-run`` exits 1) when they do
    not all agree, no TLSA record matches the deployed certificate, or a
    minion did not answer.

    CLI Example:

    .. code-block:: bash

        salt-run certsync.status
    """
    routes = __opts__.get("certsync_routes") or {}
    if not routes:
        return {"result": False, "retcode": 1, "comment": "certsync_routes is not set"}
    minions = sorted(set(routes) | {c for consumers in routes.values() for c in consumers})
    client = salt.client.get_local_client(__opts__["conf_file"])
    views = client.cmd(minions, "certsync.status", tgt_type="list", timeout=int(timeout))
    cache = salt.cache.factory(__opts__)
    consumers_report, ok = {}, True
    for source, consumers in sorted(routes.items()):
        src = views.get(source)
        source_fp = src.get("fingerprint") if isinstance(src, dict) else None
        for consumer in consumers:
            view = views.get(consumer)
            view = view if isinstance(view, dict) else {}
            row = {
                "source": source,
                "source_fingerprint": source_fp,
                "mine_fingerprint": _mine_fingerprint(cache, source, consumer),
                "deployed_fingerprint": view.get("deployed"),
                "served": view.get("served", {}),
                "days_left": view.get("days_left"),
            }
            wanted = {source_fp}
            seen = {row["mine_fingerprint"], row["deployed_fingerprint"], *row["served"].values()}
            row["agree"] = source_fp is not None and seen == wanted
            if view.get("tlsa"):
                row["tlsa"] = view["tlsa"]
                row["agree"] = row["agree"] and view["tlsa"].get("deployed_matches") is True
            if not view:
                row["error"] = f"{consumer} did not answer: {views.get(consumer)!r}"
            ok = ok and row["agree"]
            consumers_report[consumer] = row
    return {"result": ok, "retcode": 0 if ok else 1, "consumers": consumers_report}
