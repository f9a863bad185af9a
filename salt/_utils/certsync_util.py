"""
Helpers the certsync loader modules share
=========================================

Synced to minions with ``saltutil.sync_utils`` (or ``sync_all``) and called
through ``__utils__["certsync_util.<name>"]`` by the ``certsync``,
``tlsprobe``, ``certsync_monitor`` and ``maildns`` execution modules: one
copy of the atomic, private file writes, of the argument checks, and of the
rule that credentials stay in the pillar of the minion that uses them.
"""

import contextlib
import errno
import json
import math
import os
import secrets
import stat
import unicodedata

from salt.exceptions import SaltInvocationError


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


def seconds(value, what, maximum):
    """``value`` as seconds: a finite number above 0 and at most ``maximum``, written
    in ASCII; anything else (``nan``, ``inf``, ``1e9``, ``abc``, ``²``, a bool) is a
    SaltInvocationError naming ``what``."""
    number = None
    if not isinstance(value, bool) and (not isinstance(value, str) or value.isascii()):
        with contextlib.suppress(TypeError, ValueError):
            number = float(value)
    if number is None:
        raise SaltInvocationError(f"{what} must be a number of seconds, not {value!r}"[:200])
    if not (math.isfinite(number) and 0 < number <= maximum):
        raise SaltInvocationError(
            f"{what} must be between 0 and {maximum:g} seconds, not {value!r}"[:200]
        )
    return number


def read_regular(path, limit, follow=True):
    """At most ``limit`` bytes of the regular file ``path`` (through a symlink unless
    ``follow`` is False). Opened non-blocking, so a FIFO or a device planted at the
    path is refused at once (OSError "not a regular file") instead of waiting for a
    writer; a larger file is an OSError "larger than <limit> bytes"."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    fd = os.open(path, flags | (0 if follow else os.O_NOFOLLOW))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
    return data


#: The largest JSON record certsync keeps in the cachedir.
MAX_RECORD_BYTES = 64 * 1024


def read_json_record(path):
    """A JSON object certsync keeps under the cachedir; None when it is missing, no
    regular file, too large, not JSON or not an object (a record is only a hint)."""
    try:
        record = json.loads(read_regular(path, MAX_RECORD_BYTES))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_temp(dest, name, data, mode, owner=None):
    """Write ``data`` (bytes) to a new temp file in ``dest`` beside ``name``, with
    ``mode`` (and ``owner``, a (uid, gid)) from the start, synced; return its path.
    Never follows a symlink planted at the temp name."""
    # unique per call: two jobs in one process (multiprocessing: False) share a pid
    path = os.path.join(dest, f".{name}.certsync-{os.getpid()}-{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path


def replace_file(path, data, mode=0o600):
    """Replace ``path`` with ``data`` (bytes) atomically: readers see the old file
    or the new one, never a part; ``mode`` from the first byte (default 0600)."""
    directory = os.path.dirname(path) or "."
    temp = write_temp(directory, os.path.basename(path), data, mode)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


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
