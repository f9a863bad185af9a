"""
Mail DNS checks: TLSA (DANE)
============================

:depends: dnspython

Looks up the TLSA records of a mail service (``_25._tcp.<host>``) and tells
which certificates each record matches, so that a new key never goes live
before a TLSA record for it is published, and stale records can be removed.

The resolver is the system's, or the ``nameservers`` given (with ``dns_port``),
e.g. a validating resolver on the mail host. With ``dnssec=True`` the answer's
AD bit (authenticated data) is reported.
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import dns.exception
    import dns.flags
    import dns.resolver

    HAS_DNSPYTHON = True
except ImportError:
    HAS_DNSPYTHON = False

__virtualname__ = "maildns"

DEFAULT_TIMEOUT = 5


def __virtual__():
    if not HAS_DNSPYTHON:
        return (False, "the maildns module needs dnspython")
    return __virtualname__


def _resolver(nameservers, dns_port, timeout, dnssec):
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        if isinstance(nameservers, str):
            nameservers = [item.strip() for item in nameservers.split(",") if item.strip()]
        resolver.nameservers = list(nameservers)
    else:
        resolver = dns.resolver.Resolver()
    resolver.port = int(dns_port)
    resolver.lifetime = resolver.timeout = float(timeout)
    if dnssec:
        resolver.use_edns(0, dns.flags.DO, 1232)
        resolver.flags = dns.flags.RD | dns.flags.AD
    return resolver


def _tlsa_name(hostname, port, protocol):
    if not __salt__["certsync.is_dns_name"](hostname):
        raise SaltInvocationError(f"hostname {hostname!r} is not a valid DNS host name")
    if protocol not in ("tcp", "udp") or not 0 < int(port) < 65536:
        raise SaltInvocationError(f"no TLSA name for port {port!r}/{protocol!r}")
    return f"_{int(port)}._{protocol}.{hostname.lower()}"


def tlsa(
    hostname,
    port=25,
    protocol="tcp",
    nameservers=None,
    dns_port=53,
    timeout=DEFAULT_TIMEOUT,
    dnssec=False,
):
    """
    The TLSA records at ``_<port>._<protocol>.<hostname>``, each as
    ``"<usage> <selector> <mtype> <hex>"``, with the TTL and (``dnssec=True``)
    the AD bit. No record at all is an empty list; a lookup that fails
    (timeout, SERVFAIL) is an error, never an empty answer.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host maildns.tlsa mail.example.com
        salt mailcow-host maildns.tlsa mail.example.com nameservers=127.0.0.1 dns_port=5353
    """
    name = _tlsa_name(hostname, port, protocol)
    resolver = _resolver(nameservers, dns_port, timeout, dnssec)
    try:
        answer = resolver.resolve(name, "TLSA")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return {"name": name, "records": [], "ttl": None, "ad": None}
    except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.YXDOMAIN) as exc:
        raise CommandExecutionError(f"cannot look up TLSA {name}: {exc}") from None
    records = sorted(f"{rd.usage} {rd.selector} {rd.mtype} {rd.cert.hex()}" for rd in answer)
    ad = bool(answer.response.flags & dns.flags.AD) if dnssec else None
    return {"name": name, "records": records, "ttl": answer.rrset.ttl, "ad": ad}


def tlsa_check(
    hostname,
    certs,
    port=25,
    protocol="tcp",
    nameservers=None,
    dns_port=53,
    timeout=DEFAULT_TIMEOUT,
):
    """
    Match the published TLSA records against certificates.

    certs
        Mapping of a label (``deployed``, ``candidate``, ...) to a PEM file
        (leaf first). A missing or unreadable file matches nothing.

    Returns the records, for each the labels it matches, ``matching`` (per
    label: whether any record matches it) and ``stale`` (records that match
    none of the certificates: safe to remove once no certificate they
    matched is served).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host maildns.tlsa_check mail.example.com \\
            '{deployed: /opt/mailcow-dockerized/data/assets/ssl/cert.pem}'
    """
    if not isinstance(certs, dict) or not certs:
        raise SaltInvocationError("certs must map labels to certificate files")
    found = tlsa(hostname, port, protocol, nameservers, dns_port, timeout)
    table = []
    for record in found["records"]:
        usage, selector, mtype, _ = record.split(" ", 3)
        matches = [
            label
            for label, path in sorted(certs.items())
            if _record_for(path, usage, selector, mtype) == record
        ]
        table.append({"record": record, "matches": matches})
    return {
        "name": found["name"],
        "ttl": found["ttl"],
        "records": table,
        "matching": {label: any(label in row["matches"] for row in table) for label in certs},
        "stale": [row["record"] for row in table if not row["matches"]],
    }


def _record_for(path, usage, selector, mtype):
    try:
        return __salt__["certsync.tlsa"](path, int(usage), int(selector), int(mtype))
    except (CommandExecutionError, SaltInvocationError):
        return None
