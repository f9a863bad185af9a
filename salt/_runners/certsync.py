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
    removed); per source: its certificate and how certbot renews it
    (``renewal``: is the key kept?). ``result`` is False (and ``salt-run``
    exits 1) when they do not all agree, no TLSA record matches the deployed
    certificate, mail is not leaving through a consumer's relay or its way out
    is blocked (``relay``), a source's next renewal would change a key that a published
    TLSA record pins, or a minion did not answer.

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
    consumers_report, sources_report, ok = {}, {}, True
    for source, consumers in sorted(routes.items()):
        src = views.get(source)
        src = src if isinstance(src, dict) else {}
        source_fp = src.get("fingerprint")
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
                "uncovered": view.get("uncovered", {}),
                "missing_names": view.get("missing_names", []),
            }
            wanted = {source_fp}
            seen = {row["mine_fingerprint"], row["deployed_fingerprint"], *row["served"].values()}
            row["agree"] = source_fp is not None and seen == wanted
            if view.get("tlsa"):
                row["tlsa"] = view["tlsa"]
                row["agree"] = row["agree"] and view["tlsa"].get("deployed_matches") is True
            if view.get("relay"):
                row["relay"] = view["relay"]
                row["agree"] = row["agree"] and view["relay"].get("ok") is True
            if not view:
                row["error"] = f"{consumer} did not answer: {views.get(consumer)!r}"
            ok = ok and row["agree"]
            consumers_report[consumer] = row
        pinned = [c for c in consumers if _pins_source_key(consumers_report[c], source_fp)]
        sources_report[source] = _source_row(src, pinned)
        ok = ok and sources_report[source]["result"]
    return {
        "result": ok,
        "retcode": 0 if ok else 1,
        "sources": sources_report,
        "consumers": consumers_report,
    }


def _pins_source_key(row, source_fp):
    """Whether a consumer serving the source's certificate has a TLSA record pinning its key
    (usage 1 or 3, selector 1: the SubjectPublicKeyInfo)."""
    if row.get("deployed_fingerprint") != source_fp or not row.get("tlsa"):
        return False
    records = row["tlsa"].get("matching_records") or []
    return any(str(record).split()[:2] in (["3", "1"], ["1", "1"]) for record in records)


def _source_row(view, pinned):
    """The source's certificate and renewal; False when its next renewal breaks a pinned key."""
    renewal = view.get("renewal") or {}
    row = {
        "fingerprint": view.get("fingerprint"),
        "days_left": view.get("days_left"),
        "renewal": renewal,
        "tlsa_pinned_by": pinned,
        "result": bool(view),
    }
    if not view:
        row["error"] = "the source did not answer"
    elif pinned and renewal.get("next_renewal_keeps_key") is not True:
        row["result"] = False
        row["error"] = (
            "the next renewal makes a new key, and a published TLSA record for "
            f"{', '.join(pinned)} pins the current one: apply certsync.key_reused "
            "(pillar certsync:source:reuse_key) or roll the TLSA record over"
        )
    return row
