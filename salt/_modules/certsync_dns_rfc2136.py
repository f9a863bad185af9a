"""
DNS provider ``rfc2136``: TLSA records by dynamic update (RFC 2136, TSIG)
=========================================================================

:depends: dnspython

One of the providers behind ``certsync_dane`` (``dane:update:provider``):
single TLSA records added and deleted at ``_<port>._<protocol>.<hostname>``
by UPDATE messages signed with TSIG and sent to the zone's primary server.
The TSIG secret is read from this minion's own pillar, never an argument.

Every provider has the same functions: ``checked`` (its settings, checked),
``zone`` (the zone and the port its authoritative servers answer on),
``records`` (the TLSA records at a name) and ``change`` (add and delete
records, never replacing the set).
"""

import base64
import ipaddress

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.query
    import dns.rcode
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.tsig
    import dns.update

    HAS_DNSPYTHON = True
except ImportError:
    HAS_DNSPYTHON = False

__virtualname__ = "certsync_dns_rfc2136"

DEFAULT_TIMEOUT = 5
#: TSIG algorithms an update may be signed with (RFC 8945); hmac-sha256 by default.
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224")
#: The settings that are credentials: read from this minion's pillar only, never an
#: argument, never on another minion (``certsync_settings.check``).
CREDENTIAL_KEYS = ("tsig_secret",)
UPDATE_KEYS = {"provider", "server", "port", "zone", "tsig_name", "tsig_algorithm", "timeout"}


def __virtual__():
    if not HAS_DNSPYTHON:
        return (False, "certsync_dns_rfc2136 needs dnspython")
    return __virtualname__


def _tsig_secret():
    """The TSIG secret from this minion's own pillar (its ``dane:update:tsig_secret``
    under ``certsync:consumers:<id>``, else ``certsync:consumer_defaults``): never an
    argument, which Salt would keep in its job cache and print in its logs."""
    secret, where = __utils__["certsync_settings.consumer_setting"](
        __pillar__.get("certsync"), __opts__["id"], "dane", "update", "tsig_secret"
    )
    if not secret:
        raise SaltInvocationError(f"no TSIG secret in this minion's pillar at {where}")
    try:
        return base64.b64decode(str(secret), validate=True)
    except ValueError:
        raise SaltInvocationError(f"{where} is not base64 (the secret is not shown)") from None


def _settings(update):
    """Checked settings, with the TSIG key made from this minion's pillar; no message
    ever holds the secret."""
    if not isinstance(update, dict):
        raise SaltInvocationError(
            "update must be a mapping of server, port, zone, tsig_name, tsig_algorithm"
        )
    if "tsig_secret" in update:
        raise SaltInvocationError(
            "tsig_secret is not taken as an argument (Salt keeps arguments in its job "
            "cache and logs): set it in this minion's pillar, "
            f"certsync:consumers:{__opts__['id']}:dane:update:tsig_secret"
        )
    unknown = set(update) - UPDATE_KEYS
    if unknown:
        raise SaltInvocationError(f"unknown update settings: {', '.join(sorted(unknown))}")
    missing = [k for k in ("server", "zone", "tsig_name") if not update.get(k)]
    if missing:
        raise SaltInvocationError(f"update settings lack {', '.join(missing)}")
    try:
        server = str(ipaddress.ip_address(str(update["server"])))
    except ValueError:
        raise SaltInvocationError(
            f"update server {update['server']!r} must be an IP address"
        ) from None
    algorithm = str(update.get("tsig_algorithm") or "hmac-sha256").lower()
    if algorithm not in TSIG_ALGORITHMS:
        raise SaltInvocationError(
            f"tsig_algorithm {algorithm!r} is not one of {', '.join(TSIG_ALGORITHMS)}"
        )
    try:
        keyname = dns.name.from_text(str(update["tsig_name"]))
    except dns.exception.DNSException:
        raise SaltInvocationError(f"tsig_name {update['tsig_name']!r} is not a DNS name") from None
    zone = update["zone"]
    if not isinstance(zone, str) or not __utils__["certsync_pem.is_dns_name"](zone):
        raise SaltInvocationError(f"update zone {zone!r} is not a valid DNS name")
    return {
        "server": server,
        "port": __utils__["certsync_args.port"](update.get("port", 53), "update port"),
        "zone": dns.name.from_text(zone.rstrip(".").lower()),
        "key": dns.tsig.Key(keyname, _tsig_secret(), dns.name.from_text(algorithm)),
        "timeout": __utils__["certsync_args.seconds"](
            update.get("timeout", DEFAULT_TIMEOUT), "update timeout", 3600
        ),
    }


def credential_keys():
    """
    The ``dane:update`` settings of this provider that are credentials
    (tsig_secret): read from the consumer's own pillar only, and refused by
    ``certsync_settings.check`` in any other minion's pillar.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dns_rfc2136.credential_keys
    """
    return list(CREDENTIAL_KEYS)


def checked(update):
    """
    The ``dane:update`` settings of this provider, checked (an error names
    the bad one), as they are used: ``server``, ``port`` (53), ``zone``,
    ``tsig_name``, ``tsig_algorithm`` (hmac-sha256), ``timeout`` (5). The
    secret is read from this minion's pillar
    (``certsync:consumers:<id>:dane:update:tsig_secret``, or under
    ``consumer_defaults``) and never shown.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dns_rfc2136.checked \
            '{server: 192.0.2.53, zone: example.com, tsig_name: certsync}'
    """
    settings = _settings(update)
    return {
        "provider": "rfc2136",
        "server": settings["server"],
        "port": settings["port"],
        "zone": str(settings["zone"]).rstrip("."),
        "tsig_name": str(settings["key"].name).rstrip("."),
        "tsig_algorithm": str(settings["key"].algorithm).rstrip("."),
        "timeout": settings["timeout"],
    }


def zone(update):
    """
    The zone the records are in, and the port its authoritative servers
    answer on (the update port: the primary and its secondaries listen
    alike).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dns_rfc2136.zone '{server: 192.0.2.53, zone: example.com, ...}'
    """
    settings = checked(update)
    return {"zone": settings["zone"], "auth_port": settings["port"]}


def _owner(hostname, port, protocol, settings):
    name = dns.name.from_text(__utils__["certsync_pem.tlsa_name"](hostname, port, protocol))
    if not name.is_subdomain(settings["zone"]):
        raise SaltInvocationError(f"{name} is not in the zone {settings['zone']}")
    return name


def _tlsa_rdata(record):
    try:
        return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, str(record))
    except (dns.exception.DNSException, ValueError):
        raise SaltInvocationError(f"{str(record)[:80]!r} is not TLSA record data") from None


def _exchange(message, settings, what):
    """Send ``message`` to the primary over TCP; its answer, or an error naming why."""
    where = f"{settings['server']}:{settings['port']}"
    try:
        return dns.query.tcp(
            message, settings["server"], port=settings["port"], timeout=settings["timeout"]
        )
    except (dns.tsig.PeerError, dns.message.UnknownTSIGKey, dns.tsig.BadSignature) as exc:
        raise CommandExecutionError(
            f"{what} at {where} failed: the server did not accept TSIG key "
            f"{settings['key'].name} ({type(exc).__name__}: wrong name, secret or algorithm?)"
        ) from None
    except __utils__["certsync_dnswire.failures"]() as exc:
        why = __utils__["certsync_dnswire.failure"](exc)
        raise CommandExecutionError(f"{what} at {where} failed: {why}") from None


def records(hostname, update, port=25, protocol="tcp"):
    """
    The TLSA records the primary server holds at
    ``_<port>._<protocol>.<hostname>``, as ``"usage selector mtype hex"``,
    asked directly (no cache between).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dns_rfc2136.records mail.example.com \
            '{server: 192.0.2.53, zone: example.com, tsig_name: certsync}'
    """
    settings = _settings(update)
    name = _owner(hostname, port, protocol, settings)
    query = dns.message.make_query(name, dns.rdatatype.TLSA)
    query.flags &= ~dns.flags.RD
    response = _exchange(query, settings, f"the lookup of {name}")
    rrset = response.get_rrset(response.answer, name, dns.rdataclass.IN, dns.rdatatype.TLSA)
    return sorted(f"{rd.usage} {rd.selector} {rd.mtype} {rd.cert.hex()}" for rd in (rrset or []))


def change(
    hostname, update, add=None, delete=None, port=25, protocol="tcp", ttl=None, max_wait=None
):
    """
    Add and delete single TLSA records at ``_<port>._<protocol>.<hostname>``
    with one UPDATE signed with TSIG. The RRset is never replaced: records
    not named stay as they are. An update the server refuses is an error
    naming the reason (the secret is never shown).

    add / delete
        Lists of record data, e.g. ``["3 1 1 <hex>"]``.

    ttl
        The TTL of the RRset now published, which added records take (one
        RRset has one TTL). Default: 300.

    max_wait
        Not used: an UPDATE is one exchange, bounded by ``timeout``.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dns_rfc2136.change mail.example.com \
            '{server: 192.0.2.53, zone: example.com, tsig_name: certsync}' \
            add='["3 1 1 0123..."]'
    """
    del max_wait  # one exchange, bounded by the timeout setting
    settings = _settings(update)
    name = _owner(hostname, port, protocol, settings)
    strings = __utils__["certsync_args.strings"]
    add, delete = strings(add, "add", "TLSA records"), strings(delete, "delete", "TLSA records")
    if not add and not delete:
        raise SaltInvocationError("nothing to add or delete")
    ttl = __utils__["certsync_args.seconds"](300 if ttl is None else ttl, "ttl", 86400)
    message = dns.update.UpdateMessage(settings["zone"], keyring=settings["key"])
    for record in add:
        message.add(name, ttl, _tlsa_rdata(record))
    for record in delete:
        message.delete(name, _tlsa_rdata(record))
    where = f"{settings['server']}:{settings['port']}"
    response = _exchange(message, settings, f"the update of {name}")
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        raise CommandExecutionError(
            f"the update of {name} at {where} was refused: {dns.rcode.to_text(rcode)}"
            + (
                " (TSIG key not accepted?)"
                if rcode in (dns.rcode.NOTAUTH, dns.rcode.REFUSED)
                else ""
            )
        )
    return {"name": str(name).rstrip("."), "server": where, "added": add, "deleted": delete}
