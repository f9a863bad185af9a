"""
What certsync shows, and what it keeps out
==========================================

Synced to minions with ``saltutil.sync_utils`` (or ``sync_all``) and called
through ``__utils__["certsync_util.<name>"]`` by the ``certsync``,
``maildns`` and ``certsync_settings`` execution modules and the runner: text
from outside made safe to print, and the rule that credentials stay in the
pillar of the minion that uses them.
"""

import unicodedata


def printable(value):
    """``value`` (a string, or lists and mappings of them) with every control or format
    character (C0 and C1 controls, ESC, DEL, bidi overrides, zero-width marks) written
    as its escape (``\\x1b``, ``\\u202e``): text from outside (a DNS record, a log
    line) cannot move the cursor, retitle the terminal or reorder what it shows."""
    if isinstance(value, str):
        return "".join(
            char.encode("unicode_escape").decode("ascii")
            if unicodedata.category(char) in ("Cc", "Cf")
            else char
            for char in value
        )
    if isinstance(value, list):
        return [printable(item) for item in value]
    if isinstance(value, dict):
        return {printable(key): printable(item) for key, item in value.items()}
    return value


#: Settings that are credentials: read from the pillar of the minion that uses them,
#: never sent as a job's argument, never shown (Salt keeps arguments in its job cache).
CREDENTIAL_KEYS = frozenset({"tsig_secret", "api_token", "password"})
#: What stands for a credential in a return, as Salt's pillar.get masks.
MASK = "**********"
_DROP = object()


def _walk_credentials(value, replace):
    """A copy of ``value`` with each credential key's value given to ``replace``
    (which returns the stand-in, or ``_DROP`` to leave the key out)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in CREDENTIAL_KEYS:
                stand_in = replace(item)
                if stand_in is not _DROP:
                    out[key] = stand_in
            else:
                out[key] = _walk_credentials(item, replace)
        return out
    if isinstance(value, list):
        return [_walk_credentials(item, replace) for item in value]
    return value


def without_credentials(value):
    """A copy of ``value`` (mappings and lists, at any depth) with every credential
    key left out: what may travel as a job's arguments."""
    return _walk_credentials(value, lambda _: _DROP)


def masked_credentials(value):
    """A copy of ``value`` with every credential that is set shown as ``**********``:
    what a return that shows settings may hold."""
    return _walk_credentials(value, lambda item: MASK if item else item)
