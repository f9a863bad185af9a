"""
Text from outside, made safe to print
=====================================

Synced to minions with ``saltutil.sync_utils`` (or ``sync_all``) and called
through ``__utils__["certsync_util.printable"]`` by the ``maildns``
execution module: text from a DNS record or a log line shown to an operator.
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
