"""
What a mail client sees: the certificate served on the wire
==========================================================

:depends: cryptography >= 42

Connects like a client would (implicit TLS, or STARTTLS over SMTP, IMAP,
POP3 and ManageSieve with the standard library's ``smtplib``, ``imaplib``
and ``poplib``), with SNI, bounded timeouts and probes run concurrently, and
reports the certificate chain as the server sent it. The file on disk is not
the truth; this is.

Endpoints are named by protocol, each with its usual port:

===============  ======  ===========================
protocol         port    TLS
===============  ======  ===========================
``smtp``         25      STARTTLS
``submission``   587     STARTTLS
``smtps``        465     implicit
``imap``         143     STARTTLS
``imaps``        993     implicit
``pop3``         110     STARTTLS
``pop3s``        995     implicit
``sieve``        4190    STARTTLS (ManageSieve)
``https``        443     implicit
===============  ======  ===========================

``endpoints`` is a list of protocol names (usual ports), a list of
``protocol:port`` strings, or a mapping of protocol to a port or to
``"address:port"`` (mailcow.conf's ``SMTP_PORT=192.0.2.1:25`` form), which
then overrides ``address`` for that endpoint.

``probe`` and ``wait_for`` take ``names``: the SNI names to try on every
endpoint (``""`` for a handshake without SNI, which gets the server's default
certificate), so that per-name certificates are checked too.
"""

import concurrent.futures
import contextvars
import imaplib
import ipaddress
import poplib
import re
import smtplib
import socket
import ssl
import time

from salt.exceptions import SaltInvocationError

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import verification

    HAS_CRYPTOGRAPHY = hasattr(x509.Certificate, "not_valid_after_utc")
except ImportError:
    HAS_CRYPTOGRAPHY = False

__virtualname__ = "tlsprobe"

DEFAULT_TIMEOUT = 10
#: wait_for's first pause between rounds (seconds); it doubles up to ``interval``.
FIRST_PAUSE = 0.1
#: ManageSieve greeting limits: a server that talks longer is not one.
SIEVE_MAX_LINES = 64
SIEVE_MAX_LINE = 1024
PROBE_CLIENT_NAME = "certsync-probe.invalid"
_SNI_NAME = re.compile(r"(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{1,63}")


def __virtual__():
    if not HAS_CRYPTOGRAPHY:
        return (False, "tlsprobe needs the cryptography library, release 42 or newer")
    if "certsync_pem.spki_sha256" not in __utils__:
        return (False, "tlsprobe needs salt://_utils/certsync_pem.py: saltutil.sync_all")
    if "certsync_endpoints.table" not in __utils__:
        return (False, "tlsprobe needs salt://_utils/certsync_endpoints.py: saltutil.sync_all")
    return __virtualname__


def _protocols():
    """The endpoint types (``certsync_endpoints``): name -> port, handshake, ..."""
    return __utils__["certsync_endpoints.table"]()


class _SNIContext(ssl.SSLContext):
    """A client context that always sends ``sni``, whatever host the caller dialled."""

    sni = None

    def wrap_socket(self, sock, *args, **kwargs):
        kwargs["server_hostname"] = self.sni
        return super().wrap_socket(sock, *args, **kwargs)


def _context(sni):
    context = _SNIContext(ssl.PROTOCOL_TLS_CLIENT)
    context.sni = sni
    # Fetch whatever is served; trust is judged afterwards, on the chain as sent.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class ProbeError(Exception):
    """The endpoint did not give us a TLS session; the message says why."""


def _implicit(address, port, context, timeout):
    sock = socket.create_connection((address, port), timeout=timeout)
    try:
        return context.wrap_socket(sock)
    except BaseException:
        sock.close()
        raise


def _smtp(address, port, context, timeout):
    client = smtplib.SMTP(timeout=timeout, local_hostname=PROBE_CLIENT_NAME)
    try:
        client.connect(address, port)
        client.ehlo()
        if not client.has_extn("starttls"):
            raise ProbeError("the server does not offer STARTTLS")
        code, message = client.docmd("STARTTLS")
        if code != 220:
            raise ProbeError(f"STARTTLS refused: {code} {message.decode(errors='replace')}")
        return context.wrap_socket(client.sock)
    except BaseException:
        client.close()
        raise


def _imap(address, port, context, timeout):
    # The greeting is read here: a `* BYE` (dovecot reloading) raises IMAP4.error,
    # which fetch reports as an unsuccessful probe.
    client = imaplib.IMAP4(address, port, timeout=timeout)
    try:
        if "STARTTLS" not in client.capabilities:
            raise ProbeError("the server does not offer STARTTLS")
        typ, data = client._simple_command("STARTTLS")
        if typ != "OK":
            raise ProbeError(f"STARTTLS refused: {typ} {data}")
        return context.wrap_socket(client.sock)
    except imaplib.IMAP4.error as exc:
        client.shutdown()
        raise ProbeError(f"STARTTLS refused: {exc}") from None
    except BaseException:
        client.shutdown()
        raise


def _pop3(address, port, context, timeout):
    client = poplib.POP3(address, port, timeout=timeout)
    try:
        client.stls(context=context)
        return client.sock
    except poplib.error_proto as exc:
        client.close()
        raise ProbeError(f"STLS refused: {exc}") from None
    except BaseException:
        client.close()
        raise


def _sieve_lines(reader):
    """Read ManageSieve lines up to the OK/NO/BYE that ends a response."""
    for _ in range(SIEVE_MAX_LINES):
        line = reader.readline(SIEVE_MAX_LINE)
        if not line:
            raise ProbeError("the server closed the connection")
        text = line.decode("utf-8", "replace").strip()
        yield text
        if text.split(" ", 1)[0].upper() in ("OK", "NO", "BYE"):
            return
    raise ProbeError("the server's response is too long for ManageSieve")


def _sieve(address, port, context, timeout):
    sock = socket.create_connection((address, port), timeout=timeout)
    try:
        reader = sock.makefile("rb")
        greeting = list(_sieve_lines(reader))
        if not greeting[-1].upper().startswith("OK"):
            raise ProbeError(f"unexpected ManageSieve greeting: {greeting[-1]}")
        if '"STARTTLS"' not in (line.upper() for line in greeting):
            raise ProbeError("the server does not offer STARTTLS")
        sock.sendall(b"STARTTLS\r\n")
        (reply,) = list(_sieve_lines(reader))[-1:]
        if not reply.upper().startswith("OK"):
            raise ProbeError(f"STARTTLS refused: {reply}")
        reader.close()
        return context.wrap_socket(sock)
    except BaseException:
        sock.close()
        raise


_HANDSHAKES = {"implicit": _implicit, "smtp": _smtp, "imap": _imap, "pop3": _pop3, "sieve": _sieve}
#: Everything a server's greeting, protocol or TLS handshake can raise: a failed probe.
PROBE_FAILURES = (
    OSError,  # refused, reset, timed out, ssl.SSLError
    EOFError,
    ValueError,  # UnicodeError included
    smtplib.SMTPException,
    imaplib.IMAP4.error,  # a `* BYE` or NO greeting, a broken response
    poplib.error_proto,
)


def _chain_der(tls):
    """The certificates as the server sent them, leaf first."""
    chain = getattr(tls, "get_unverified_chain", None) or getattr(
        tls._sslobj, "get_unverified_chain", None
    )
    if chain is None:  # Python < 3.10: the leaf only
        return [tls.getpeercert(binary_form=True)]
    return [cert.public_bytes(ssl._ssl.ENCODING_DER) for cert in chain()]


def _verify(certs, sni, ca_file):
    with open(ca_file, "rb") as handle:
        roots = x509.load_pem_x509_certificates(handle.read())
    try:
        (
            verification.PolicyBuilder()
            .store(verification.Store(roots))
            .build_server_verifier(x509.DNSName(sni))
            .verify(certs[0], certs[1:])
        )
    except verification.VerificationError as exc:
        return False, str(exc)
    return True, None


def _describe(tls, sni, ca_file, pem):
    certs = [x509.load_der_x509_certificate(der) for der in _chain_der(tls)]
    leaf = certs[0]
    try:
        sans = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        sans = []
    ret = {
        "fingerprint": leaf.fingerprint(hashes.SHA256()).hex(),
        "spki_sha256": __utils__["certsync_pem.spki_sha256"](leaf.public_key()),
        "subject": leaf.subject.rfc4514_string(),
        "sans": sans,
        "not_after": __utils__["certsync_pem.iso"](leaf.not_valid_after_utc),
        "chain": [
            {
                "subject": c.subject.rfc4514_string(),
                "fingerprint": c.fingerprint(hashes.SHA256()).hex(),
            }
            for c in certs
        ],
        "tls_version": tls.version(),
        "cipher": tls.cipher()[0],
    }
    if ca_file:
        ret["verified"], ret["verify_error"] = _verify(certs, sni, ca_file)
    if pem:
        ret["chain_pem"] = "".join(
            c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs
        )
    return ret


def _endpoint_list(endpoints):
    """Normalise ``endpoints`` to a list of (protocol, port, address or None)."""
    protocols = _protocols()
    if endpoints is None:
        endpoints = list(protocols)
    if isinstance(endpoints, str):
        endpoints = [item.strip() for item in endpoints.split(",") if item.strip()]
    if isinstance(endpoints, dict):
        items = list(endpoints.items())
    else:
        items = []
        for item in endpoints:
            name, _, port = str(item).partition(":")
            items.append((name, port or None))
    result = []
    for name, given in items:
        if name not in protocols:
            raise SaltInvocationError(f"unknown protocol {name!r}; known: {', '.join(protocols)}")
        address, port = _address_port(name, given, protocols[name]["port"])
        result.append((name, port, address))
    if not result:
        raise SaltInvocationError("no endpoint to probe")
    return result


def endpoint_list(endpoints=None):
    """
    Check and normalise ``endpoints`` (see the module's docs) without probing:
    ``[[protocol, port, address or None], ...]``. A bad one is an error naming it.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host tlsprobe.endpoint_list '{smtp: "127.0.0.1:2525", imaps: 993}'
    """
    return [list(item) for item in _endpoint_list(endpoints)]


def _address_port(name, given, default_port=None):
    """(address or None, port) of one endpoint's ``port`` or ``"address:port"``."""
    if given is None:
        return None, default_port
    address, _, port = str(given).rpartition(":")
    if address:
        try:
            address = str(ipaddress.ip_address(address.strip("[]")))
        except ValueError:
            raise SaltInvocationError(
                f"address of {name} must be an IP address, not {address!r}"
            ) from None
    try:
        port = int(port)
    except ValueError:
        raise SaltInvocationError(f"port of {name} must be a number, not {given!r}") from None
    if not 0 < port < 65536:
        raise SaltInvocationError(f"port of {name} out of range: {port}")
    return address or None, port


def _check_timeout(timeout):
    return __utils__["certsync_args.seconds"](timeout, "timeout", 300)


def fetch(
    hostname,
    protocol="imaps",
    port=None,
    address=None,
    timeout=DEFAULT_TIMEOUT,
    ca_file=None,
    pem=False,
    sni=None,
):
    """
    Fetch the certificate served by one endpoint.

    hostname
        The name sent as SNI (and checked when ``ca_file`` is given).

    sni
        Another name to send as SNI, or ``""`` for none (the server's default
        certificate). Default: ``hostname``.

    protocol
        One of smtp, submission, smtps, imap, imaps, pop3, pop3s, sieve,
        https. Default: imaps.

    port
        Default: the protocol's usual port.

    address
        Where to connect. Default: ``hostname``.

    timeout
        Seconds for the connection and each exchange. Default: 10.

    ca_file
        PEM bundle of trusted roots: when given, report whether the chain as
        sent verifies for ``hostname``.

    pem
        Also return the chain as sent, as PEM text (``chain_pem``), e.g. to
        match it against TLSA records. Default: False.

    Returns ``ok`` with the leaf's fingerprint, SPKI SHA-256, SANs,
    ``not_after``, the chain as sent, TLS version and cipher; or ``ok: False``
    with ``error``.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host tlsprobe.fetch mail.example.com smtp address=127.0.0.1
    """
    ((protocol, port, given_address),) = _endpoint_list({protocol: port} if port else [protocol])
    timeout = _check_timeout(timeout)
    address = given_address or address or hostname
    sni = hostname if sni is None else (sni or None)
    kind = _protocols()[protocol]["handshake"]
    ret = {"protocol": protocol, "address": address, "port": port, "sni": sni}
    start = time.monotonic()
    try:
        tls = _HANDSHAKES[kind](address, port, _context(sni), timeout)
        try:
            ret.update(_describe(tls, sni or hostname, ca_file, pem))
        finally:
            tls.close()
        ret["ok"] = True
    except ProbeError as exc:
        ret.update(ok=False, error=str(exc)[:500])
    except PROBE_FAILURES as exc:
        ret.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:500]}")
    ret["elapsed_ms"] = round((time.monotonic() - start) * 1000, 1)
    return ret


def probe(
    hostname,
    endpoints=None,
    address=None,
    timeout=DEFAULT_TIMEOUT,
    ca_file=None,
    workers=None,
    names=None,
):
    """
    Probe several endpoints concurrently (see :py:func:`fetch`) and return
    their results by protocol. Exits non-zero on the CLI when one fails.

    endpoints
        Protocol names, ``protocol:port`` strings or a mapping of protocol to
        a port or ``"address:port"``. Default: all nine protocols on their
        usual ports.

    workers
        Probes run at once. Default: all of them; 1 probes one by one.

    names
        SNI names to probe every endpoint with (``""``: no SNI). The results
        are then keyed ``<protocol>/<name>`` (``<protocol>/-`` without SNI).
        Default: ``hostname`` only, keyed by protocol.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host tlsprobe.probe mail.example.com endpoints=imaps,smtp,https
    """
    results = _run_probes(
        hostname, _probe_plan(endpoints, names), address, timeout, ca_file, workers
    )
    if not all(result["ok"] for result in results.values()):
        __context__["retcode"] = 1
    return results


def _probe_plan(endpoints, names):
    """{result key: (protocol, port or "address:port", SNI)} for every endpoint and name."""
    plan = {}
    for name, port, own_address in _endpoint_list(endpoints):
        for sni in _sni_names(names):
            key = name if sni is None else f"{name}/{sni or '-'}"
            plan[key] = (name, f"{own_address}:{port}" if own_address else port, sni)
    return plan


def _run_probes(hostname, plan, address, timeout, ca_file=None, workers=None):
    """Run the probes of ``plan`` concurrently: {result key: fetch result}. Each
    runs in a copy of this call's context: the loader's dunders (``__utils__``)
    live in context variables, which a pool's thread does not inherit."""
    workers = int(workers or len(plan))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {
            key: pool.submit(
                contextvars.copy_context().run,
                fetch,
                hostname,
                name,
                port,
                address,
                timeout,
                ca_file,
                False,
                sni,
            )
            for key, (name, port, sni) in plan.items()
        }
        return {key: future.result() for key, future in futures.items()}


def _sni_names(names):
    """The SNI names to probe with: [None] (the hostname) by default."""
    if names is None:
        return [None]
    if isinstance(names, str):
        names = names.split(",")
    if not isinstance(names, (list, tuple)) or not names:
        raise SaltInvocationError("names must be a non-empty list of SNI names")
    checked = [str(name).strip().lower() for name in names]
    for name in checked:
        if name and not _SNI_NAME.fullmatch(name):
            raise SaltInvocationError(f"SNI name {name[:80]!r} is not a DNS name")
    return list(dict.fromkeys(checked))


def wait_for(
    hostname,
    fingerprint,
    endpoints=None,
    address=None,
    timeout=60,
    interval=1,
    probe_timeout=5,
    names=None,
):
    """
    Probe ``endpoints`` (for each of ``names``, see :py:func:`probe`) until
    every one serves ``fingerprint`` or ``timeout`` seconds pass. Each round
    probes only what did not serve ``fingerprint`` yet, after a pause that
    starts at 0.1 s and doubles up to ``interval`` seconds (a reloaded service
    usually serves its new certificate within a fraction of a second).

    Every endpoint is probed with ``hostname`` first (when it is one of
    ``names``); the other names only once all serve ``fingerprint`` for
    ``hostname``: just after a reload the services are starting new
    processes, and nine handshakes leave them the CPU that a burst of one per
    endpoint and name would take. When ``hostname`` is not served everywhere
    in time, the other names are reported as not probed.

    Returns ``ok``, the rounds and seconds it took, the probes made, and the
    last probe of every endpoint.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host tlsprobe.wait_for mail.example.com 5f1c...e2 timeout=30
    """
    timeout = _check_timeout(timeout)
    interval = max(FIRST_PAUSE, float(interval))
    plan = _probe_plan(endpoints, names)
    start = time.monotonic()
    deadline = start + timeout
    due, later = _stages(plan, hostname)
    max_rounds = _max_rounds(timeout, interval)
    results, rounds, probes, pause = {}, 0, 0, FIRST_PAUSE
    while True:
        rounds += 1
        probes += len(due)
        results.update(_run_probes(hostname, due, address, min(probe_timeout, timeout)))
        due = {k: v for k, v in due.items() if results[k].get("fingerprint") != fingerprint}
        wait = pause
        if not due and later:  # the round on the other names: no pause, not counted
            due, later, wait, max_rounds = later, {}, 0, max_rounds + 1
        if not due or rounds >= max_rounds or time.monotonic() + wait > deadline:
            break
        if wait:
            time.sleep(pause)
            pause = min(interval, pause * 2)
    for key, (protocol, port, sni) in plan.items():
        if key not in results:
            results[key] = _not_probed(hostname, protocol, port, sni, address)
    ok = all(results[key].get("fingerprint") == fingerprint for key in plan)
    __context__.pop("retcode", None)
    if not ok:
        __context__["retcode"] = 1
    return {
        "ok": ok,
        "rounds": rounds,
        "probes": probes,
        "seconds": round(time.monotonic() - start, 2),
        "served": {key: results[key] for key in plan},
    }


def _stages(plan, hostname):
    """``plan`` split in two: each endpoint with ``hostname`` (or with all its names
    when ``hostname`` is not one of them), then the other names."""
    own = (None, hostname.lower())
    primary = {name for name, _, sni in plan.values() if sni in own}
    first = {k: v for k, v in plan.items() if v[0] not in primary or v[2] in own}
    return first, {k: v for k, v in plan.items() if k not in first}


def _not_probed(hostname, protocol, port, sni, address):
    own_address, own_port = _address_port(protocol, port)
    return {
        "protocol": protocol,
        "address": own_address or address or hostname,
        "port": own_port,
        "sni": sni,
        "ok": False,
        "probed": False,
        "error": f"not probed: {hostname} was not served on every endpoint yet",
    }


def _max_rounds(timeout, interval):
    """Rounds that fit in ``timeout`` with pauses from FIRST_PAUSE doubling to ``interval``."""
    rounds, pause, spent = 1, FIRST_PAUSE, 0.0
    while spent + pause <= timeout:
        rounds, spent, pause = rounds + 1, spent + pause, min(interval, pause * 2)
    return rounds
