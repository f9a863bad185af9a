"""
Files certsync reads and writes
===============================

The file handling the certsync loader modules share (through
``__utils__["certsync_files.<name>"]``): bounded reads that refuse a FIFO or a
device, atomic private writes that never follow a planted symlink, the JSON
records kept in the cachedir, the one lock every deploy, install and roll
back takes, a set of files replaced as one (a pair and the files beside it),
and a log appended line by line with a size bound.
"""

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import stat
import time

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

#: The largest JSON record certsync keeps in the cachedir.
MAX_RECORD_BYTES = 64 * 1024
#: The largest list of names (a per-name dir's ``domains``) certsync reads.
MAX_NAMES_BYTES = 16 * 1024
#: The largest file of a set that replace_set puts back after a failed rename.
MAX_SET_FILE_BYTES = 256 * 1024
#: How often a waiting run tries the lock again (seconds).
LOCK_POLL = 0.05


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


def read_list(path, limit=MAX_NAMES_BYTES):
    """The text of a list file such as a per-name dir's ``domains``; None when there is
    no such regular file."""
    if not os.path.isfile(path) or os.path.islink(path):
        return None
    try:
        return read_regular(path, limit, follow=False).decode("utf-8")
    except UnicodeDecodeError:
        raise CommandExecutionError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise CommandExecutionError(f"{path}: cannot read: {exc.strerror}") from None


def names_in(text):
    """The names a list file's ``text`` holds: whitespace separated, lower-cased."""
    return [name.lower() for name in text.split()]


def read_names(path, limit=MAX_NAMES_BYTES):
    """The names in a list file such as a per-name dir's ``domains`` (:py:func:`names_in`);
    None when there is no such regular file."""
    text = read_list(path, limit)
    return None if text is None else names_in(text)


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


def replace_file(path, data, mode=0o600, owner=None):
    """Replace ``path`` with ``data`` (bytes) atomically and durably: readers see the
    old file or the new one, never a part; ``mode`` (default 0600) and ``owner`` (a
    (uid, gid)) from the first byte; the directory synced after the rename."""
    directory = os.path.dirname(path) or "."
    temp = write_temp(directory, os.path.basename(path), data, mode, owner)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(directory)


def fsync_dir(directory):
    """Make the renames in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def owner(path):
    """The (uid, gid) of ``path`` (a symlink not followed); None when there is none."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    return found.st_uid, found.st_gid


def _put(dest, name, data, mode, target=None):
    """``data`` renamed into ``dest/<target or name>`` from a temp file with ``mode``
    and the owner of ``dest/<name>``."""
    temp = write_temp(dest, name, data, mode, owner(os.path.join(dest, name)))
    try:
        os.replace(temp, os.path.join(dest, target or name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def keep_copies(dest, contents, modes, suffix):
    """Each of ``contents`` (file name -> bytes) written whole to ``dest/<name><suffix>``,
    with its mode in ``modes`` and the owner of ``dest/<name>``."""
    for name, data in contents.items():
        _put(dest, name, data, modes[name], name + suffix)


def keep_first(dest, originals, modes):
    """The first time a file certsync did not write is replaced: ``dest/<name>`` kept as
    ``dest/<originals[name]>``, never overwritten after."""
    for name, keep_as in originals.items():
        path = os.path.join(dest, name)
        if os.path.lexists(os.path.join(dest, keep_as)) or not os.path.isfile(path):
            continue
        if not os.path.islink(path):
            _put(dest, name, read_regular(path, MAX_SET_FILE_BYTES, False), modes[name], keep_as)


def replace_set(dest, contents, modes):
    """Replace the files of ``contents`` (name -> bytes) in ``dest`` as one: all written
    to temp files first (each with its mode in ``modes``, its owner kept), then each
    renamed into place; when a rename fails, those done are put back (OSError raised),
    so a pair on disk always matches."""
    temps = []
    try:
        for name, data in contents.items():
            owned = owner(os.path.join(dest, name))
            temps.append((write_temp(dest, name, data, modes[name], owned), name))
        replaced = {}  # each file renamed into place, with the bytes it replaced
        for temp, name in temps:
            path = os.path.join(dest, name)
            before = (
                read_regular(path, MAX_SET_FILE_BYTES, False) if os.path.lexists(path) else None
            )
            try:
                os.replace(temp, path)
            except OSError:
                _put_back(dest, replaced, modes)
                raise
            replaced[name] = before
        temps = []
        fsync_dir(dest)
    finally:
        for temp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)


def _put_back(dest, replaced, modes):
    """Undo the renames of a set whose next rename failed: each file back to the bytes
    it had (or gone, where there was none)."""
    for name, before in replaced.items():
        try:
            if before is None:
                os.unlink(os.path.join(dest, name))
            else:
                _put(dest, name, before, modes[name])
        except OSError as exc:
            log.error("certsync: %s: cannot put %s back: %s", dest, name, exc.strerror)


def write_json_record(path, record):
    """Keep ``record`` (a JSON object) at ``path`` under the cachedir: its directory made
    0700, the file replaced atomically, 0600."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    replace_file(path, json.dumps(record).encode("utf-8"))


def _open_regular(path, flags, mode):
    """A descriptor on the regular file ``path`` (opened with ``flags``, created with
    ``mode``), never through a symlink and never waiting: a FIFO, a device or a socket
    planted at a configured path is an OSError "not a regular file" at once."""
    flags |= os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO with no reader, opened to write
            raise OSError(errno.EINVAL, "not a regular file", path) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


@contextlib.contextmanager
def locked(path, timeout, holder="another certsync run"):
    """Hold an exclusive lock on the file ``path`` (made 0600, never through a symlink)
    for the ``with`` block, waiting at most ``timeout`` seconds for ``holder`` to let
    it go; a CommandExecutionError names the file when it cannot be had."""
    try:
        fd = _open_regular(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise CommandExecutionError(f"{path}: cannot open the lock: {exc.strerror}") from None
    try:
        deadline, acquired = time.monotonic() + timeout, False
        for _ in range(int(timeout / LOCK_POLL) + 1):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                acquired = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(LOCK_POLL)
        if not acquired:
            raise CommandExecutionError(f"{path}: {holder} held the lock for {timeout} s")
        yield
    finally:
        os.close(fd)


def append_rotated(path, text, max_bytes, timeout=10):
    """Append ``text`` (whole lines) to ``path`` with one ``write()`` on a descriptor
    opened ``O_APPEND`` (mode 0640, never through a symlink), under the lock
    ``<path>.lock``, so concurrent writers never interleave. When the file has
    reached ``max_bytes`` it is first renamed to ``<path>.1`` (replacing the last
    one) and a new file begun. A CommandExecutionError names the file when it
    cannot be written."""
    data = text.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CommandExecutionError(f"{path}: its directory {directory} does not exist")
    try:
        with locked(f"{path}.lock", timeout, "another writer of this log"):
            with contextlib.suppress(FileNotFoundError):
                found = os.lstat(path)
                if not stat.S_ISREG(found.st_mode):
                    raise OSError(errno.EINVAL, "not a regular file")
                if found.st_size >= max_bytes:
                    os.replace(path, f"{path}.1")
            fd = _open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                written = os.write(fd, data)
            finally:
                os.close(fd)
    except OSError as exc:
        raise CommandExecutionError(f"{path}: cannot append: {exc.strerror}") from None
    if written != len(data):
        raise CommandExecutionError(f"{path}: only {written} of {len(data)} bytes were written")
