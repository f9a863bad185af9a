"""
Helpers the certsync loader modules share
=========================================

Synced to minions with ``saltutil.sync_utils`` (or ``sync_all``) and called
through ``__utils__["certsync_util.<name>"]`` by the ``certsync``,
``tlsprobe`` and ``certsync_monitor`` execution modules: one copy of the
SubjectPublicKeyInfo hash (what a ``TLSA 3 1 1`` record pins) and of the
atomic, private file writes.
"""

import contextlib
import hashlib
import os

from cryptography.hazmat.primitives import serialization


def spki_der(public_key):
    """The DER SubjectPublicKeyInfo of a ``cryptography`` public key."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_sha256(public_key):
    """SHA-256 of the SubjectPublicKeyInfo, lowercase hex (the data of ``TLSA 3 1 1``)."""
    return hashlib.sha256(spki_der(public_key)).hexdigest()


def same_key(public_key, other):
    """Whether two ``cryptography`` public keys are the same key."""
    return spki_der(public_key) == spki_der(other)


def write_temp(dest, name, data, mode, owner=None):
    """Write ``data`` (bytes) to a new temp file in ``dest`` beside ``name``, with
    ``mode`` (and ``owner``, a (uid, gid)) from the start, synced; return its path.
    Never follows a symlink planted at the temp name."""
    path = os.path.join(dest, f".{name}.certsync-{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
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
