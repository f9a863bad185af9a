"""
The fault campaign's hook: Python imports this ``sitecustomize`` in every process
started with this directory on ``PYTHONPATH`` (the campaign's salt-minion, and so
each job process it forks). With ``CERTSYNC_FAULT_CONTROL`` naming a JSON file
``{"dest": ..., "log": ..., "kill_at_op": N, "kill_after": S}``, every ``os.open``,
``os.replace``, ``os.unlink`` and ``os.rename`` of a path under ``dest`` is logged
(pid, count, call, path, time) and the process SIGKILLs itself just before the
``N``-th one, or ``S`` seconds after the first one. Test-only: never on a real host.
"""

import json
import os
import signal
import threading
import time

_CONTROL = os.environ.get("CERTSYNC_FAULT_CONTROL")
_seen = {"ops": 0, "timer": False, "stamp": None, "control": {}}


def _control():
    """The control file, read again only when it changed (a cheap stat per call)."""
    try:
        stamp = os.stat(_CONTROL).st_mtime_ns
    except OSError:
        return {}
    if stamp != _seen["stamp"]:
        try:
            with open(_CONTROL, encoding="utf-8") as handle:
                _seen["control"] = json.load(handle)
        except (OSError, ValueError):
            _seen["control"] = {}
        _seen["stamp"] = stamp
    return _seen["control"]


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _watched(real, call):
    def wrapper(path, *args, **kwargs):
        control = _control()
        dest = control.get("dest")
        if dest and isinstance(path, str) and path.startswith(dest):
            _seen["ops"] += 1
            with open(control["log"], "a", encoding="utf-8") as log:
                log.write(f"{os.getpid()} {_seen['ops']} {call} {path} {time.monotonic()}\n")
            if control.get("kill_at_op") == _seen["ops"]:
                _die()
            if control.get("kill_after") and not _seen["timer"]:
                _seen["timer"] = True
                timer = threading.Timer(control["kill_after"], _die)
                timer.daemon = True
                timer.start()
        return real(path, *args, **kwargs)

    return wrapper


if _CONTROL:
    for _name in ("open", "replace", "unlink", "rename"):
        setattr(os, _name, _watched(getattr(os, _name), _name))
