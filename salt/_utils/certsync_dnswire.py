"""
A DNS server's failures, named
==============================

What dnspython raises when a server answers badly or not at all, and the
sentence that names it: one list for the DANE checks (``certsync_dane``) and
the RFC 2136 provider (``certsync_dns_rfc2136``), through ``__utils__``.
"""

try:
    import dns.exception

    HAS_DNSPYTHON = True
except ImportError:
    HAS_DNSPYTHON = False


def failures():
    """The exceptions of a server that answers badly or not at all: dnspython's own,
    the socket's, EOFError (TCP closed mid-message), ValueError (a malformed message)."""
    own = (dns.exception.DNSException,) if HAS_DNSPYTHON else ()
    return (*own, OSError, EOFError, ValueError)


def failure(exc):
    """The sentence that names one of :py:func:`failures`."""
    if isinstance(exc, EOFError):
        return "the server closed the connection without an answer"
    return str(exc) or type(exc).__name__
