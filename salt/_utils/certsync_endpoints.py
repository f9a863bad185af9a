"""
The mail endpoints certsync knows
=================================

One row per endpoint type: its default port, the exchange the probe has
before the TLS handshake (``implicit``: none), the ``mailcow.conf`` key that
publishes its port, and the mailcow compose service that serves it. The
``tlsprobe``, ``mailcow``, ``maildns`` and ``certsync_deploy`` modules read
this table through ``__utils__``; a new endpoint type is one row here (and,
when its protocol starts TLS some new way, one handshake in ``tlsprobe``).
"""

#: name, default port, handshake, mailcow.conf key, compose service
_ROWS = (
    ("smtp", 25, "smtp", "SMTP_PORT", "postfix-mailcow"),
    ("submission", 587, "smtp", "SUBMISSION_PORT", "postfix-mailcow"),
    ("smtps", 465, "implicit", "SMTPS_PORT", "postfix-mailcow"),
    ("imap", 143, "imap", "IMAP_PORT", "dovecot-mailcow"),
    ("imaps", 993, "implicit", "IMAPS_PORT", "dovecot-mailcow"),
    ("pop3", 110, "pop3", "POP_PORT", "dovecot-mailcow"),
    ("pop3s", 995, "implicit", "POPS_PORT", "dovecot-mailcow"),
    ("sieve", 4190, "sieve", "SIEVE_PORT", "dovecot-mailcow"),
    ("https", 443, "implicit", "HTTPS_PORT", "nginx-mailcow"),
)
_FIELDS = ("port", "handshake", "conf_key", "service")


def table():
    """``{name: {port, handshake, conf_key, service}}`` for every endpoint type, in order."""
    return {row[0]: dict(zip(_FIELDS, row[1:], strict=True)) for row in _ROWS}


def by_port(port):
    """The endpoint type whose default port is ``port``, or None."""
    return next((row[0] for row in _ROWS if row[1] == port), None)
