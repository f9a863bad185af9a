"""
HAProxy's runtime API: a certificate replaced with no reload
=============================================================

HAProxy 2.1 and later take a new certificate on their admin socket: ``set
ssl cert <crt> <<`` with the PEM (certificate, chain and key, as a ``crt``
file holds them) opens a transaction, ``commit ssl cert <crt>`` applies it to
every ``bind`` that loads that file, and ``show ssl cert <crt>`` says what is
loaded. No process is reloaded and no connection is cut. Only a ``crt`` the
configuration loads can be replaced, and the change lives in memory: write
the file too, so that a restart keeps it. Debian's haproxy.cfg opens the
socket at ``/run/haproxy/admin.sock`` with ``level admin``.

The PEM sent holds the private key: it is read from a file, sent on the
socket only, and never appears in a return, an error or a log line. What
HAProxy answers is escaped and cut before it is shown.
"""

import logging
import os
import re
import socket
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "certsync_haproxy"

#: Seconds one exchange on the socket may take, all reads and writes together.
TIMEOUT = 10
#: The longest answer read: ``show ssl cert`` of one file is under 1 KiB.
MAX_ANSWER = 256 * 1024
#: What ``show ssl cert <crt>`` prints, by the names this module returns them under.
_FIELDS = {
    "Filename": "filename",
    "Status": "status",
    "Serial": "serial",
    "notBefore": "not_before",
    "notAfter": "not_after",
    "Subject Alternative Name": "sans",
    "Algorithm": "algorithm",
    "SHA1 FingerPrint": "sha1_fingerprint",
    "Subject": "subject",
    "Issuer": "issuer",
}
_PEM_BLOCK = re.compile(r"-----BEGIN [^-]*-----.*?(-----END [^-]*-----|\Z)", re.DOTALL)


def __virtual__():
    for needed in ("certsync_pem.read_file", "certsync_args.seconds"):
        if needed not in __utils__:
            util = needed.split(".")[0]
            return (False, f"certsync_haproxy needs salt://_utils/{util}.py: saltutil.sync_all")
    return __virtualname__


def _path(value, what):
    """An absolute path with no whitespace or control character: the runtime API
    splits its commands on spaces, and a newline would end one."""
    if not isinstance(value, str) or not os.path.isabs(value) or re.search(r"[\s\x00-\x1f]", value):
        raise SaltInvocationError(
            f"{what} must be an absolute path without spaces or control characters, "
            f"not {repr(value)[:200]}"
        )
    return value


def _shown(answer):
    """HAProxy's answer for a message: no PEM block, one line, bounded, escaped."""
    text = _PEM_BLOCK.sub("[PEM]", answer).strip()
    return __utils__["certsync_pem.shown"](" / ".join(text.splitlines()), 300)


def _ask(socket_path, command, payload=None, timeout=TIMEOUT):
    """One command on the admin socket (one per connection, as HAProxy's
    non-interactive mode takes them), and its whole answer."""
    deadline = time.monotonic() + timeout
    data = command.encode() + (b" <<\n" + payload.rstrip(b"\n") + b"\n\n" if payload else b"\n")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(socket_path)
        conn.sendall(data)
        answer = b""
        while len(answer) <= MAX_ANSWER:
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    except (TimeoutError, OSError) as exc:
        why = "no answer in time" if isinstance(exc, socket.timeout) else exc.strerror or exc
        raise CommandExecutionError(f"{socket_path}: HAProxy's admin socket: {why}") from None
    finally:
        conn.close()
    if len(answer) > MAX_ANSWER:
        raise CommandExecutionError(f"{socket_path}: an answer longer than {MAX_ANSWER} bytes")
    return answer.decode("utf-8", "replace")


def _timeout(timeout):
    return __utils__["certsync_args.seconds"](timeout, "timeout", 300)


def certificates(socket_path="/run/haproxy/admin.sock", timeout=TIMEOUT):
    """
    The ``crt`` files HAProxy has loaded (``show ssl cert``); a file with a
    transaction open on it is listed under ``transactions``.

    CLI Example:

    .. code-block:: bash

        salt haproxy-host certsync_haproxy.certificates /run/haproxy/admin.sock
    """
    answer = _ask(_path(socket_path, "socket_path"), "show ssl cert", timeout=_timeout(timeout))
    found, section = {"files": [], "transactions": []}, None
    for line in answer.splitlines():
        if line.startswith("# "):
            section = {"# filename": "files", "# transaction": "transactions"}.get(line.strip())
        elif line.strip() and section:
            found[section].append(line.strip().lstrip("*"))
    return found


def show(crt, socket_path="/run/haproxy/admin.sock", timeout=TIMEOUT):
    """
    What HAProxy has loaded for ``crt`` (``show ssl cert <crt>``): its
    ``status``, ``serial``, dates, ``sans``, ``subject``, ``issuer`` and
    ``sha1_fingerprint`` (lower-case hex, as certsync writes fingerprints).

    CLI Example:

    .. code-block:: bash

        salt haproxy-host certsync_haproxy.show /etc/haproxy/certs/mail.pem
    """
    crt = _path(crt, "crt")
    answer = _ask(
        _path(socket_path, "socket_path"), f"show ssl cert {crt}", None, _timeout(timeout)
    )
    shown = {}
    for line in answer.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in _FIELDS:
            shown[_FIELDS[key]] = value.strip()
    if shown.get("filename") != crt or "sha1_fingerprint" not in shown:
        raise CommandExecutionError(f"HAProxy shows no certificate {crt}: {_shown(answer)}")
    shown["sha1_fingerprint"] = shown["sha1_fingerprint"].lower()
    shown["sans"] = [n.removeprefix("DNS:") for n in shown.get("sans", "").split(", ") if n]
    return shown


def _combined(pem_file):
    """The PEM to send (certificates then the key, as HAProxy's ``crt`` reads it) and the
    SHA-1 of its leaf; refused unless it holds certificates and the key that matches."""
    pem = __utils__  # the certificate library, salt://_utils/certsync_pem.py
    data = pem["certsync_pem.read_file"](pem_file)
    blocks = pem["certsync_pem.pem_blocks"](data, pem_file)
    certs = pem["certsync_pem.load_certs"](blocks, pem_file)
    if not certs or not pem["certsync_pem.has_key_block"](blocks):
        raise CommandExecutionError(
            f"{pem['certsync_pem.shown'](pem_file)}: HAProxy takes one PEM with the certificate, "
            "its chain and the key; this file lacks the certificate or the key"
        )
    key = pem["certsync_pem.load_key"](blocks, pem_file)  # the bytes sent, not a new read
    if not pem["certsync_pem.same_key"](key.public_key(), certs[0].public_key()):
        raise CommandExecutionError(
            f"{pem['certsync_pem.shown'](pem_file)}: the key does not match the certificate"
        )
    return data, pem["certsync_pem.sha1_fingerprint"](certs[0])


def update(crt, pem_file, socket_path="/run/haproxy/admin.sock", timeout=TIMEOUT, test=False):
    """
    Make HAProxy serve the pair in ``pem_file`` (certificate, chain and key in
    one PEM) for its ``crt`` file ``crt``, with no reload: ``set ssl cert``,
    ``commit ssl cert``, then ``show ssl cert`` to check it took. Nothing is
    sent when HAProxy already has that certificate (``changed`` False). A
    refused step aborts the transaction and raises with HAProxy's answer.
    The ``crt`` file itself is not written (write it too: a restart reads it).

    crt
        The ``crt`` path as HAProxy's configuration names it.

    pem_file
        The PEM to load, read from this minion.

    socket_path
        HAProxy's admin socket (``stats socket ... level admin``). Default:
        ``/run/haproxy/admin.sock``.

    Returns ``changed``, ``crt``, ``sha1_fingerprint`` (what is served now)
    and ``previous`` (what was).

    CLI Example:

    .. code-block:: bash

        salt haproxy-host certsync_haproxy.update /etc/haproxy/certs/mail.pem \\
            /etc/haproxy/certs/mail.pem.new test=True
    """
    crt, socket_path = _path(crt, "crt"), _path(socket_path, "socket_path")
    timeout = _timeout(timeout)
    data, sha1 = _combined(pem_file)
    before = show(crt, socket_path, timeout)["sha1_fingerprint"]
    ret = {"changed": before != sha1, "crt": crt, "sha1_fingerprint": sha1, "previous": before}
    if not ret["changed"] or test:
        return ret
    answer = _ask(socket_path, f"set ssl cert {crt}", data, timeout)
    if "Transaction created" not in answer and "Transaction updated" not in answer:
        _abort(socket_path, crt, timeout)
        raise CommandExecutionError(f"HAProxy refused the certificate for {crt}: {_shown(answer)}")
    answer = _ask(socket_path, f"commit ssl cert {crt}", None, timeout)
    if "Success!" not in answer:
        _abort(socket_path, crt, timeout)
        raise CommandExecutionError(
            f"HAProxy did not commit the certificate for {crt}: {_shown(answer)}"
        )
    now = show(crt, socket_path, timeout)["sha1_fingerprint"]
    if now != sha1:
        raise CommandExecutionError(
            f"HAProxy committed {crt} but shows {now}, not the certificate sent ({sha1})"
        )
    log.info("certsync_haproxy: %s now serves %s (was %s), no reload", crt, sha1, before)
    return ret


def _abort(socket_path, crt, timeout):
    """Drop the transaction a refused step left open (HAProxy keeps one per file)."""
    try:
        _ask(socket_path, f"abort ssl cert {crt}", None, timeout)
    except CommandExecutionError as exc:
        log.warning("certsync_haproxy: could not abort the transaction on %s: %s", crt, exc)
