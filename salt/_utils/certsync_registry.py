"""
The kinds of a family of modules
================================

A consumer kind is the execution module ``certsync_consumer_<kind>``, a DNS
provider ``certsync_dns_<provider>``: one new module each, no list to edit.
Called through ``__utils__["certsync_registry.loaded"]``, this finds them by
their files where the loader reads custom modules from, without loading any
module: iterating ``__salt__`` would make the loader import every execution
module it has (a second of CPU in each job that did it).
"""

import os

#: What a module file may end with.
MODULE_SUFFIXES = (".py", ".pyc")


def _module_dirs(opts):
    """Where the loader reads custom execution modules from: ``module_dirs``, and
    ``<extension_modules>/modules`` (where ``saltutil.sync_modules`` puts them)."""
    dirs = [str(d) for d in opts.get("module_dirs") or []]
    if opts.get("extension_modules"):
        dirs.append(os.path.join(opts["extension_modules"], "modules"))
    return dirs


def kinds(opts, prefix):
    """The ``<kind>`` of every module file ``<prefix><kind>.py`` in the custom module
    directories of the minion whose options are ``opts``, sorted: what may load (the
    caller asks ``__salt__`` whether each did)."""
    found = set()
    for directory in _module_dirs(opts):
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            stem, suffix = os.path.splitext(entry)
            if suffix in MODULE_SUFFIXES and stem.startswith(prefix) and stem != prefix:
                found.add(stem[len(prefix) :])
    return sorted(found)


def loaded(opts, functions, prefix, function):
    """The kinds (see :py:func:`kinds`) whose module loaded: ``<prefix><kind>.<function>``
    is in ``functions`` (the caller's ``__salt__``; only those modules are loaded)."""
    return [kind for kind in kinds(opts, prefix) if f"{prefix}{kind}.{function}" in functions]
