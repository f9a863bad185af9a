"""
The mail endpoints certsync knows
=================================

One row per endpoint type: its default port and the exchange the probe has
before the TLS handshake (``implicit``: none). ``tlsprobe``, ``maildns`` and
the consumer kinds read this table through ``__utils__``; a new endpoint type
is one row here (and, when its protocol starts TLS some new way, one
handshake in ``tlsprobe``). What serves an endpoint on a given host is its
consumer kind's to say.
"""

#: name, default port, handshake
_ROWS = (
    ("smtp", 25, "smtp"),
    ("submission", 587, "smtp"),
    ("smtps", 465, "implicit"),
    ("imap", 143, "imap"),
    ("imaps", 993, "implicit"),
    ("pop3", 110, "pop3"),
    ("pop3s", 995, "implicit"),
    ("sieve", 4190, "sieve"),
    ("https", 443, "implicit"),
)
_FIELDS = ("port", "handshake")


def table():
    """``{name: {port, handshake}}`` for every endpoint type, in order."""
    return {row[0]: dict(zip(_FIELDS, row[1:], strict=True)) for row in _ROWS}


def by_port(port):
    """The endpoint type whose default port is ``port``, or None."""
    return next((row[0] for row in _ROWS if row[1] == port), None)
