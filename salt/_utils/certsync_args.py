"""
Checking what a caller passes
=============================

The argument checks the certsync loader modules share (through
``__utils__["certsync_args.<name>"]``): every value from the CLI, an SLS, the
pillar, an event or the mine is checked before it is used, and a bad one is a
``SaltInvocationError`` naming the argument and, shortened, the value.
"""

import contextlib
import ipaddress
import math
import re
import urllib.parse

from salt.exceptions import SaltInvocationError

#: What Salt accepts as a minion id, and what certsync takes from the mine or an event.
_MINION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,252}")


def _refuse(message):
    raise SaltInvocationError(message[:300])


def _parsed(value, whole=False):
    """``value`` as a number (an int with ``whole``) written in ASCII, or None (``abc``,
    ``²``, a bool, ``1.5`` for a whole number). ``nan`` and ``inf`` parse: the range
    check refuses them."""
    if isinstance(value, bool) or (isinstance(value, str) and not value.isascii()):
        return None
    if whole and isinstance(value, float) and not value.is_integer():
        return None
    with contextlib.suppress(TypeError, ValueError, OverflowError):
        return int(value) if whole else float(value)
    return None


def number(value, what, low, high, whole=False):
    """``value`` as a finite number (an int with ``whole``) from ``low`` to ``high``;
    anything else is refused, naming ``what``."""
    parsed = _parsed(value, whole)
    if parsed is None:
        _refuse(f"{what} must be a {'whole ' if whole else ''}number, not {value!r}")
    if not (math.isfinite(parsed) and low <= parsed <= high):
        _refuse(f"{what} must be between {low:g} and {high:g}, not {parsed}")
    return parsed


def seconds(value, what, maximum):
    """``value`` as seconds: a finite number above 0 and at most ``maximum``; anything
    else is refused, naming ``what``."""
    parsed = _parsed(value)
    if parsed is None:
        _refuse(f"{what} must be a number of seconds, not {value!r}")
    if not (math.isfinite(parsed) and 0 < parsed <= maximum):
        _refuse(f"{what} must be between 0 and {maximum:g} seconds, not {value!r}")
    return parsed


def port(value, what):
    """``value`` as a TCP port, 1 to 65535."""
    parsed = _parsed(value, whole=True)
    if parsed is None:
        _refuse(f"{what} must be a number, not {value!r}")
    if not 0 < parsed < 65536:
        _refuse(f"{what} {parsed} is out of range")
    return parsed


def strings(values, what, kind="names", required=False):
    """A list of non-empty strings, or the items of a comma-separated string (the CLI);
    None is the empty list unless ``required``."""
    if values is None:
        values = []
    if isinstance(values, str):
        values = [item.strip() for item in values.split(",") if item.strip()]
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and v for v in values):
        _refuse(f"{what} must be a list of {kind}, not {values!r}")
    if required and not values:
        _refuse(f"{what} must be a non-empty list of {kind}")
    return list(values)


def argv_map(commands, what, keys="service names"):
    """A mapping of names to commands, each an argv list of non-empty strings (run with
    no shell); None is the empty mapping. An error names the key, never the value: an
    argument may hold a credential."""
    if commands is None:
        return {}
    if not isinstance(commands, dict):
        _refuse(f"{what} must map {keys} to argv lists, not a {type(commands).__name__}")
    for name, argv in commands.items():
        if not isinstance(name, str) or not name:
            _refuse(f"{what} must map {keys} to argv lists: a key is no name")
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, str) and a for a in argv)
        ):
            _refuse(
                f"{what}:{name[:80]} must be an argv list of non-empty strings, such as "
                "[systemctl, reload, postfix] (the value is not shown)"
            )
    return dict(commands)


def is_minion_id(value):
    """Whether ``value`` is a minion id certsync accepts."""
    return isinstance(value, str) and bool(_MINION_ID.fullmatch(value))


def minion_id(value, what="minion id"):
    """``value`` when it is a minion id certsync accepts."""
    if not is_minion_id(value):
        _refuse(f"{value!r} is not a usable {what}")
    return value


def minion_ids(values, what):
    """A non-empty list of minion ids, sorted, without repeats."""
    return sorted({minion_id(item) for item in strings(values, what, "minion ids", True)})


def api_url(value, what):
    """``value`` as the base URL of an API a credential is sent to: ``https://`` to any
    host, or ``http://`` to a loopback address only (a local stand-in or proxy: the
    credential never crosses a network in clear text). No user info, query or
    fragment, no control character or space, a valid port; the host compared as
    ``urllib.parse`` reads it (``http://127.0.0.1@evil.example`` is evil.example's).
    Returned without a trailing slash."""
    text = value if isinstance(value, str) else ""
    if not text or len(text) > 2048 or not text.isprintable() or any(c.isspace() for c in text):
        _refuse(f"{what} {str(value)[:80]!r} is not a URL (one line, no spaces)")
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as exc:
        _refuse(f"{what} {text[:80]!r} is not a URL: {exc}")
    host = parts.hostname or ""
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        _refuse(f"{what} {text[:80]!r} must not hold user info (user@host)")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        _refuse(f"{what} {text[:80]!r} must not hold a query or fragment")
    if not host or port == 0:
        _refuse(f"{what} {text[:80]!r} has no host or port 0")
    if parts.scheme == "https":
        return text.rstrip("/")
    if parts.scheme == "http" and _is_loopback(host):
        return text.rstrip("/")
    _refuse(
        f"{what} {text[:80]!r} must be an https:// URL (http:// only to a loopback "
        "address: 127.0.0.0/8 or ::1)"
    )


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
