"""
Can this host reach what it needs? Outbound checks for a mail server
====================================================================

A mail host whose firewall denies outbound traffic by default needs allow
rules for its smarthost and for its Salt master. :py:func:`check` tries each
from this host, as postfix and the minion would:

- the relay (``host:port``): a TCP connection to each of its addresses, the
  SMTP greeting, ``EHLO`` and ``STARTTLS``, and a TLS handshake whose
  certificate is verified for ``host`` (the system's CAs, or ``cafile``);
- the Salt master: a TCP connection to its publish and return ports
  (``publish_port``, ``master_port``; 4505 and 4506 by default).

Each check that fails names why (refused, timed out: dropped by a firewall?,
no STARTTLS, certificate not verified) and the rule that would let it
through, as the formula's ``certsync.egress`` state manages it: ufw's when
ufw is active on this host, else nftables' (chain ``output`` of table
``inet filter``).
"""

import re
import smtplib
import socket
import ssl

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync_egress"

DEFAULT_TIMEOUT = 5
CLIENT_NAME = "certsync-egress.invalid"


def __virtual__():
    if "certsync_args.seconds" not in __utils__:
        return (False, "certsync_egress needs salt://_utils/certsync_args.py: saltutil.sync_all")
    return __virtualname__


def _host_port(value, name):
    text = str(value or "").strip()
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    ascii_port = re.fullmatch(r"[0-9]{1,5}", port)
    if not host or not ascii_port or not 0 < int(port) < 65536 or " " in host:
        raise SaltInvocationError(f"{name} must be 'host:port', not {value!r}")
    return host, int(port)


def _timeout(value):
    return __utils__["certsync_args.seconds"](value, "timeout", 60)


def _addresses(host, port, given):
    """The IP addresses to try: ``given``, or every address ``host`` resolves to."""
    if given:
        return [str(a) for a in (given if isinstance(given, list) else [given])], None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return [], f"{host} does not resolve: {exc}"
    return list(dict.fromkeys(info[4][0] for info in infos)), None


def _ufw_active():
    """Whether ufw is this host's firewall (asked once per run)."""
    if "certsync_egress.ufw" not in __context__:
        try:
            active = "certsync_ufw.active" in __salt__ and __salt__["certsync_ufw.active"]()
        except CommandExecutionError:
            active = False  # ufw there but failing: the nftables hint, as before
        __context__["certsync_egress.ufw"] = active
    return __context__["certsync_egress.ufw"]


def _rule(address, port):
    """The rule that allows TCP to ``address:port``: ufw's when ufw is this host's
    firewall, else nftables' (``inet filter output``)."""
    if _ufw_active():
        return __salt__["certsync_ufw.command"](__salt__["certsync_ufw.rule"](port, address))
    family = "ip6" if ":" in address else "ip"
    return f"nft add rule inet filter output {family} daddr {address} tcp dport {port} accept"


def _connect(address, port, timeout):
    """An open socket, or the reason there is none."""
    try:
        return socket.create_connection((address, port), timeout=timeout), None
    except TimeoutError:
        return None, f"timed out after {timeout:g} s (dropped by a firewall?)"
    except ConnectionRefusedError:
        return None, "connection refused (rejected by a firewall, or nothing listens)"
    except OSError as exc:
        return None, exc.strerror or str(exc)


def _starttls(sock, host, cafile, timeout):
    """SMTP greeting, EHLO, STARTTLS and a verified handshake on ``sock``; None when fine."""
    client = smtplib.SMTP(timeout=timeout, local_hostname=CLIENT_NAME)
    client.sock = sock
    client._host = host  # the name smtplib's STARTTLS verifies the certificate for

    try:
        code, banner = client.getreply()
        if code != 220:
            return f"no SMTP greeting: {code} {banner.decode(errors='replace')[:200]}"
        client.ehlo()
        if not client.has_extn("starttls"):
            return "the relay does not offer STARTTLS"
        context = ssl.create_default_context(cafile=cafile)
        client.starttls(context=context)
        client.ehlo()
        client.quit()
        return None
    except ssl.SSLCertVerificationError as exc:
        return f"the relay's certificate is not verified for {host}: {exc.verify_message}"
    except (OSError, ValueError, smtplib.SMTPException) as exc:
        return f"SMTP/TLS failed: {exc}"
    finally:
        client.close()


def _try(target, host, port, addresses, timeout, starttls=None):
    """One row per address of a target."""
    rows = []
    for address in addresses:
        sock, error = _connect(address, port, timeout)
        if sock is not None and starttls:
            error = starttls(sock)
        elif sock is not None:
            sock.close()
        row = {"target": target, "host": host, "address": address, "port": port}
        row.update(ok=error is None, error=error)
        if error and sock is None:
            row["rule"] = _rule(address, port)
        rows.append(row)
    return rows


def check(
    relay=None,
    master=None,
    master_ports=None,
    relay_address=None,
    cafile=None,
    timeout=DEFAULT_TIMEOUT,
):
    """
    Check this host's way out to the relay and to the Salt master; ``ok`` is
    False (and the exit code non-zero) when any is blocked, and each blocked
    one names why and the rule that would let it through (ufw's when ufw is
    active here, else nftables').

    relay
        The smarthost as ``host:port`` (mailcow's relayhost, e.g.
        ``mail.smtp2go.com:2525``). Skipped when not given.

    master
        The Salt master's address; default: this minion's ``master`` option.
        ``False`` skips it.

    master_ports
        Default: this minion's ``publish_port`` and ``master_port``.

    relay_address
        Connect to this address (or list) instead of those ``host`` resolves
        to; the certificate is still verified for ``host``.

    cafile
        CA bundle to verify the relay against; default: the system's.

    timeout
        Seconds per connection. Default: 5.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_egress.check relay=mail.smtp2go.com:2525
    """
    timeout = _timeout(timeout)
    rows = []
    if relay:
        host, port = _host_port(relay, "relay")
        addresses, error = _addresses(host, port, relay_address)
        if error:
            rows.append(
                {"target": "relay", "host": host, "port": port, "ok": False, "error": error}
            )

        def starttls(sock):
            return _starttls(sock, host, cafile, timeout)

        rows += _try("relay", host, port, addresses, timeout, starttls)
    if master is not False:
        masters = master or __opts__.get("master") or []
        masters = masters if isinstance(masters, list) else [masters]
        ports = master_ports or [
            __opts__.get("publish_port", 4505),
            __opts__.get("master_port", 4506),
        ]
        for name in masters:
            host = str(name).rpartition(":")[0] if str(name).count(":") == 1 else str(name)
            for port in ports:
                addresses, error = _addresses(host, int(port), None)
                if error:
                    rows.append(
                        {
                            "target": "master",
                            "host": host,
                            "port": int(port),
                            "ok": False,
                            "error": error,
                        }
                    )
                rows += _try("master", host, int(port), addresses, timeout)
    ok = all(row["ok"] for row in rows)
    if not ok:
        __context__["retcode"] = 1
    return {"ok": ok, "checks": rows}
