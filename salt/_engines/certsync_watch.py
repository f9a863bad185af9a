"""
certsync_watch: the source's renewal on the bus the moment it lands
===================================================================

:depends: ``inotify_simple`` (without it, or without inotify, the engine polls)

An engine for the source (NPM) minion. The certsync beacon is polled on its
``interval`` (1 s by default, and never more often than the minion's
``loop_interval``): a renewal waits up to that long to be seen. This engine
watches, with inotify, the directories that hold what ``certsync_source.watched``
names (for NPM: ``live/``, each lineage's ``live/npm-N/`` whose links certbot
swaps, and the ``archive/npm-N/`` they point into) and, once a burst of changes
has been quiet for ``settle`` seconds, runs the certsync beacon itself and fires
what it returns as the minion fires a beacon's events
(``salt/beacon/<minion id>/certsync/renewed``). Renames, symlink swaps and a
replaced directory are seen (the watches are set again after every burst).

The beacon's record in the cachedir is shared: the beacon's own poll, kept as
the safety net, does not announce a renewal the engine already did. Where
inotify is not available the engine runs the beacon every ``interval`` seconds.

Settings are the beacon's (``hostname``, ``kind`` and the kind's settings, or
``routes``: each route's, for a source of several certificates) and:

settle
    Seconds without a change before the source is read (default 0.05; certbot
    swaps the four links of a lineage within a millisecond).

interval
    Seconds between reads where inotify is not available (default 1), and the
    wait for a source whose directories do not exist yet.

rescan
    Seconds between reads when nothing changed (default 300): a change inotify
    cannot see (a network file system) is found within that time.

publish
    Publish a renewal from here (default false): ``certsync_mine.publish_source``
    for the consumers that the pillar the master compiles for this minion names
    now (compiled afresh at each renewal), as the master's runner would send
    it, without the reactor, the runner and a job on the way. The event then
    says ``published: true`` and the reactor leaves it; where the pillar names no
    consumer of this minion, or the publication fails (logged), the event goes
    without it and the reactor has the runner publish, as without the engine.

keep_key
    With ``publish``: make the source keep its key again, as the runner's
    publication does (the formula's ``certsync:source:reuse_key``): true or
    false, or with ``routes`` the list of the routes whose key is kept.

.. code-block:: yaml

    engines:
      - certsync_watch:
          hostname: mail.example.com
          kind: npm
          live_dir: /etc/letsencrypt/live

The formula (``certsync.source``) writes this into the minion's configuration
and restarts the minion when it changed; an engine starts with the minion.
"""

import contextlib
import logging
import os
import threading
import time

import salt.loader
import salt.minion
import salt.pillar
import salt.utils.event
from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import inotify_simple
except ImportError:  # the engine polls instead
    inotify_simple = None

log = logging.getLogger(__name__)

#: The engine's own settings; every other one is the beacon's.
ENGINE_KEYS = ("settle", "interval", "rescan", "publish", "keep_key")
#: A change on a watched directory that can mean a new certificate.
CHANGES = (
    "CREATE",
    "DELETE",
    "MOVED_TO",
    "MOVED_FROM",
    "CLOSE_WRITE",
    "ATTRIB",
    "DELETE_SELF",
    "MOVE_SELF",
)
#: A burst that never settles is read after this many seconds anyway.
MAX_BURST = 2.0


def __virtual__():
    return "certsync_watch"


def watch_dirs(paths):
    """The directories whose entries change when ``paths`` change: each file's
    directory, the directory its links lead to, and the parents of both (a
    lineage directory replaced, a new lineage); for a path not there yet, its
    nearest existing ancestor."""
    dirs = set()
    for path in paths:
        for found in {path, os.path.realpath(path)}:
            parent = found if os.path.isdir(found) else os.path.dirname(found)
            dirs.update({_existing(parent), _existing(os.path.dirname(parent))})
    return sorted(dirs - {None})


def _existing(path):
    """``path`` or its nearest existing ancestor (bounded by the path's depth)."""
    for _ in range(path.count(os.sep) + 1):
        if os.path.isdir(path):
            return path
        path = os.path.dirname(path)
    return None


class Watch:
    """Directories watched with inotify, set again on every call of ``watch``."""

    def __init__(self):
        self.inotify = inotify_simple.INotify()
        self.mask = 0
        for name in CHANGES:
            self.mask |= getattr(inotify_simple.flags, name)
        self.watched = {}

    def watch(self, dirs):
        """Watch ``dirs`` (only); a directory that vanished meanwhile is skipped."""
        for gone in set(self.watched) - set(dirs):
            with contextlib.suppress(OSError):  # its watch went with the directory
                self.inotify.rm_watch(self.watched.pop(gone))
        for directory in dirs:
            try:
                self.watched[directory] = self.inotify.add_watch(directory, self.mask)
            except OSError as exc:
                log.debug("certsync_watch: not watching %s: %s", directory, exc)
        return bool(self.watched)

    def wait(self, timeout, settle):
        """Wait up to ``timeout`` seconds for a change, then until changes have
        been quiet for ``settle`` seconds (at most MAX_BURST). True on a change."""
        if not self.inotify.read(timeout=int(timeout * 1000)):
            return False
        burst_end = time.monotonic() + MAX_BURST
        while time.monotonic() < burst_end and self.inotify.read(timeout=int(settle * 1000)):
            pass
        return True

    def close(self):
        self.inotify.close()


def _watcher():
    if inotify_simple is None:
        log.warning("certsync_watch: inotify_simple is not installed; polling the source")
        return None
    try:
        return Watch()
    except OSError as exc:
        log.warning("certsync_watch: no inotify (%s); polling the source", exc)
        return None


def _fire(events):
    """Fire the beacon's events as the minion fires a beacon's (to the master)."""
    with salt.utils.event.get_event("minion", opts=__opts__, listen=False) as bus:
        bus.fire_event({"beacons": events}, "__beacons_return")


def _beacon_events(beacon, config):
    """The beacon's return, tagged as Salt tags a beacon's events."""
    events = []
    for returned in beacon(config):
        data = {"id": __opts__["id"], **returned}
        tag = f"salt/beacon/{__opts__['id']}/certsync/{data.pop('tag', '')}"
        events.append({"tag": tag, "data": data, "beacon_name": "certsync"})
    return events


class Publisher:
    """Publishes renewals from the engine's process (see ``publish``), with options
    and execution modules of its own that know the master: the minion starts its
    engines with a copy of its options that may be taken before it connected."""

    def __init__(self, settings):
        self.settings, self.opts, self.functions = settings, None, None

    def connect(self):
        """Options and execution modules that know the master (made when the engine
        starts: loading the modules takes a second or two)."""
        opts = dict(__opts__)
        if "master_uri" not in opts:
            opts.update(salt.minion.resolve_dns(opts))
        utils = salt.loader.utils(opts)
        self.opts, self.functions = opts, salt.loader.minion_mods(opts, utils=utils)

    def mark(self, events, routes):
        """On a renewal among ``events``, publish every route of ``routes`` (the
        beacon's, ``{route: settings}``: a renewal of one lineage may be another
        route's too): the events, each renewal marked ``published: true`` once all
        are published."""
        renewals = [event for event in events if event["tag"].endswith("/renewed")]
        if renewals and self.publish(routes):
            for event in renewals:
                event["data"]["published"] = True
        return events

    def publish(self, routes):
        """certsync_mine.publish_source of each route, for the consumers the pillar names
        now. True when all ran; False (logged) leaves the publication to the master's
        reactor, which publishes every route again."""
        me, keep = __opts__["id"], self.settings.get("keep_key")
        try:
            cfg = self.fresh_pillar().get("certsync")
            for route, settings in routes.items():
                view = __utils__["certsync_routes.view"](cfg, route)
                is_minion_id = __utils__["certsync_args.is_minion_id"]
                consumers = __utils__["certsync_settings.source_consumers"](view, me, is_minion_id)
                if not consumers:
                    log.info(
                        "certsync_watch: the pillar names no consumer of %s%s: the reactor says "
                        "why",
                        me,
                        __utils__["certsync_routes.label"](route),
                    )
                    return False
                ret = self.functions["certsync_mine.publish_source"](
                    settings["hostname"],
                    consumers,
                    kind=settings.get("kind"),
                    keep_key=keep is True or (isinstance(keep, list) and route in keep),
                    **({"route": route} if route else {}),
                    **_where(settings),
                )
                _published(ret, route)
        except Exception as exc:  # whatever it is, the master's reactor publishes instead
            log.warning("certsync_watch: not published here (%s): the reactor publishes", exc)
            log.debug("certsync_watch: the publication's failure", exc_info=True)
            return False
        return True

    def fresh_pillar(self):
        """The pillar the master compiles for this minion now, as the master's runner
        has it (not ``pillar.items``: Salt 3008 masks its values)."""
        compiler = salt.pillar.get_pillar(
            self.opts,
            self.opts.get("grains") or {},
            self.opts["id"],
            saltenv=self.opts.get("saltenv"),
            pillarenv=self.opts.get("pillarenv"),
        )
        try:
            pillar = compiler.compile_pillar()
        finally:
            compiler.destroy()
        return pillar if isinstance(pillar, dict) else {}


def _published(ret, route):
    log.info(
        "certsync_watch: published %s%s for %s%s",
        ret["fingerprint"],
        __utils__["certsync_routes.label"](route),
        ", ".join(ret["consumers"]) or "nobody",
        f" (no recipient key: {', '.join(ret['missing_recipient_key'])})"
        if ret["missing_recipient_key"]
        else "",
    )


#: The longest wait the engine's settings may ask for (a day).
MAX_SECONDS = 86400


def _number(settings, key, default):
    value = settings.get(key, default)
    number = float(value) if isinstance(value, (int, float)) else float("nan")
    if isinstance(value, bool) or not 0 < number <= MAX_SECONDS:  # nan and inf fail too
        raise ValueError(
            f"certsync_watch: {key} must be a number of seconds above 0 and at most "
            f"{MAX_SECONDS}, not {str(value)[:40]!r}"
        )
    return number


def _config_file():
    """Where the formula writes this engine's configuration (certsync.source), as the
    SLS computes it: beside the minion's configuration, in its include directory."""
    conf_dir = os.path.dirname(__opts__.get("conf_file") or "")
    include = os.path.dirname(__opts__.get("default_include") or "minion.d/*.conf")
    return os.path.join(conf_dir, include, "certsync-watch.conf")


def start(**settings):
    """Watch the source and run the certsync beacon on each change (the engine)."""
    try:
        watch_source(settings, threading.Event())
    except ValueError as exc:  # a setting named: the engine stops, the minion goes on
        log.error("%s; not watching", exc)


def _beacon_functions():
    return salt.loader.beacons(__opts__, __salt__, context={})


def _beacon_config(settings, beacons):
    """The beacon's configuration from the engine's settings, and why it is not valid
    (None when it is)."""
    config = [{key: value} for key, value in settings.items() if key not in ENGINE_KEYS]
    valid, why = beacons["certsync.validate"](config)
    for switch in ("publish", "keep_key"):
        value = settings.get(switch, False)
        listed = switch == "keep_key" and "routes" in settings and isinstance(value, list)
        if valid and not isinstance(value, bool) and not listed:
            valid, why = False, f"{switch} must be true or false, not {str(value)[:40]!r}"
    return config, None if valid else why


def watch_source(settings, stop):
    """The engine's loop, until ``stop`` is set (checked after each wait)."""
    settle = _number(settings, "settle", 0.05)
    interval = _number(settings, "interval", 1)
    rescan = _number(settings, "rescan", 300)
    publish = settings.get("publish", False)
    beacons = _beacon_functions()
    config, why = _beacon_config(settings, beacons)
    if why:
        log.error("certsync_watch: %s; not watching", why)
        return
    routes = beacons["certsync.routes"](settings)
    publisher = Publisher(settings) if publish else None
    if publisher:
        try:
            publisher.connect()
        except Exception as exc:  # the master's reactor publishes instead
            log.warning("certsync_watch: not publishing here (%s): the reactor publishes", exc)
            publisher = None
    watch = _watcher()
    configured = _config_file()
    by_formula = os.path.isfile(configured)
    try:
        while not stop.is_set():
            if by_formula and not os.path.isfile(configured):
                log.info("certsync_watch: %s was removed (certsync.absent): stopped", configured)
                return
            # armed before the source is read: a change while it is read wakes the wait
            armed = watch is not None and watch.watch(_dirs(routes))
            events = _beacon_events(beacons["certsync.beacon"], config)
            if events and publisher:
                events = publisher.mark(events, routes)
            if events:
                _fire(events)
            if armed:
                watch.wait(rescan, settle)
            else:
                stop.wait(interval)
    finally:
        if watch is not None:
            watch.close()


def _where(settings):
    """The settings of the source's kind (``live_dir``...): the beacon's, less its
    ``hostname`` and ``kind`` and the engine's own."""
    return {k: v for k, v in settings.items() if k not in (*ENGINE_KEYS, "hostname", "kind")}


def _dirs(routes):
    """What to watch now for each route's source (none while a source cannot say: the
    engine polls meanwhile)."""
    paths = []
    try:
        for settings in routes.values():
            paths += __salt__["certsync_source.watched"](
                settings["hostname"], settings.get("kind"), **_where(settings)
            )
    except (CommandExecutionError, SaltInvocationError) as exc:
        log.warning("certsync_watch: %s", exc)
        return []
    return watch_dirs(paths)
