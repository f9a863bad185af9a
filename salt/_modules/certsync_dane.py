"""
DANE: the TLSA rollover that lets a new key go live
===================================================

:depends: dnspython; the ``maildns`` execution module (TLSA lookups, the
    zone's name servers)

The DANE gate of ``certsync_deploy.deploy`` and what it drives: a new key
goes live only once a ``TLSA 3 1 1`` record for it is published and visible
(``tlsa_gate``), through a DNS provider (``tlsa_update``: RFC 2136 updates
signed with TSIG, or Cloudflare's API; each provider is a module
``certsync_dns_<provider>``, its credential read from this minion's own
pillar, never an argument), each authoritative server asked directly
(``tlsa_servers``), the TTL waited out, and the old record removed once the
new pair is served (``tlsa_retire``).
What it has done is kept in the cachedir, so a rollover interrupted at any
step resumes at the next run.
"""

import contextlib
import hashlib
import math
import os
import re
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import dns.flags
    import dns.message
    import dns.name
    import dns.query
    import dns.rcode
    import dns.rdataclass
    import dns.rdatatype

    HAS_DNSPYTHON = True
except ImportError:
    HAS_DNSPYTHON = False

__virtualname__ = "certsync_dane"

DEFAULT_TIMEOUT = 5


def __virtual__():
    if not HAS_DNSPYTHON:
        return (False, "certsync_dane needs dnspython")
    if "maildns.tlsa_check" not in __salt__:
        return (False, "certsync_dane needs the maildns execution module")
    return __virtualname__


def _tlsa_name(hostname, port, protocol):
    return __utils__["certsync_pem.tlsa_name"](hostname, port, protocol)


#: A DNS provider a rollover publishes through (``dane:update:provider``) is an
#: execution module ``certsync_dns_<provider>`` with the same functions: ``checked``,
#: ``zone``, ``records``, ``change`` and ``credential_keys``; a new one is one new
#: module (``certsync_registry`` finds it). The provider where none is named:
DEFAULT_PROVIDER = "rfc2136"
_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,39}")


def _seconds(value, what, maximum=3600):
    return __utils__["certsync_args.seconds"](value, what, maximum)


def _provider(update):
    """The loaded module name of ``update``'s provider; an error names a bad one."""
    if not isinstance(update, dict):
        raise SaltInvocationError(
            "update must be a mapping (provider, zone, and the provider's settings)"
        )
    provider = update.get("provider", DEFAULT_PROVIDER)
    module = f"certsync_dns_{provider}"
    if not isinstance(provider, str) or not _PROVIDER_NAME.fullmatch(provider):
        raise SaltInvocationError(f"update provider {repr(provider)[:60]} is no provider name")
    if f"{module}.change" not in __salt__:
        loaded = __utils__["certsync_registry.loaded"](
            __opts__, __salt__, "certsync_dns_", "change"
        )
        missing = getattr(__salt__, "missing_fun_string", None)
        why = missing(f"{module}.change") if missing else f"{module} is not loaded"
        raise SaltInvocationError(
            f"update provider {provider!r} is not available here ({why}); the providers: "
            f"{', '.join(loaded) or 'none'}"
        )
    return module


def _provider_call(update, function, *args, **kwargs):
    return __salt__[f"{_provider(update)}.{function}"](*args, **kwargs)


def tlsa_update(
    hostname, update, add=None, delete=None, port=25, protocol="tcp", ttl=300, max_wait=60
):
    """
    Add and delete single TLSA records at ``_<port>._<protocol>.<hostname>``
    through the DNS provider of ``update`` (``provider``: ``rfc2136``, the
    default, or ``cloudflare``). The RRset is never replaced: records not
    named stay as they are. A refused change is an error naming the reason;
    no credential is ever an argument or shown.

    update
        rfc2136: ``{server, port (53), zone, tsig_name, tsig_algorithm
        (hmac-sha256), timeout}``, the TSIG secret read from this minion's
        pillar at ``certsync:consumers:<id>:dane:update:tsig_secret`` (or
        ``certsync:consumer_defaults:dane:update:tsig_secret``); see
        ``certsync_dns_rfc2136.checked``.
        cloudflare: ``{provider: cloudflare, zone or zone_id, ttl (1),
        ...}``, the API token read from the pillar's ``api_token`` beside
        it; see ``certsync_dns_cloudflare.checked``.

    add / delete
        Lists of record data, e.g. ``["3 1 1 <hex>"]``.

    ttl
        rfc2136: the TTL of added records (the RRset's, for one RRset has
        one TTL). cloudflare: its ``ttl`` setting is used.

    max_wait
        cloudflare: seconds a rate-limited call may wait (Retry-After).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dane.tlsa_update mail.example.com \
            '{server: 192.0.2.53, zone: example.com, tsig_name: certsync}' \
            add='["3 1 1 0123..."]'
    """
    return _provider_call(
        update,
        "change",
        hostname,
        update,
        add=add,
        delete=delete,
        port=port,
        protocol=protocol,
        ttl=ttl,
        max_wait=max_wait,
    )


def tlsa_servers(
    hostname,
    zone,
    port=25,
    protocol="tcp",
    nameservers=None,
    dns_port=53,
    auth_port=53,
    timeout=DEFAULT_TIMEOUT,
):
    """
    What every authoritative server of ``zone`` (its NS records, each
    address) serves at ``_<port>._<protocol>.<hostname>``, asked directly
    (no recursion): the records and their TTL, or the error. A rollover may
    go on only when every server serves the new record.

    auth_port
        The port the authoritative servers answer on. Default: 53.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dane.tlsa_servers mail.example.com example.com
    """
    auth_port = __utils__["certsync_args.port"](auth_port, "auth_port")
    timeout = _seconds(timeout, "timeout")
    servers = __salt__["maildns.zone_servers"](zone, nameservers, dns_port, timeout)
    return _ask_each(_tlsa_name(hostname, port, protocol), servers, auth_port, timeout)


def _ask_each(tlsa_name, servers, auth_port, timeout=DEFAULT_TIMEOUT):
    """What each of ``servers`` ((ns, address) pairs, the zone's NS set) serves at
    ``tlsa_name``: :py:func:`tlsa_servers` for a zone whose NS set is known."""
    name = dns.name.from_text(tlsa_name)
    return {
        f"{ns}/{address}": _ask_authoritative(name, address, auth_port, timeout)
        for ns, address in servers
    }


def _ask_authoritative(name, address, port, timeout):
    query = dns.message.make_query(name, dns.rdatatype.TLSA)
    query.flags &= ~dns.flags.RD
    try:
        response, _ = dns.query.udp_with_fallback(query, address, port=port, timeout=timeout)
    except __utils__["certsync_dnswire.failures"]() as exc:
        why = __utils__["certsync_dnswire.failure"](exc)
        return {"error": f"no answer from {address}:{port}: {why}"}
    if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return {"error": f"{address}:{port} answered {dns.rcode.to_text(response.rcode())}"}
    if not response.flags & dns.flags.AA:
        return {"error": f"{address}:{port} is not authoritative for {name}"}
    rrset = response.get_rrset(response.answer, name, dns.rdataclass.IN, dns.rdatatype.TLSA)
    records = sorted(f"{rd.usage} {rd.selector} {rd.mtype} {rd.cert.hex()}" for rd in (rrset or []))
    return {"records": records, "ttl": rrset.ttl if rrset else None}


#: Seconds a deploy may wait in one run for the new TLSA record to be safe.
DEFAULT_MAX_WAIT = 900
DANE_KEYS = {"port", "nameservers", "dns_port", "update", "max_wait"}


def _dane_options(dane):
    """The ``dane`` settings of certsync.deployed, checked, with their defaults."""
    if dane is True:
        dane = {}
    if not isinstance(dane, dict):
        raise SaltInvocationError("dane must be true or a mapping (port, nameservers, ...)")
    unknown = set(dane) - DANE_KEYS
    if unknown:
        raise SaltInvocationError(f"unknown dane settings: {', '.join(sorted(unknown))}")
    options = {
        "port": __utils__["certsync_args.port"](dane.get("port", 25), "dane port"),
        "nameservers": dane.get("nameservers") or None,
        "dns_port": __utils__["certsync_args.port"](dane.get("dns_port", 53), "dane dns_port"),
        "update": dane.get("update") or None,
        "max_wait": dane.get("max_wait", DEFAULT_MAX_WAIT),
    }
    try:
        options["max_wait"] = float(options["max_wait"])
    except (TypeError, ValueError):
        raise SaltInvocationError(f"dane max_wait {options['max_wait']!r} is not seconds") from None
    if not 0 <= options["max_wait"] <= 86400:
        raise SaltInvocationError("dane max_wait must be between 0 and 86400 seconds")
    if options["update"] is not None:
        options["update"] = _with_own_update(options["update"])
        _provider_call(options["update"], "checked", options["update"])
    return options


def _with_own_update(update):
    """``update`` over this minion's own ``dane:update`` pillar settings of the same
    provider, its credentials left out (the provider reads those itself): a deploy
    job carries only the provider's name, and its settings come from here."""
    if not isinstance(update, dict):
        return update
    own, _ = __utils__["certsync_settings.consumer_setting"](
        __pillar__.get("certsync"), __opts__["id"], "dane", "update"
    )
    provider = update.get("provider", "rfc2136")
    if not isinstance(own, dict) or own.get("provider", "rfc2136") != provider:
        return update
    secrets = set(_provider_call(update, "credential_keys"))
    is_credential = __utils__["certsync_settings.is_credential"]
    base = {k: v for k, v in own.items() if k not in secrets and not is_credential(k)}
    return {**base, **update}


def _lookup_args(options):
    return {k: options[k] for k in ("port", "nameservers", "dns_port")}


def dane_lookup(dane=True):
    """
    Where the TLSA records of a ``dane`` setting (as certsync.deployed takes
    it: ``True`` or a mapping) are looked up, checked and with their
    defaults: ``port`` (25), ``nameservers`` (None: the system's resolver)
    and ``dns_port`` (53). A bad or unknown setting is an error naming it.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dane.dane_lookup '{nameservers: [127.0.0.1], dns_port: 5353}'
    """
    return _lookup_args(_dane_options(dane))


def _rollover_path(hostname, port):
    digest = hashlib.sha256(f"{hostname.lower()}/{port}".encode()).hexdigest()[:16]
    return os.path.join(__opts__["cachedir"], "certsync", f"tlsa-rollover-{digest}.json")


def _load_rollover(path):
    return __utils__["certsync_files.read_json_record"](path) or {}


def _save_rollover(path, record):
    __utils__["certsync_files.write_json_record"](path, record)


def _utc(epoch):
    return __utils__["certsync_pem.iso"](epoch)


def tlsa_gate(hostname, candidate, deployed, dane=True, test=False):
    """
    May ``candidate`` (a new certificate) go live on a DANE host? The DANE
    gate of ``certsync.deployed``: ``ready`` is True when a published
    ``TLSA`` record at ``_<port>._tcp.<hostname>`` matches it and resolvers
    can no longer hold an answer without it.

    Without ``dane.update`` (records published by hand): ready once every
    authoritative server of the zone (its NS set, asked on ``dns_port``)
    has served a matching record for its TTL, the time it was first served
    by all kept in the cachedir; until then ``publish`` is the exact record
    and ``comment`` the rollover steps, or how long is left.

    With ``dane.update`` (a DNS provider, see :py:func:`tlsa_update`): the record
    is added beside the old one (never replacing the set), then ready once
    every authoritative server of the zone serves it and its RRset's TTL has
    passed since (waiting up to ``dane.max_wait`` seconds in this call, else
    a later call goes on where this one stopped). The old records are
    removed by :py:func:`tlsa_retire` once the new certificate is served.

    candidate / deployed
        PEM files: the new certificate, and the one deployed now.

    dane
        ``True`` or ``{port (25), nameservers, dns_port (53), update,
        max_wait (900)}``.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dane.tlsa_gate mail.example.com /tmp/fullchain.pem \
            /opt/mailcow-dockerized/data/assets/ssl/cert.pem
    """
    options = _dane_options(dane)
    check = __salt__["maildns.tlsa_check"](
        hostname, {"candidate": candidate, "deployed": deployed}, **_lookup_args(options)
    )
    wanted = __salt__["certsync.tlsa"](candidate)
    ret = {"name": check["name"], "record": wanted, "ready": False, "added": None, "steps": []}
    old = [row["record"] for row in check["records"] if "deployed" in row["matches"]]
    if wanted in old:
        ret["ready"] = True  # the same key: the record in place matches both
        return ret
    if options["update"] is None:
        if not check["matching"]["candidate"]:
            ret["publish"] = f"{check['name']}. IN TLSA {wanted}"
            ret["comment"] = _manual_steps(check, wanted, old)
            return ret
        return _manual_ttl(hostname, options, check, ret, test)
    return _rollover(hostname, options, check, ret, old, test)


def _zone_servers(zone, options):
    return __salt__["maildns.zone_servers"](zone, options["nameservers"], options["dns_port"])


def _servers_of(hostname, options):
    """The NS set ((ns, address) pairs) of the zone holding ``hostname``: the nearest
    parent with NS records, through the configured resolver."""
    labels = hostname.rstrip(".").split(".")
    why = "no parent with NS records"
    for start in range(1, len(labels) - 1):
        try:
            return _zone_servers(".".join(labels[start:]), options)
        except CommandExecutionError as exc:
            why = str(exc)
    raise CommandExecutionError(f"DANE: cannot find the zone of {hostname}: {why}")


def _manual_ttl(hostname, options, check, ret, test):
    """A record published by hand: ready once every authoritative server of the zone
    has served it for its RRset's TTL (resolvers may hold the old RRset until then:
    RFC 7671 8.1). The time all first served it is kept in the cachedir, so each run
    says how long is left."""
    path = _rollover_path(hostname, options["port"])
    wanted = ret["record"]
    tlsa_name = _tlsa_name(hostname, options["port"], "tcp")
    servers = _ask_each(tlsa_name, _servers_of(hostname, options), options["dns_port"])
    lacking = sorted(n for n, r in servers.items() if wanted not in r.get("records", []))
    record = _load_rollover(path)
    now = time.time()
    if lacking:  # the clock starts once all serve it
        ret["publish"] = f"{check['name']}. IN TLSA {wanted}"
        ret["comment"] = (
            f"DANE: {check['name']}. IN TLSA {wanted} is published but not yet served by "
            f"{', '.join(lacking)}: a later run deploys once every authoritative server "
            "serves it and its TTL passed (the schedule runs one)."
        )
        return ret
    seen = record.get("visible")
    if record.get("new") != wanted or not record.get("manual") or not isinstance(seen, float):
        record, seen = {"new": wanted, "manual": True, "visible": now}, now
        if not test:
            _save_rollover(path, record)
    ttl = max((r.get("ttl") or 0 for r in servers.values()), default=0)
    left = seen + ttl - now
    if left <= 0:
        ret["ready"] = True
        ret["steps"].append(
            f"every authoritative server ({len(servers)}) has served {check['name']}. IN TLSA "
            f"{wanted} since {_utc(seen)}: its TTL ({ttl} s) passed"
        )
        if not test:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return ret
    ret["publish"] = f"{check['name']}. IN TLSA {wanted}"
    ret["comment"] = (
        f"DANE: {check['name']}. IN TLSA {wanted} is served by every authoritative server "
        f"since {_utc(seen)}, but resolvers may still hold the RRset without it until its "
        f"TTL ({ttl} s) passes: {math.ceil(left)} s left, at {_utc(seen + ttl)}. A later run "
        "deploys the certificate (the schedule runs one)."
    )
    return ret


def _manual_steps(check, wanted, old):
    published = "; ".join(row["record"] for row in check["records"]) or "none"
    ttl = f"{check['ttl']} s" if check["ttl"] else "its TTL"
    return "\n".join(
        [
            f"DANE: no TLSA record at {check['name']} matches the new certificate, so it is "
            f"not deployed (published: {published}). Roll over with no moment without a "
            "matching record:",
            f"  1. publish beside the current record: {check['name']}. IN TLSA {wanted}",
            f"  2. wait the TTL ({ttl}) so that resolvers have both records",
            "  3. run this state again (the schedule does): it deploys once the record is there",
            "  4. then remove the old record: "
            + ("; ".join(old) or "none matches the deployed pair"),
        ]
    )


def _rollover(hostname, options, check, ret, old, test):
    """Publish the new record through the provider and wait until it is safe to deploy."""
    path = _rollover_path(hostname, options["port"])
    record = _load_rollover(path)
    wanted = ret["record"]
    if record.get("new") != wanted:
        record = {"new": wanted, "old": old, "visible": None}
    published = [row["record"] for row in check["records"]]
    if wanted not in published:
        if test:
            provider = options["update"].get("provider", "rfc2136")
            ret["comment"] = (
                f"DANE: would publish {check['name']}. IN TLSA {wanted} beside "
                f"{'; '.join(old) or 'nothing'} through {provider}, wait until every "
                "authoritative server serves it and the TTL passed, deploy, then remove the "
                "old record"
            )
            return ret
        tlsa_update(
            hostname,
            options["update"],
            add=[wanted],
            port=options["port"],
            ttl=check["ttl"] or 300,
            max_wait=options["max_wait"],
        )
        ret["added"] = wanted
        ret["steps"].append(f"published {check['name']}. IN TLSA {wanted} beside the old record")
    if not test:
        _save_rollover(path, record)
    return _wait_visible(hostname, options, record, path, ret, test)


def _wait_visible(hostname, options, record, path, ret, test):
    """Until every authoritative server serves the record and the TTL passed (bounded)."""
    where = _provider_call(options["update"], "zone", options["update"])
    deadline = time.time() + (0 if test else options["max_wait"])
    tlsa_name = _tlsa_name(hostname, options["port"], "tcp")
    ns_set = _zone_servers(where["zone"], options)  # once: each round asks its servers
    for _ in range(int(options["max_wait"] / 0.5) + 3):
        servers = _ask_each(tlsa_name, ns_set, where["auth_port"])
        lacking = sorted(n for n, r in servers.items() if record["new"] not in r.get("records", []))
        now = time.time()
        if lacking:
            pause, why = 0.5, f"not yet served by {', '.join(lacking)}"
        else:
            if record["visible"] is None:
                record["visible"] = now
                if not test:
                    _save_rollover(path, record)
            ttl = max(r["ttl"] or 0 for r in servers.values())
            ready_at = record["visible"] + ttl
            if now >= ready_at:
                ret["ready"] = True
                ret["steps"].append(
                    f"every authoritative server ({len(servers)}) serves it and its TTL "
                    f"({ttl} s) passed"
                )
                return ret
            pause, why = (
                ready_at - now,
                f"the TTL ({ttl} s) passes at {_utc(ready_at)}",
            )
        if now + pause > deadline:
            ret["comment"] = (
                f"DANE rollover under way: {ret['name']}. IN TLSA {record['new']} is published "
                f"beside the old record; {why}. A later run deploys the certificate (the "
                "schedule runs one) and then removes the old record."
            )
            return ret
        time.sleep(pause)
    ret["comment"] = (
        f"DANE rollover: gave up waiting for {ret['name']} after {options['max_wait']} s"
    )
    return ret


def tlsa_retire(hostname, deployed, dane, test=False):
    """
    The last step of a rollover begun by :py:func:`tlsa_gate`:
    once the certificate in ``deployed`` is the one the rollover published a
    record for (and the caller verified it is served), delete only the old
    records that rollover recorded. Nothing else is touched; without a
    rollover in progress nothing happens. Returns ``removed``.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dane.tlsa_retire mail.example.com \
            /opt/mailcow-dockerized/data/assets/ssl/cert.pem '{update: {...}}'
    """
    options = _dane_options(dane)
    path = _rollover_path(hostname, options["port"])
    record = _load_rollover(path)
    ret = {"removed": [], "pending": False}
    if options["update"] is None or not record.get("new"):
        return ret
    if __salt__["certsync.tlsa"](deployed) != record["new"]:
        return ret  # the rollover's certificate is not (yet) the deployed one
    retire = [r for r in record.get("old") or [] if r != record["new"]]
    if retire and test:
        ret["pending"] = True
        ret["removed"] = retire
        return ret
    if retire:
        tlsa_update(
            hostname,
            options["update"],
            delete=retire,
            port=options["port"],
            max_wait=options["max_wait"],
        )
        ret["removed"] = retire
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return ret
