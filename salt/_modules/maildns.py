"""
Mail DNS checks: the records a mail domain needs, and TLSA (DANE)
=================================================================

:depends: dnspython, cryptography

``audit`` checks the DNS of a mail domain against what you expect (pillar
``certsync:dns`` in the formula) and returns one row per record: the record,
what was expected, what was found, ``pass`` or ``fail``, and why:

- MX; A/AAAA of the mail host; PTR of each address, forward-confirmed;
- SPF: one ``v=spf1`` record, its ``all``, the RFC 7208 limits of 10 DNS
  lookups and 2 void lookups (counted through ``include`` and ``redirect``);
- DKIM: each selector's key parses and is usable, also when the selector is
  delegated by CNAME (e.g. to a relay);
- DMARC: the tags, the policy, alignment modes, report addresses (and the
  authorisation of external ones); ``p=quarantine``/``reject`` when no
  aligned pass is possible is a failure;
- ``autoconfig``/``autodiscover`` CNAMEs, the ``_autodiscover._tcp`` SRV, a
  relay's return-path CNAME;
- TLSA at ``_<port>._tcp.<host>``: each record matched against the deployed,
  the served and a candidate certificate; records that match none are stale.

``tlsa`` and ``tlsa_check`` look up and match TLSA records alone, for the
DANE gate (``certsync_dane``: a new key never goes live before a record for
it is published); ``zone_servers`` names a zone's authoritative servers.

The resolver is the system's, or the ``nameservers`` given (with ``dns_port``),
e.g. a validating resolver on the mail host. With ``dnssec=True`` the answer's
AD bit (authenticated data) is reported.
"""

import base64
import contextlib
import http.client
import io
import ipaddress
import os
import re
import socket
import ssl
import tempfile
import time

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
    import dns.resolver
    import dns.reversename
    import dns.tsig
    import dns.tsigkeyring
    import dns.update

    HAS_DNSPYTHON = True
except ImportError:
    HAS_DNSPYTHON = False

try:
    from publicsuffixlist import PublicSuffixList

    HAS_PSL = True
except ImportError:
    HAS_PSL = False

try:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    HAS_CRYPTOGRAPHY = True
except ImportError:
    HAS_CRYPTOGRAPHY = False

__virtualname__ = "maildns"

DEFAULT_TIMEOUT = 5
#: The longest a single lookup or fetch may be given.
MAX_TIMEOUT = 60


def __virtual__():
    if not HAS_DNSPYTHON or not HAS_CRYPTOGRAPHY:
        return (False, "the maildns module needs dnspython and cryptography")
    for needed in ("certsync_settings.consumer_setting", "certsync_endpoints.by_port"):
        if needed not in __utils__:
            util = needed.split(".")[0]
            return (False, f"maildns needs salt://_utils/{util}.py: saltutil.sync_all")
    return __virtualname__


def _resolver(nameservers, dns_port, timeout, dnssec):
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = _as_list(nameservers, "nameservers")
    else:
        resolver = dns.resolver.Resolver()
    resolver.port = __utils__["certsync_args.port"](dns_port, "dns_port")
    resolver.lifetime = resolver.timeout = _seconds(timeout, "timeout", MAX_TIMEOUT)
    if dnssec:
        resolver.use_edns(0, dns.flags.DO, 1232)
        resolver.flags = dns.flags.RD | dns.flags.AD
    return resolver


class _Bogus(CommandExecutionError):
    """The answer exists but does not validate (DNSSEC bogus)."""


def _validates_only_unchecked(resolver, name):
    """True when the validating resolver answers ``name`` with checking disabled (CD)
    though it failed with checking on: the data is there, its signatures are bogus."""
    resolver.flags = (resolver.flags or dns.flags.RD) | dns.flags.CD
    try:
        resolver.resolve(name, "TLSA")
    except dns.exception.DNSException:
        return False
    return True


def _tlsa_name(hostname, port, protocol):
    return __utils__["certsync_pem.tlsa_name"](hostname, port, protocol)


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
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
        if dnssec and _validates_only_unchecked(resolver, name):
            raise _Bogus(
                f"the TLSA records at {name} fail DNSSEC validation (bogus: a broken or "
                "expired signature): DANE senders will not deliver"
            ) from None
        raise _LookupFailed(f"cannot look up TLSA {name}: {_failure_reason(exc)}") from None
    except dns.resolver.YXDOMAIN as exc:
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
    dnssec=False,
):
    """
    Match the published TLSA records against certificates.

    certs
        Mapping of a label (``deployed``, ``candidate``, ...) to a PEM file
        (leaf first). A missing or unreadable file matches nothing.

    Returns the records, for each the labels it matches, ``ad`` (with
    ``dnssec=True``: the resolver validated the answer), ``matching`` (per
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
    found = tlsa(hostname, port, protocol, nameservers, dns_port, timeout, dnssec)
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
        "ad": found["ad"],
        "records": table,
        "matching": {label: any(label in row["matches"] for row in table) for label in certs},
        "stale": [row["record"] for row in table if not row["matches"]],
    }


def _record_for(path, usage, selector, mtype):
    try:
        return __salt__["certsync.tlsa"](path, int(usage), int(selector), int(mtype))
    except (CommandExecutionError, SaltInvocationError):
        return None


# ---------------------------------------------------------------- the audit

#: RFC 7208 4.6.4: DNS-querying terms per SPF evaluation, and void lookups.
SPF_LOOKUP_LIMIT = 10
SPF_VOID_LIMIT = 2
SPF_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
SPF_LOOKUP_TERMS = ("include", "a", "mx", "ptr", "exists", "redirect")
MAX_CNAME_HOPS = 8
DMARC_POLICIES = ("none", "quarantine", "reject")
#: RFC 8301: verifiers must not accept RSA keys under 1024 bits.
DKIM_RSA_MIN_BITS = 1024
_TAG = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", re.S)


def _row(record, expected, found, ok, why=""):
    """One audit row; what was found (and why it fails) is the zone's text, escaped."""
    printable = __utils__["certsync_util.printable"]
    return {
        "record": record,
        "expected": expected,
        "found": printable(found),
        "result": "pass" if ok else "fail",
        "why": printable(why),
    }


class _LookupFailed(CommandExecutionError):
    """A lookup got no answer (timeout, SERVFAIL, REFUSED): not the same as no record."""


def _failure_reason(exc):
    """What went wrong with a lookup, in a few words: the rcodes servers gave, or a timeout."""
    if isinstance(exc, dns.exception.Timeout):
        return "timed out"
    answers = []
    for error in (
        exc.kwargs.get("errors", []) if isinstance(exc, dns.resolver.NoNameservers) else []
    ):
        server, response = error[0], error[-1]
        if isinstance(response, dns.message.Message):
            answers.append(f"{dns.rcode.to_text(response.rcode())} from {server}")
        else:
            answers.append(f"{error[3] or 'no answer'} from {server}")
    return ", ".join(dict.fromkeys(answers)) or str(exc)


def _error_row(record, exc):
    return {
        "record": record,
        "expected": "an answer",
        "found": "lookup failed",
        "result": "error",
        "why": str(exc),
    }


def _guarded(record, check, *args):
    """The rows of ``check(*args)`` (a row or a list); when one of its lookups fails,
    one ``error`` row for ``record`` instead, naming the lookup and why."""
    try:
        rows = check(*args)
    except _LookupFailed as exc:
        return [_error_row(record, exc)]
    except _Bogus as exc:
        return [_row(record, "an answer that validates", "bogus", False, str(exc))]
    return rows if isinstance(rows, list) else [rows]


def _name(text):
    return str(text).rstrip(".").lower()


class _Lookup:
    """The audit's resolver: answers cached per (name, type), CNAMEs followed."""

    def __init__(self, resolver):
        self.resolver = resolver
        self.cache = {}

    def get(self, name, rdtype):
        """``(records, chain, status)``; status is ``ok``, ``nodata`` or ``nxdomain``.

        ``chain`` lists the names a CNAME chain went through. A lookup that
        fails (timeout, SERVFAIL, REFUSED) raises ``_LookupFailed``
        (cached too): a broken resolver is not "no record".
        """
        key = (_name(name), rdtype)
        if key not in self.cache:
            try:
                self.cache[key] = self._chase(*key)
            except _LookupFailed as exc:
                self.cache[key] = exc
        if isinstance(self.cache[key], _LookupFailed):
            raise self.cache[key]
        return self.cache[key]

    def _chase(self, name, rdtype):
        chain, current = [], name
        for _ in range(MAX_CNAME_HOPS):
            try:
                answer = self.resolver.resolve(current, rdtype, raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN as exc:
                final = _name(exc.canonical_name) if exc.kwargs.get("qnames") else current
                if final != current:
                    chain.append(final)
                return [], chain, "nxdomain"
            except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
                raise _LookupFailed(
                    f"cannot look up {rdtype} {current}: {_failure_reason(exc)}"
                ) from None
            canonical = _name(answer.canonical_name)
            if canonical != current:
                chain.append(canonical)
            if answer.rrset is not None:
                return list(answer.rrset), chain, "ok"
            if canonical == current or rdtype == "CNAME":
                return [], chain, "nodata"
            # The server gave the CNAME but not the data behind it (another zone).
            current = canonical
        raise CommandExecutionError(f"CNAME chain from {name} is longer than {MAX_CNAME_HOPS}")

    def targets(self, name, rdtype):
        """The names ``name``'s PTR or CNAME records point to."""
        return sorted(_name(rd.target) for rd in self.get(name, rdtype)[0])

    def addresses(self, name):
        found = []
        for rdtype in ("A", "AAAA"):
            found += [rd.address for rd in self.get(name, rdtype)[0]]
        return found

    def txt(self, name):
        records, chain, status = self.get(name, "TXT")
        texts = [b"".join(rd.strings).decode("utf-8", "replace") for rd in records]
        return texts, chain, status


def _tags(text, origin):
    """``tag=value`` pairs of a DKIM or DMARC record, in order; ValueError names the bad one."""
    tags = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        match = _TAG.match(part)
        if not match:
            raise ValueError(f"{origin}: {part.strip()!r} is not a tag=value pair")
        name = match.group(1).lower()
        if name in tags:
            raise ValueError(f"{origin}: tag {name}= appears twice")
        tags[name] = match.group(2)
    return tags


# MX, addresses, PTR ---------------------------------------------------------


def _check_mx(lk, domain, expected):
    records, _, status = lk.get(domain, "MX")
    found = sorted((rd.preference, _name(rd.exchange)) for rd in records)
    shown = ", ".join(f"{pref} {host}" for pref, host in found) or status
    hosts = {host for _, host in found}
    want = {_name(host) for host in expected}
    record = f"MX {domain}"
    if not hosts:
        return [_row(record, ", ".join(sorted(want)), shown, False, "no MX record")]
    if hosts == {""}:
        return [_row(record, ", ".join(sorted(want)), shown, False, "null MX: accepts no mail")]
    stray = sorted(hosts - want)
    if stray:
        return [
            _row(
                record,
                ", ".join(sorted(want)),
                shown,
                False,
                f"MX points elsewhere: {', '.join(stray)}",
            )
        ]
    rows = [_row(record, ", ".join(sorted(want)), shown, True)]
    for host in sorted(hosts):
        chain = lk.get(host, "A")[1] or lk.get(host, "AAAA")[1]
        if chain:
            rows.append(
                _row(
                    f"MX target {host}",
                    "a host name with A/AAAA",
                    f"CNAME to {chain[-1]}",
                    False,
                    "an MX target must not be an alias (RFC 2181 10.3)",
                )
            )
    return rows


def _check_addresses(lk, hostname, expected):
    found = lk.addresses(hostname)
    record = f"A/AAAA {hostname}"
    if expected:
        want = sorted(str(ipaddress.ip_address(a)) for a in expected)
        got = sorted(str(ipaddress.ip_address(a)) for a in found)
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        why = "; ".join(
            part
            for part in (
                missing and f"missing {', '.join(missing)}",
                extra and f"unexpected {', '.join(extra)}",
            )
            if part
        )
        return [_row(record, ", ".join(want), ", ".join(got) or "none", not why, why)], found
    return [
        _row(
            record,
            "at least one address",
            ", ".join(found) or "none",
            bool(found),
            "" if found else "the mail host has no address",
        )
    ], found


def _check_ptr(lk, hostname, addresses):
    rows = []
    forward = {str(ipaddress.ip_address(a)) for a in addresses}
    for address in addresses:
        reverse = _name(dns.reversename.from_address(address))
        names = lk.targets(reverse, "PTR")
        record = f"PTR {address}"
        expected = f"{hostname}, resolving back to {address}"
        if not names:
            rows.append(_row(record, expected, "none", False, f"no PTR record at {reverse}"))
        elif hostname not in names:
            rows.append(
                _row(
                    record,
                    expected,
                    ", ".join(names),
                    False,
                    f"PTR names {', '.join(names)}, not {hostname}",
                )
            )
        elif str(ipaddress.ip_address(address)) not in forward:
            rows.append(
                _row(
                    record,
                    expected,
                    hostname,
                    False,
                    f"{hostname} does not resolve back to {address}",
                )
            )
        else:
            rows.append(_row(record, expected, hostname, True, "forward-confirmed"))
    return rows


# SPF --------------------------------------------------------------------------


def _spf_records(texts):
    return [t for t in texts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]


def _split_term(term):
    """``(qualifier, mechanism, argument)`` of an SPF mechanism such as ``-ip4:192.0.2.0/24``."""
    qualifier, body = (term[0], term[1:]) if term[:1] in "+-~?" else ("+", term)
    name, sep, argument = body.partition(":")
    if not sep:
        name = body.split("/", 1)[0]
    return qualifier, name.lower(), argument


class _SpfWalk:
    """Count an SPF policy's DNS lookups and void lookups, through include and redirect."""

    def __init__(self, lk):
        self.lk = lk
        self.lookups = 0
        self.voids = []
        self.problems = []
        self.notes = []
        self.seen = set()

    def _void(self, name, *rdtypes):
        """Look ``name`` up; count it as void when no type has an answer."""
        if any(self.lk.get(name, rdtype)[0] for rdtype in rdtypes):
            return False
        self.voids.append(name)
        return True

    def walk(self, domain, via=None):
        """The ``all`` that ends ``domain``'s policy (``-all``...), or None."""
        if domain in self.seen:
            self.problems.append(f"{via} {domain} loops back (permerror)")
            return None
        self.seen.add(domain)
        texts, _, _ = self.lk.txt(domain)
        records = _spf_records(texts)
        if via and not texts:
            self.voids.append(domain)
        if len(records) != 1:
            where = f"{via} {domain}" if via else domain
            count = f"{len(records)} SPF records" if records else "no SPF record"
            self.problems.append(f"{where} has {count} (permerror)")
            return None
        redirect = None
        for term in records[0].split()[1:]:
            modifier = re.match(r"^([a-z][a-z0-9_.-]*)=(.*)$", term, re.I)
            if modifier:
                if modifier.group(1).lower() == "redirect":
                    redirect = modifier.group(2)
                continue
            qualifier, mechanism, argument = _split_term(term)
            if mechanism not in SPF_MECHANISMS:
                self.problems.append(f"{domain}: unknown mechanism {term!r} (permerror)")
            elif mechanism == "all":
                return qualifier + "all"
            else:
                self._term(domain, mechanism, argument, term)
        if redirect is None:
            return None
        self.lookups += 1
        if self.lookups > SPF_LOOKUP_LIMIT:
            return None
        if "%" in redirect:
            self.notes.append(f"redirect={redirect} has macros: not followed")
            return None
        return self.walk(_name(redirect), "redirect=")

    def _term(self, domain, mechanism, argument, term):
        if mechanism in ("ip4", "ip6"):
            try:
                network = ipaddress.ip_network(argument, strict=False)
            except ValueError:
                network = None
            if network is None or network.version != int(mechanism[-1]):
                self.problems.append(f"{domain}: {term!r} is not a valid {mechanism} network")
            return
        self.lookups += 1
        target = _name(argument.split("/")[0]) or domain
        if self.lookups > SPF_LOOKUP_LIMIT:
            return  # counted, not resolved: the evaluation has already failed
        if "%" in target:
            self.notes.append(f"{term} has macros: not resolved")
        elif mechanism == "include":
            self.walk(target, "include:")
        elif mechanism in {"a", "exists"}:
            self._void(target, "A", "AAAA")
        elif mechanism == "mx":
            self._void(target, "MX")
        else:
            self.notes.append(f"{term}: ptr should not be used (RFC 7208 5.5)")


def _check_spf(lk, domain, accept_all):
    records = _spf_records(lk.txt(domain)[0])
    record = f"SPF {domain}"
    if len(records) != 1:
        found = "none" if not records else f"{len(records)} records"
        why = "no v=spf1 TXT record" if not records else "more than one v=spf1 record (permerror)"
        return [_row(record, "one v=spf1 TXT record", found, False, why)]
    walk = _SpfWalk(lk)
    ending = walk.walk(domain)
    rows = [
        _row(
            record,
            "one v=spf1 TXT record that parses",
            records[0],
            not walk.problems,
            "; ".join(walk.problems + walk.notes),
        ),
        _row(
            f"SPF {domain} all",
            " or ".join(accept_all),
            ending or "none",
            ending in accept_all,
            "" if ending in accept_all else "the policy must end in " + " or ".join(accept_all),
        ),
        _row(
            f"SPF {domain} DNS lookups",
            f"<= {SPF_LOOKUP_LIMIT} (RFC 7208 4.6.4)",
            str(walk.lookups) if walk.lookups <= SPF_LOOKUP_LIMIT else f"> {SPF_LOOKUP_LIMIT}",
            walk.lookups <= SPF_LOOKUP_LIMIT,
            ""
            if walk.lookups <= SPF_LOOKUP_LIMIT
            else "over the limit: receivers return permerror",
        ),
        _row(
            f"SPF {domain} void lookups",
            f"<= {SPF_VOID_LIMIT} (RFC 7208 4.6.4)",
            f"{len(walk.voids)}" + (f": {', '.join(walk.voids)}" if walk.voids else ""),
            len(walk.voids) <= SPF_VOID_LIMIT,
            ""
            if len(walk.voids) <= SPF_VOID_LIMIT
            else "over the limit: receivers return permerror",
        ),
    ]
    return rows


# DKIM -------------------------------------------------------------------------


def _dkim_key(text, origin):
    """What a DKIM key record holds: key type and size; ValueError says what is wrong."""
    tags = _tags(text, origin)
    if "v" in tags and (tags["v"] != "DKIM1" or next(iter(tags)) != "v"):
        raise ValueError(f"{origin}: v= must be DKIM1 and come first")
    if "p" not in tags:
        raise ValueError(f"{origin}: no p= (public key) tag")
    data = re.sub(r"\s+", "", tags["p"])
    if not data:
        raise ValueError(f"{origin}: empty p=: the key is revoked")
    hashes = [h.strip() for h in tags.get("h", "sha256").split(":")]
    if "sha256" not in hashes:
        raise ValueError(f"{origin}: h={tags['h']} allows no sha256 (RFC 8301)")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise ValueError(f"{origin}: p= is not base64") from None
    kind = tags.get("k", "rsa").lower()
    if kind == "ed25519":
        if len(raw) != 32:
            raise ValueError(f"{origin}: an ed25519 key is 32 bytes, p= holds {len(raw)}")
        return {"type": "ed25519", "bits": 256, "testing": "y" in tags.get("t", "")}
    if kind != "rsa":
        raise ValueError(f"{origin}: unknown key type k={kind}")
    try:
        key = load_der_public_key(raw)
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{origin}: p= is not a valid RSA public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{origin}: p= holds a {type(key).__name__}, not an RSA key")
    if key.key_size < DKIM_RSA_MIN_BITS:
        raise ValueError(f"{origin}: {key.key_size}-bit RSA key (RFC 8301: at least 1024)")
    return {"type": "rsa", "bits": key.key_size, "testing": "y" in tags.get("t", "")}


def _check_dkim(lk, domain, selector):
    name = f"{selector}._domainkey.{domain}"
    texts, chain, status = lk.txt(name)
    record = f"DKIM {name}"
    via = f" via CNAME {' -> '.join(chain)}" if chain else ""
    if not texts:
        why = (
            f"CNAME to {chain[-1]}, which has no key record"
            if chain
            else f"no TXT record ({status})"
        )
        return _row(record, "a usable DKIM key", "none" + via, False, why)
    if len(texts) > 1:
        return _row(
            record,
            "a usable DKIM key",
            f"{len(texts)} TXT records{via}",
            False,
            "more than one TXT record",
        )
    try:
        key = _dkim_key(texts[0], name)
    except ValueError as exc:
        return _row(record, "a usable DKIM key", texts[0][:60] + via, False, str(exc))
    found = f"{key['type']} {key['bits']}-bit{via}"
    note = "t=y: testing mode, receivers treat it as unsigned" if key["testing"] else ""
    return _row(record, "a usable DKIM key", found, True, note)


# DMARC ------------------------------------------------------------------------


def _dmarc_tags(text, origin):
    tags = _tags(text, origin)
    if next(iter(tags), None) != "v" or tags["v"] != "DMARC1":
        raise ValueError(f"{origin}: must start with v=DMARC1")
    if tags.get("p", "").lower() not in DMARC_POLICIES:
        raise ValueError(f"{origin}: p= must be one of {', '.join(DMARC_POLICIES)}")
    for tag in ("adkim", "aspf"):
        if tags.get(tag, "r").lower() not in ("r", "s"):
            raise ValueError(f"{origin}: {tag}= must be r or s")
    if tags.get("sp") and tags["sp"].lower() not in DMARC_POLICIES:
        raise ValueError(f"{origin}: sp= must be one of {', '.join(DMARC_POLICIES)}")
    pct = tags.get("pct", "100")
    if not re.fullmatch(r"[0-9]{1,3}", pct) or int(pct) > 100:
        raise ValueError(f"{origin}: pct= must be 0-100")
    return tags


def _report_domains(tags):
    """The domains of the mailto: report addresses in rua= and ruf=."""
    addresses = []
    for tag in ("rua", "ruf"):
        for uri in filter(None, (u.strip() for u in tags.get(tag, "").split(","))):
            address = uri[len("mailto:") :] if uri.lower().startswith("mailto:") else uri
            addresses.append(address.split("!", 1)[0])
    return addresses


_PSL = []


def _org_domain(name):
    """The organisational domain of ``name`` (RFC 7489 3.2): one label below its public
    suffix, from the Public Suffix List that the ``publicsuffixlist`` package ships
    (updated with its releases); a public suffix itself is its own."""
    if not HAS_PSL:
        raise CommandExecutionError(
            "the DMARC and CAA checks need the publicsuffixlist package "
            "(salt-pip install publicsuffixlist)"
        )
    if not _PSL:
        _PSL.append(PublicSuffixList())
    return _PSL[0].privatesuffix(name) or name


def _aligned(domain, other, mode):
    """DMARC identifier alignment: strict, the same name; relaxed, the same
    organisational domain (so a.co.uk and b.co.uk are not aligned)."""
    if mode == "s":
        return other == domain
    return _org_domain(other) == _org_domain(domain)


def _check_dmarc(lk, domain, policy, dkim_ok, envelope):
    name = f"_dmarc.{domain}"
    texts = [t for t in lk.txt(name)[0] if t.lower().startswith("v=dmarc1")]
    if len(texts) != 1:
        why = "no v=DMARC1 record" if not texts else "more than one v=DMARC1 record"
        return [
            _row(f"DMARC {name}", "one v=DMARC1 TXT record", f"{len(texts)} records", False, why)
        ]
    try:
        tags = _dmarc_tags(texts[0], name)
    except ValueError as exc:
        return [_row(f"DMARC {name}", "a v=DMARC1 record that parses", texts[0], False, str(exc))]
    found_policy = tags["p"].lower()
    rows = [_row(f"DMARC {name}", "a v=DMARC1 record that parses", texts[0], True)]
    if policy:
        strong = DMARC_POLICIES.index(found_policy) >= DMARC_POLICIES.index(policy)
        rows.append(
            _row(
                f"DMARC {domain} policy",
                f"p={policy} or stricter",
                f"p={found_policy}",
                strong,
                "" if strong else f"p={found_policy} is weaker than p={policy}",
            )
        )
    adkim, aspf = tags.get("adkim", "r").lower(), tags.get("aspf", "r").lower()
    spf_aligned = _aligned(domain, envelope, aspf)
    dkim_aligned = bool(dkim_ok)
    ok = spf_aligned or dkim_aligned or found_policy == "none"
    found = (
        f"adkim={adkim} aspf={aspf}; "
        f"DKIM d={domain}: {'a usable key' if dkim_ok else 'no usable key'}; "
        f"SPF envelope {envelope}: {'aligned' if spf_aligned else 'not aligned'}"
    )
    why = (
        ""
        if spf_aligned or dkim_aligned
        else (
            f"p={found_policy} but neither DKIM nor SPF can align: mail from {domain} is "
            + (
                "rejected"
                if found_policy == "reject"
                else "quarantined"
                if found_policy == "quarantine"
                else "unprotected"
            )
        )
    )
    rows.append(_row(f"DMARC {domain} alignment", "an aligned DKIM or SPF pass", found, ok, why))
    rows += _check_dmarc_reports(lk, domain, tags)
    return rows


def _check_dmarc_reports(lk, domain, tags):
    rows = []
    for address in _report_domains(tags):
        target = _name(address.rpartition("@")[2])
        if not target or _aligned(domain, target, "r"):
            rows.append(
                _row(
                    f"DMARC {domain} report to {address}",
                    "a mailbox",
                    address,
                    bool(target),
                    "" if target else "not a mail address",
                )
            )
            continue
        name = f"{domain}._report._dmarc.{target}"
        ok = any(t.lower().startswith("v=dmarc1") for t in lk.txt(name)[0])
        rows.append(
            _row(
                f"DMARC {domain} report to {address}",
                f"v=DMARC1 at {name}",
                "authorised" if ok else "none",
                ok,
                "" if ok else f"{target} has not agreed to receive reports (RFC 7489 7.1)",
            )
        )
    return rows


# TLS reporting, CAA -----------------------------------------------------------

#: CAA issuer domains (RFC 8659 4.2) of the CAs that mail hosts' certificates
#: usually come from, by the organisation in the issuer's name.
CAA_DOMAINS = {
    "Let's Encrypt": "letsencrypt.org",
    "ZeroSSL": "sectigo.com",
    "Sectigo Limited": "sectigo.com",
    "Google Trust Services": "pki.goog",
    "Google Trust Services LLC": "pki.goog",
    "Buypass AS-983163327": "buypass.com",
    "DigiCert Inc": "digicert.com",
}
_URI_MAILTO = re.compile(r"mailto:[^@\s,;!]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,63}(![0-9]+[kmgt]?)?", re.I)
_URI_HTTPS = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s,;]*)?", re.I)


def _versioned_txt(lk, name, version, record, expected):
    """``(text, tags, None)`` of the one TXT record at ``name`` starting ``v=<version>``,
    or ``(None, None, failing row)``: none, several (receivers then ignore them all), or
    one whose tags do not parse."""
    prefix = f"v={version}".lower()
    texts = [t for t in lk.txt(name)[0] if t.replace(" ", "").lower().startswith(prefix)]
    if len(texts) != 1:
        why = f"no v={version} record" if not texts else "more than one: senders ignore them all"
        return None, None, _row(record, expected, f"{len(texts)} records", False, why)
    try:
        return texts[0], _tags(texts[0], name), None
    except ValueError as exc:
        return None, None, _row(record, expected, texts[0], False, str(exc))


def _check_tls_rpt(lk, domain):
    """RFC 8460: one v=TLSRPTv1 TXT record at _smtp._tls.<domain>, rua= URIs that parse."""
    name = f"_smtp._tls.{domain}"
    record = f"TLS-RPT {name}"
    expected = "one v=TLSRPTv1 record with rua= mailto: or https: URIs"
    text, tags, failed = _versioned_txt(lk, name, "TLSRPTv1", record, expected)
    if failed:
        return failed
    uris = [u.strip() for u in tags.get("rua", "").split(",") if u.strip()]
    bad = [u for u in uris if not (_URI_MAILTO.fullmatch(u) or _URI_HTTPS.fullmatch(u))]
    why = (
        "no rua=: reports go nowhere"
        if not uris
        else f"not a mailto: or https: URI: {', '.join(bad)}"
        if bad
        else ""
    )
    return _row(record, expected, text, not why, why)


def _caa_issuer(deployed, given):
    """The CAA domain the deployed certificate's CA (``certsync.info`` of it, or None)
    is known by, or ``given``."""
    if given:
        return _dns_name(given, "caa_issuer"), None
    if not deployed:
        return None, "no deployed certificate to find its CA: give caa_issuer"
    issuer = deployed["issuer"]
    org = next((p[2:] for p in re.split(r"(?<!\\),", issuer) if p.startswith("O=")), "")
    org = org.replace("\\", "")
    if org not in CAA_DOMAINS:
        return None, f"the CAA domain of the issuer {issuer!r} is not known: give caa_issuer"
    return CAA_DOMAINS[org], None


def _relevant_caa(lk, hostname):
    """RFC 8659 3: the first non-empty CAA RRset climbing from ``hostname``; the climb
    stops at the organisational domain (public suffixes publish no CAA)."""
    org = _org_domain(hostname)
    labels = hostname.split(".")
    for i in range(len(labels)):
        name = ".".join(labels[i:])
        records = lk.get(name, "CAA")[0]
        if records:
            return name, records
        if name == org:
            break
    return None, []


def _check_caa(lk, hostname, issuer, problem, wildcard=False):
    """The relevant CAA set lets the deployed certificate's CA issue (``issuewild`` for a
    wildcard), marks no unknown property critical, and its iodef URIs parse."""
    name, records = _relevant_caa(lk, hostname)
    record = f"CAA {name or hostname}"
    expected = f"{issuer or 'the CA'} may issue{' wildcards' if wildcard else ''}"
    if not records:
        return [_row(record, expected, "none", True, "no CAA record: any CA may issue")]
    found = "; ".join(
        f"{rd.flags} {rd.tag.decode(errors='replace')} {rd.value.decode(errors='replace')}"
        for rd in records
    )
    known = {"issue", "issuewild", "iodef", "contactemail", "contactphone", "issuemail"}
    critical = [
        rd.tag.decode(errors="replace")
        for rd in records
        if rd.flags & 128 and rd.tag.decode(errors="replace").lower() not in known
    ]
    values = {}
    for rd in records:
        tag = rd.tag.decode(errors="replace").lower()
        value = rd.value.decode(errors="replace").split(";")[0].strip().lower()
        values.setdefault(tag, []).append(value)
    allowed = values.get("issuewild") if wildcard and "issuewild" in values else values.get("issue")
    if problem:
        why = problem
    elif critical:
        why = f"unknown critical property {', '.join(critical)}: no CA may issue"
    elif allowed is not None and issuer not in allowed:
        shown = ", ".join(a or '";"' for a in allowed)
        why = f"allows {shown}, not {issuer}: the next renewal will be refused"
    else:
        why = ""
    rows = [_row(record, expected, found, not why, why)]
    for rd in records:
        if rd.tag.decode(errors="replace").lower() == "iodef":
            uri = rd.value.decode(errors="replace")
            ok = bool(_URI_MAILTO.fullmatch(uri) or re.fullmatch(r"https?://[^\s]+", uri))
            rows.append(
                _row(
                    f"CAA {name} iodef",
                    "a mailto: or http(s): URI",
                    uri,
                    ok,
                    "" if ok else "CAs cannot report to it",
                )
            )
    return rows


# MTA-STS (RFC 8461) -------------------------------------------------------------

STS_MAX_AGE = 31557600
STS_MAX_BYTES = 64 * 1024
STS_MODES = ("enforce", "testing", "none")
_STS_ID = re.compile(r"[A-Za-z0-9]{1,32}")


def _check_sts_txt(lk, domain):
    name = f"_mta-sts.{domain}"
    record = f"MTA-STS {name}"
    expected = "one v=STSv1 record with an id (1-32 letters and digits)"
    text, tags, failed = _versioned_txt(lk, name, "STSv1", record, expected)
    if failed:
        return failed
    ok = bool(_STS_ID.fullmatch(tags.get("id", "")))
    return _row(record, expected, text, ok, "" if ok else "id= is missing or malformed")


#: Room for the status line and headers of a policy response, beside the body.
STS_HEADER_BYTES = 16 * 1024


def _fetch_sts_policy(name, address, port, ca_file, timeout):
    """``(text, None)``, or ``(None, why)``: the policy over HTTPS, certificate verified for
    ``name``, no redirect followed, text/plain, at most 64 KiB (RFC 8461 3.3), all of it
    (connect, handshake, response) within ``timeout`` seconds: a server that sends a
    byte now and then cannot hold the audit longer."""
    deadline = time.monotonic() + timeout
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        return None, f"ca_file {ca_file}: not a readable PEM bundle ({exc})"
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        return None, f"cannot connect to {address}:{port}: {exc.strerror or exc}"
    try:
        with context.wrap_socket(sock, server_hostname=name) as tls:
            request = (
                f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {name}\r\n"
                "User-Agent: certsync\r\nConnection: close\r\n\r\n"
            )
            tls.settimeout(max(deadline - time.monotonic(), 0.001))
            tls.sendall(request.encode())
            raw = _read_until_closed(tls, deadline, STS_MAX_BYTES + STS_HEADER_BYTES)
        response = http.client.HTTPResponse(_Received(raw))
        response.begin()
        if response.status != 200:
            redirect = 300 <= response.status < 400
            return None, f"HTTP {response.status}" + (
                " (a policy is never behind a redirect)" if redirect else ""
            )
        kind = response.getheader("Content-Type", "")
        if kind.split(";")[0].strip().lower() != "text/plain":  # the media type, whole
            return None, f"Content-Type {kind[:80]!r}, not text/plain"
        body = response.read(STS_MAX_BYTES + 1)
        declared = response.getheader("Content-Length", "")
        if declared.isdigit() and len(body) < int(declared) <= STS_MAX_BYTES:
            return None, (
                f"the body ended after {len(body)} of the {declared} bytes its Content-Length "
                "announced: a policy cut short is not taken"
            )
    except ssl.SSLCertVerificationError as exc:
        return None, f"the certificate is not verified for {name}: {exc.verify_message}"
    except TimeoutError:
        return None, f"HTTPS to {address}:{port}: no whole response within {timeout:g} s"
    except (OSError, http.client.HTTPException) as exc:
        return None, f"HTTPS to {address}:{port} failed: {exc}"
    finally:
        sock.close()
    if len(body) > STS_MAX_BYTES:
        return None, "the policy is larger than 64 KiB"
    return body.decode("utf-8", "replace"), None


def _read_until_closed(sock, deadline, limit):
    """What ``sock`` sends until it closes, at most ``limit`` bytes (then stops reading),
    by ``deadline`` (time.monotonic()) or TimeoutError."""
    chunks, size = [], 0
    while size <= limit:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class _Received:
    """A received HTTP response, handed to http.client as the socket it reads."""

    def __init__(self, data):
        self.data = data

    def makefile(self, *_args, **_kwargs):
        return io.BytesIO(self.data)


def _parse_sts_policy(text):
    """``(fields, mx patterns, problems)`` of a policy file."""
    fields, patterns, problems = {}, [], []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            problems.append(f"{line.strip()[:60]!r} is not a key: value line")
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "mx":
            patterns.append(value.lower().rstrip("."))
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        problems.append(f"version is {fields.get('version')!r}, not STSv1")
    if fields.get("mode") not in STS_MODES:
        problems.append(f"mode is {fields.get('mode')!r}, not one of {', '.join(STS_MODES)}")
    age = fields.get("max_age", "")
    if not re.fullmatch(r"[0-9]{1,9}", age) or int(age) > STS_MAX_AGE:
        problems.append(f"max_age {age!r} is not a number of seconds up to {STS_MAX_AGE}")
    if not patterns and fields.get("mode") != "none":
        problems.append("no mx: line")
    return fields, patterns, problems


def _sts_matches(pattern, host):
    """RFC 8461 4.1: a pattern is a host name, or ``*.`` and one label more."""
    if pattern.startswith("*."):
        return "." in host and host.split(".", 1)[1] == pattern[2:]
    return host == pattern


def _check_mta_sts(lk, domain, target, ca_file, timeout):
    """The TXT record, the policy fetched over verified HTTPS, and its mx patterns
    against every MX host."""
    rows = [_check_sts_txt(lk, domain)]
    name = f"mta-sts.{domain}"
    url = f"https://{name}/.well-known/mta-sts.txt"
    expected = f"version STSv1, mode {'/'.join(STS_MODES)}, max_age up to {STS_MAX_AGE}"
    address, port = target or (next(iter(lk.addresses(name)), None), 443)
    if address is None:
        rows.append(
            _row(f"MTA-STS policy {url}", expected, "nothing", False, f"{name} has no address")
        )
        return rows
    text, error = _fetch_sts_policy(name, address, port, ca_file, timeout)
    served = _check_https_name(name, address, port, timeout, "senders get no policy")
    if error:
        rows.append(_row(f"MTA-STS policy {url}", expected, "not fetched", False, error))
        return [*rows, served]
    fields, patterns, problems = _parse_sts_policy(text)
    found = f"mode={fields.get('mode')} max_age={fields.get('max_age')} mx={', '.join(patterns)}"
    rows.append(_row(f"MTA-STS policy {url}", expected, found, not problems, "; ".join(problems)))
    hosts = _mx_hosts(lk, domain)
    uncovered = [h for h in hosts if not any(_sts_matches(p, h) for p in patterns)]
    stray = [p for p in patterns if not any(_sts_matches(p, h) for h in hosts)]
    why = "; ".join(
        part
        for part in (
            uncovered
            and f"MX {', '.join(uncovered)} not in the policy: enforcing senders "
            "will not deliver there",
            stray and f"{', '.join(stray)} matches no MX host",
        )
        if part
    )
    rows.append(
        _row(f"MTA-STS {domain} mx", "every MX host, nothing else", ", ".join(hosts), not why, why)
    )
    return [*rows, served]


# Client set-up and relay ------------------------------------------------------


def _check_cname(lk, name, target, why_wanted):
    found, status = lk.targets(name, "CNAME"), lk.get(name, "CNAME")[2]
    ok = found == [_name(target)]
    why = "" if ok else (f"CNAME to {', '.join(found)}" if found else f"no CNAME ({status})")
    return _row(
        f"CNAME {name}",
        _name(target),
        ", ".join(found) or "none",
        ok,
        why and f"{why}; {why_wanted}",
    )


def _check_clients(lk, domain, hostname, https=None):
    rows = [
        _check_cname(lk, f"{sub}.{domain}", hostname, "mail clients find their settings there")
        for sub in ("autoconfig", "autodiscover")
    ]
    if https:
        rows += [
            _check_https_name(f"{sub}.{domain}", *https) for sub in ("autoconfig", "autodiscover")
        ]
    name = f"_autodiscover._tcp.{domain}"
    records = lk.get(name, "SRV")[0]
    found = [f"{rd.priority} {rd.weight} {rd.port} {_name(rd.target)}" for rd in records]
    ok = any(rd.port == 443 and _name(rd.target) == hostname for rd in records)
    rows.append(
        _row(
            f"SRV {name}",
            f"port 443 on {hostname}",
            ", ".join(found) or "none",
            ok,
            "" if ok else "Outlook finds Autodiscover through it",
        )
    )
    return rows


def _check_https_name(name, address, port, timeout, refused="clients refuse the settings"):
    """What is served over HTTPS for ``name`` (SNI) must cover it: mailcow's nginx serves
    autoconfig/autodiscover and mta-sts with the top-level pair."""
    served = __salt__["tlsprobe.fetch"](name, "https", port or 443, address, timeout)
    record = f"HTTPS {name}"
    expected = "a certificate covering it"
    if not served.get("ok"):
        return _row(record, expected, "nothing", False, f"not fetched: {served.get('error')}")
    covered = any(__utils__["certsync_pem.name_matches"](san, name) for san in served["sans"])
    why = "" if covered else f"{refused}: the certificate does not cover it"
    return _row(record, expected, ", ".join(served["sans"]) or "no DNS SAN", covered, why)


# TLSA -------------------------------------------------------------------------


@contextlib.contextmanager
def _served_chain(hostname, port, address, probe_port, timeout):
    """A temporary PEM file of the chain served on ``port`` (None when unreachable)."""
    protocol = __utils__["certsync_endpoints.by_port"](int(port))
    result = (
        __salt__["tlsprobe.fetch"](
            hostname, protocol, probe_port or port, address, timeout, pem=True
        )
        if protocol and address
        else None
    )
    if not result or not result.get("ok"):
        yield None, result and result.get("error")
        return
    handle, path = tempfile.mkstemp(prefix="certsync-served-", suffix=".pem")
    try:
        with os.fdopen(handle, "w", encoding="ascii") as out:
            out.write(result["chain_pem"])
        yield path, None
    finally:
        os.unlink(path)


def _check_tlsa(hostname, port, certs, served, resolver_args, key_kept=None):
    with _served_chain(hostname, port, *served) as (served_path, served_error):
        labels = {k: v for k, v in certs.items() if v}
        if served_path:
            labels["served"] = served_path
        if not labels:
            record = f"TLSA {_tlsa_name(hostname, port, 'tcp')} coverage"
            why = f"no certificate to match: the served one was not fetched ({served_error})"
            return [
                _row(record, "a record matching the served certificate", "unknown", False, why)
            ], {"records": []}
        check = tlsa_check(hostname, labels, port=port, **resolver_args)
        in_use = served_path or certs.get("deployed")
        anchors = [
            row["record"]
            for row in check["records"]
            if row["record"].startswith("2 ")
            and in_use
            and _record_for(in_use, *row["record"].split(" ", 3)[:3]) == row["record"]
        ]
    name = check["name"]
    rows = []
    if not check["records"]:
        return [
            _row(
                f"TLSA {name}",
                "a record matching the served certificate",
                "none",
                False,
                "no TLSA record: DANE senders cannot authenticate this host",
            )
        ], check
    for row in check["records"]:
        matched = row["matches"]
        rows.append(
            _row(
                f"TLSA {name}",
                "matches a certificate in use or coming",
                f"{row['record'][:24]}... matches {', '.join(matched) or 'nothing'}",
                bool(matched),
                "" if matched else "stale: matches no certificate in use; remove it",
            )
        )
    current = "served" if served_path else "deployed"
    covered = check["matching"].get(current, False)
    why = "" if covered else f"no record matches the {current} certificate: DANE senders will fail"
    if served_error:
        why = "; ".join(filter(None, [why, f"served certificate not fetched: {served_error}"]))
    rows.append(
        _row(
            f"TLSA {name} coverage",
            f"a record matching the {current} certificate",
            "yes" if covered else "no",
            covered,
            why,
        )
    )
    rows.append(_rollover_row(name, check, anchors, key_kept))
    if resolver_args.get("dnssec"):
        rows.append(
            _row(
                f"TLSA {name} DNSSEC",
                "AD bit set by a validating resolver",
                "AD" if check["ad"] else "no AD",
                bool(check["ad"]),
                "" if check["ad"] else "DANE needs DNSSEC-validated TLSA records",
            )
        )
    return rows, check


def _check_tlsa_per_address(lk, hostname, port, probe, mapping, resolver_args):
    """The certificate each address of ``hostname`` serves on ``port`` must match a TLSA
    record: one address serving a stale certificate fails its own row."""
    mapping = mapping if isinstance(mapping, dict) else {}
    chains, rows = {}, []
    name = _tlsa_name(hostname, port, "tcp")
    with contextlib.ExitStack() as stack:
        for address in lk.addresses(hostname):
            connect = str(mapping.get(address, address))
            served = (connect, _probe_port(probe, port), probe["timeout"])
            path, error = stack.enter_context(_served_chain(hostname, port, *served))
            if path:
                chains[address] = path
            else:
                rows.append(
                    _row(
                        f"TLSA {name} at {address}",
                        "a served certificate a record matches",
                        "nothing",
                        False,
                        f"not fetched from {connect}: {error}",
                    )
                )
        matching = (
            tlsa_check(hostname, chains, port=port, **resolver_args)["matching"] if chains else {}
        )
    for address in chains:
        ok = matching.get(address, False)
        why = "" if ok else "serves a certificate no TLSA record matches: DANE senders fail here"
        rows.append(
            _row(
                f"TLSA {name} at {address}",
                "a served certificate a record matches",
                "matches" if ok else "no match",
                ok,
                why,
            )
        )
    return sorted(rows, key=lambda row: row["record"])


def _rollover_row(name, check, anchors, key_kept):
    """Does the TLSA set survive the next certificate? current + next 3 1 1, 3 1 1 + a
    2 1 1 of the issuing intermediate, or a lone 3 1 1 whose key the source keeps."""
    records = [row["record"] for row in check["records"]]
    ee = [r for r in records if r.startswith("3 1 ")]
    expected = "3 1 1 current + next, or 3 1 1 + 2 1 1 (issuer), or a key kept at renewal"
    if len(ee) >= 2:
        return _row(f"TLSA {name} rollover", expected, "current + next 3 1 1", True)
    if ee and anchors:
        return _row(f"TLSA {name} rollover", expected, "3 1 1 + 2 1 1 of the issuer", True)
    found = "a lone 3 1 1" if ee else "no 3 1 1"
    if key_kept is True:
        return _row(f"TLSA {name} rollover", expected, found, bool(ee), "the source keeps its key")
    if key_kept is False:
        why = (
            "the source's next renewal makes a new key that no record matches: keep the key "
            "(certsync.key_kept), publish the next key's 3 1 1, or add a 2 1 1 of the issuer"
        )
        return _row(f"TLSA {name} rollover", expected, found, False, why)
    why = "unknown whether the source's next renewal keeps the key (key_kept not given)"
    return _row(f"TLSA {name} rollover", expected, found, bool(ee), why)


# Public functions -------------------------------------------------------------


def zone_servers(zone, nameservers=None, dns_port=53, timeout=DEFAULT_TIMEOUT):
    """
    The authoritative servers of ``zone``: each name server of its NS set
    with its addresses (``[[name, address], ...]``), looked up through the
    resolver given (default: the system's). A name server without an address
    is an error naming it.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host maildns.zone_servers example.com
    """
    zone = _dns_name(zone, "zone")
    lk = _lookup(nameservers, dns_port, _seconds(timeout, "timeout"))
    found = []
    for ns in lk.targets(zone, "NS"):
        addresses = lk.addresses(ns)
        if not addresses:
            raise CommandExecutionError(f"the name server {ns} of {zone} has no address")
        found += [[ns, address] for address in addresses]
    if not found:
        raise CommandExecutionError(f"{zone} has no NS records")
    return found


def _seconds(value, what, maximum=3600):
    return __utils__["certsync_args.seconds"](value, what, maximum)


def _lookup(nameservers, dns_port, timeout, dnssec=False):
    return _Lookup(_resolver(nameservers, dns_port, timeout, dnssec))


def _dns_name(value, what):
    if not isinstance(value, str) or not __utils__["certsync_pem.is_dns_name"](value):
        raise SaltInvocationError(f"{what} {value!r} is not a valid DNS name")
    return _name(value)


def _as_list(values, what):
    """A list as given, or the items of a comma-separated string (the CLI)."""
    if values is None:
        return []
    if isinstance(values, (str, int)):
        return [item.strip() for item in str(values).split(",") if item.strip()]
    if not isinstance(values, (list, tuple)):
        raise SaltInvocationError(f"{what} must be a list")
    return list(values)


def _name_list(values, what):
    return [_dns_name(v, what) for v in _as_list(values, what)]


def _selector_list(values):
    values = _as_list(values, "dkim_selectors")
    for value in values:
        if not isinstance(value, str) or not re.fullmatch(
            r"[A-Za-z0-9_-]{1,63}(\.[A-Za-z0-9_-]{1,63})*", value
        ):
            raise SaltInvocationError(f"DKIM selector {value!r} is not a valid selector")
    return values


def _address_list(values):
    try:
        return [str(ipaddress.ip_address(str(v))) for v in _as_list(values, "addresses")]
    except ValueError as exc:
        raise SaltInvocationError(f"addresses: {exc}") from None


def _return_path(value):
    if not value:
        return None
    if not isinstance(value, dict) or set(value) != {"name", "target"}:
        raise SaltInvocationError("return_path must be a mapping with name and target")
    return {
        "name": _dns_name(value["name"], "return_path name"),
        "target": _dns_name(value["target"], "return_path target"),
    }


def _ports(values):
    try:
        ports = [int(v) for v in _as_list(values, "tlsa_ports")]
    except (TypeError, ValueError):
        raise SaltInvocationError(f"tlsa_ports must be a list of ports, not {values!r}") from None
    if any(not 0 < p < 65536 for p in ports):
        raise SaltInvocationError(f"tlsa_ports: {ports} holds a port out of range")
    return ports


def _accept_all(values):
    values = [values] if isinstance(values, str) else list(values or [])
    if not values or set(values) - {"-all", "~all", "?all", "+all"}:
        raise SaltInvocationError(f"spf_all must list -all, ~all, ?all or +all, not {values!r}")
    return values


#: The audit's options and their defaults: the checks' switches and what they read.
#: ``maildns.records_ok`` and the formula's dns.sls take the same, from here.
OPTIONS = {
    "mx": None,
    "addresses": None,
    "spf_all": ("-all", "~all"),
    "dkim_selectors": None,
    "dmarc_policy": None,
    "return_path": None,
    "autoconfig": True,
    "tlsa_ports": None,
    "certs": None,
    "probe_address": None,
    "probe_ports": None,
    "nameservers": None,
    "dns_port": 53,
    "timeout": DEFAULT_TIMEOUT,
    "dnssec": False,
    "key_kept": None,
    "tls_rpt": False,
    "caa": False,
    "caa_issuer": None,
    "mta_sts": False,
    "ca_file": None,
    "probe_addresses": None,
}


def audit_options():
    """
    The options ``maildns.audit`` takes, with their defaults (what
    ``maildns.records_ok`` and the formula's ``dns.sls`` pass on).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host maildns.audit_options
    """
    return {name: list(v) if isinstance(v, tuple) else v for name, v in OPTIONS.items()}


class _Audit:
    """One audit: the lookups, the names, its options checked once, and the stale TLSA
    records the TLSA rows found (by port)."""

    def __init__(self, domain, hostname, options):
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise SaltInvocationError(f"unknown options: {', '.join(unknown)}")
        opt = {**OPTIONS, **options}
        domain, hostname = _dns_name(domain, "domain"), _dns_name(hostname, "hostname")
        self.domain, self.hostname, self.options = domain, hostname, opt
        self.mx = _name_list(opt["mx"] or [hostname], "mx")
        self.addresses = _address_list(opt["addresses"])
        self.selectors = _selector_list(opt["dkim_selectors"] or [])
        if opt["dmarc_policy"] and opt["dmarc_policy"] not in DMARC_POLICIES:
            raise SaltInvocationError(f"dmarc_policy must be one of {', '.join(DMARC_POLICIES)}")
        self.relay = _return_path(opt["return_path"])
        self.ports = _ports(opt["tlsa_ports"])
        self.accept = _accept_all(opt["spf_all"])
        certs = opt["certs"]
        if certs is not None and not isinstance(certs, dict):
            raise SaltInvocationError("certs must map labels (deployed, candidate) to files")
        self.certs = certs or {}
        if self.ports and not (certs or opt["probe_address"]):
            raise SaltInvocationError(
                "tlsa_ports needs certs (deployed, candidate) or probe_address to match "
                "records against"
            )
        self.lk = _lookup(opt["nameservers"], opt["dns_port"], opt["timeout"])
        self.probe = {
            "address": opt["probe_address"],
            "ports": opt["probe_ports"] or {},
            "timeout": opt["timeout"],
        }
        self.resolver_args = {
            key: opt[key] for key in ("nameservers", "dns_port", "timeout", "dnssec")
        }
        self.stale = {}

    def https(self):
        """(address, port) where HTTPS is probed, or None."""
        port = _probe_port(self.probe, 443)
        return (self.probe["address"], port) if self.probe["address"] and port else None


def _mx_rows(audit):
    """The MX records, then A/AAAA and PTR of the mail host and of every other MX host."""
    lk, domain, hostname = audit.lk, audit.domain, audit.hostname
    rows = _guarded(f"MX {domain}", _check_mx, lk, domain, audit.mx)
    rows += _host_rows(lk, hostname, audit.addresses)
    for host in _mx_hosts(lk, domain):
        if host != hostname:
            rows += _host_rows(lk, host, [])
    return rows


def _senders_rows(audit):
    return _sender_rows(
        audit.lk,
        audit.domain,
        audit.accept,
        audit.selectors,
        audit.options["dmarc_policy"],
        audit.relay,
    )


def _tls_rpt_rows(audit):
    return _guarded(f"TLS-RPT _smtp._tls.{audit.domain}", _check_tls_rpt, audit.lk, audit.domain)


def _mta_sts_rows(audit):
    opt = audit.options
    return _guarded(
        f"MTA-STS {audit.domain}",
        _check_mta_sts,
        audit.lk,
        audit.domain,
        audit.https(),
        opt["ca_file"],
        opt["timeout"],
    )


def _caa_rows(audit):
    path = audit.certs.get("deployed")
    deployed = __salt__["certsync.info"](path) if path else None
    issuer, problem = _caa_issuer(deployed, audit.options["caa_issuer"])
    wildcard = any(san.startswith("*.") for san in (deployed or {}).get("sans", []))
    hostname = audit.hostname
    return _guarded(f"CAA {hostname}", _check_caa, audit.lk, hostname, issuer, problem, wildcard)


def _autoconfig_rows(audit):
    https = audit.https()
    return _guarded(
        f"autoconfig {audit.domain}",
        _check_clients,
        audit.lk,
        audit.domain,
        audit.hostname,
        (*https, audit.options["timeout"]) if https else None,
    )


def _tlsa_ports_rows(audit):
    """Per TLSA port: the records against the certificates (and the stale ones), and with
    ``probe_addresses`` what each address of the host serves."""
    rows, hostname = [], audit.hostname
    for port in audit.ports:
        tlsa_rows, audit.stale[port] = _tlsa_rows(
            hostname,
            port,
            audit.certs,
            audit.probe,
            audit.resolver_args,
            audit.options["key_kept"],
        )
        rows += tlsa_rows
        if audit.options["probe_addresses"]:
            rows += _guarded(
                f"TLSA {_tlsa_name(hostname, port, 'tcp')} per address",
                _check_tlsa_per_address,
                audit.lk,
                hostname,
                port,
                audit.probe,
                audit.options["probe_addresses"],
                audit.resolver_args,
            )
    return rows


#: The audit's rows, in order: (what they check, the option that turns them on, or None
#: for always, the function of the _Audit that makes them). One new check is one
#: function and one line here (and its option in OPTIONS when it has one).
CHECKS = (
    ("MX, A/AAAA, PTR", None, _mx_rows),
    ("SPF, DKIM, DMARC, return path", None, _senders_rows),
    ("TLS-RPT", "tls_rpt", _tls_rpt_rows),
    ("MTA-STS", "mta_sts", _mta_sts_rows),
    ("CAA", "caa", _caa_rows),
    ("autoconfig, autodiscover", "autoconfig", _autoconfig_rows),
    ("TLSA", "tlsa_ports", _tlsa_ports_rows),
)


def audit(domain, hostname, **options):
    """
    Check the mail DNS of ``domain`` served by ``hostname``; one row per
    record: ``record``, ``expected``, ``found``, ``result`` (``pass``,
    ``fail``, or ``error`` when a lookup got no answer: timeout, SERVFAIL,
    REFUSED, which is not the same as no record), ``why``. A failed lookup
    makes only its own row an error; the audit goes on. Every MX host gets
    A/AAAA and PTR rows. ``ok`` is True when every row passes; the CLI exits
    non-zero otherwise.

    domain
        The mail domain (the part after ``@``).

    hostname
        The mail host: MX target, PTR name, TLSA owner, autoconfig target.

    mx
        Host names the MX records must point to (all of them, none else).
        Default: ``[hostname]``.

    addresses
        The A/AAAA addresses the mail host must have. Default: any, at least
        one. Each address's PTR must name ``hostname``.

    spf_all
        The accepted endings of the SPF policy. Default: ``[-all, ~all]``.

    dkim_selectors
        Selectors whose key must be published (``<selector>._domainkey``),
        also through a CNAME. Default: none.

    dmarc_policy
        The weakest acceptable ``p=``: none, quarantine or reject. Default:
        any; the record must exist and parse.

    return_path
        ``{name: bounces.example.com, target: relay.example.net}``: the
        relay's return-path CNAME; its domain is the SPF identifier for
        DMARC alignment. Default: the envelope sender is ``domain``.

    autoconfig
        Check the ``autoconfig``/``autodiscover`` CNAMEs and the
        ``_autodiscover._tcp`` SRV, and with ``probe_address`` and
        ``probe_ports[443]`` (where HTTPS is served) that what is served for
        each name (SNI) covers it. Default: True.

    tlsa_ports
        Ports whose TLSA records (``_<port>._tcp.<hostname>``) are checked.
        Default: none.

    certs
        ``{deployed: <cert file>, candidate: <cert file>}`` to match the
        TLSA records against.

    probe_address, probe_ports
        Where to fetch the served certificate for a TLSA port (``{25:
        2525}`` when it is mapped elsewhere). Default: not fetched.

    probe_addresses
        Fetch the certificate served on each TLSA port from every address
        of ``hostname`` and match it: ``True`` connects to each address, a
        mapping connects to ``mapping[address]`` instead (NAT, tests). A host
        serving a stale certificate on one address fails that row.

    nameservers, dns_port, timeout, dnssec
        The resolver (default: the system's), and whether to require the AD
        bit on the TLSA answers.

    key_kept
        Whether the source's next renewal keeps the key (``certsync_source.renewal``;
        the formula passes ``certsync:source:reuse_key``). Each TLSA port gets
        a ``rollover`` row: it passes with current + next ``3 1 1`` records,
        ``3 1 1`` + a ``2 1 1`` of the issuing intermediate, or a lone
        ``3 1 1`` when the key is kept; a lone ``3 1 1`` fails when
        ``key_kept`` is False. Default: unknown (passes, with a note).

    tls_rpt
        Check ``_smtp._tls.<domain>`` (RFC 8460): exactly one ``v=TLSRPTv1``
        record whose ``rua=`` URIs are ``mailto:`` or ``https:``.

    caa, caa_issuer
        Check the CAA records relevant to ``hostname`` (RFC 8659: the first
        set found climbing towards the organisational domain) let the CA of
        the deployed certificate issue (``issuewild`` for a wildcard), mark
        no unknown property critical, and have ``iodef`` URIs that parse; no
        CAA at all passes with a note. The CA's CAA domain is ``caa_issuer``,
        or known from the deployed certificate's issuer (Let's Encrypt:
        ``letsencrypt.org``).

    mta_sts, ca_file
        Check MTA-STS (RFC 8461): exactly one ``v=STSv1`` TXT record at
        ``_mta-sts.<domain>`` with an ``id``; the policy fetched from
        ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` with the
        certificate verified (against ``ca_file``, default the system's CAs;
        no redirect, ``text/plain``, at most 64 KiB): ``version: STSv1``, a
        ``mode``, ``max_age`` up to a year, ``mx`` patterns covering every MX
        host and none matching no MX; and that the certificate served for
        ``mta-sts.<domain>`` covers it. Fetched from ``probe_address`` and
        ``probe_ports[443]`` when given, else from the name's address.

    DMARC alignment and report authorisation use the organisational domain
    from the Public Suffix List (the ``publicsuffixlist`` package). The rows
    come from the table ``CHECKS`` (one function and one line per check) and
    the options from ``OPTIONS`` (``maildns.audit_options`` lists them).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host maildns.audit example.com mail.example.com \\
            dkim_selectors='[dkim]' dmarc_policy=reject tlsa_ports='[25]' \\
            tls_rpt=True caa=True
    """
    options = {key: value for key, value in options.items() if not key.startswith("__")}
    run = _Audit(domain, hostname, options)
    rows = []
    for _, option, check in CHECKS:
        if option is None or run.options[option]:
            rows += check(run)
    failed = sum(row["result"] == "fail" for row in rows)
    errors = sum(row["result"] == "error" for row in rows)
    if failed or errors:
        __context__["retcode"] = 1
    return {
        "ok": not failed and not errors,
        "failed": failed,
        "errors": errors,
        "rows": rows,
        "stale_tlsa": run.stale,
    }


def _probe_port(probe, port):
    ports = probe["ports"]
    return ports.get(port) or ports.get(str(port))


def _mx_hosts(lk, domain):
    """The MX hosts of ``domain`` (none when the lookup failed: the MX row says so)."""
    try:
        return sorted({_name(rd.exchange) for rd in lk.get(domain, "MX")[0]} - {""})
    except _LookupFailed:
        return []


def _host_rows(lk, hostname, addresses):
    """A and AAAA of a mail host, and each address's PTR (a failed lookup: its own row)."""
    try:
        rows, found = _check_addresses(lk, hostname, addresses)
    except _LookupFailed as exc:
        return [_error_row(f"A/AAAA {hostname}", exc)]
    for address in found:
        rows += _guarded(f"PTR {address}", _check_ptr, lk, hostname, [address])
    return rows


def _sender_rows(lk, domain, accept, selectors, dmarc_policy, relay):
    """SPF, DKIM per selector, DMARC (aligned with the relay's return path), its CNAME."""
    rows = _guarded(f"SPF {domain}", _check_spf, lk, domain, accept)
    dkim_rows = []
    for selector in selectors:
        name = f"{selector}._domainkey.{domain}"
        dkim_rows += _guarded(f"DKIM {name}", _check_dkim, lk, domain, selector)
    rows += dkim_rows
    dkim_ok = any(row["result"] == "pass" for row in dkim_rows)
    envelope = relay["name"] if relay else domain
    rows += _guarded(
        f"DMARC _dmarc.{domain}", _check_dmarc, lk, domain, dmarc_policy, dkim_ok, envelope
    )
    if relay:
        rows += _guarded(
            f"CNAME {relay['name']}",
            _check_cname,
            lk,
            relay["name"],
            relay["target"],
            "the relay's bounces need it",
        )
    return rows


def _tlsa_rows(hostname, port, certs, probe, resolver_args, key_kept):
    """The TLSA rows of one port and its stale records (a failed lookup: one error row)."""
    served = (probe["address"], _probe_port(probe, port), probe["timeout"])
    name = _tlsa_name(hostname, port, "tcp")
    try:
        rows, check = _check_tlsa(hostname, port, certs, served, resolver_args, key_kept)
    except _LookupFailed as exc:
        return [_error_row(f"TLSA {name}", exc)], []
    except _Bogus as exc:
        return [_row(f"TLSA {name} DNSSEC", "records that validate", "bogus", False, str(exc))], []
    return rows, [r["record"] for r in check["records"] if not r["matches"]]


def spf(domain, nameservers=None, dns_port=53, timeout=DEFAULT_TIMEOUT):
    """
    The SPF policy of ``domain``: the record, how it ends, its DNS lookups
    and void lookups counted through ``include`` and ``redirect``, and what
    is wrong with it.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host maildns.spf example.com
    """
    lk = _lookup(nameservers, dns_port, timeout)
    domain = _dns_name(domain, "domain")
    walk = _SpfWalk(lk)
    ending = walk.walk(domain)
    records = _spf_records(lk.txt(domain)[0])
    return {
        "record": records[0] if len(records) == 1 else None,
        "all": ending,
        "lookups": walk.lookups,
        "void_lookups": walk.voids,
        "problems": walk.problems,
        "notes": walk.notes,
    }


def dmarc(domain, nameservers=None, dns_port=53, timeout=DEFAULT_TIMEOUT):
    """
    The DMARC record of ``domain``, its tags (policy, alignment modes, report
    addresses), or an error naming what does not parse.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host maildns.dmarc example.com
    """
    name = f"_dmarc.{_dns_name(domain, 'domain')}"
    texts = [
        t
        for t in _lookup(nameservers, dns_port, timeout).txt(name)[0]
        if t.lower().startswith("v=dmarc1")
    ]
    if len(texts) != 1:
        raise CommandExecutionError(f"{name} has {len(texts)} v=DMARC1 records, not one")
    try:
        tags = _dmarc_tags(texts[0], name)
    except ValueError as exc:
        raise CommandExecutionError(str(exc)) from None
    return {"record": texts[0], "tags": tags, "report_to": _report_domains(tags)}


def dkim(domain, selector, nameservers=None, dns_port=53, timeout=DEFAULT_TIMEOUT):
    """
    The DKIM key of ``selector`` for ``domain``: key type and size, and the
    CNAME chain when the selector is delegated; an error says what is wrong.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host maildns.dkim example.com dkim
    """
    name = f"{_selector_list([selector])[0]}._domainkey.{_dns_name(domain, 'domain')}"
    texts, chain, status = _lookup(nameservers, dns_port, timeout).txt(name)
    if len(texts) != 1:
        raise CommandExecutionError(
            f"{name} has {len(texts)} TXT records ({status}), not one"
            + (f"; CNAME chain: {' -> '.join(chain)}" if chain else "")
        )
    try:
        return {"name": name, "cname": chain, **_dkim_key(texts[0], name)}
    except ValueError as exc:
        raise CommandExecutionError(str(exc)) from None
