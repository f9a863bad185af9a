"""
A consumer's deploy of a certificate pair
=========================================

The deploy itself: the source pair validated, installed atomically where it
differs, the services reloaded (restarted where the reload does not take),
every endpoint checked on the wire, the previous pair restored and served
again when the new one is not, the DANE gate and retirement, and the record
monitoring reads. ``deploy`` and ``roll_back`` return what a state returns
(``result``, ``changes``, ``comment``, never key material); the
``certsync.deployed`` and ``certsync.rolled_back`` states are thin layers
over them. ``deployed`` is what the master's runner sends a consumer on
``certsync/published``: ``deploy`` with the arguments the formula's SLS
would give the state, shaped as ``state.single`` returns, without a state
run. Deploy locks keep any two of them on a minion from overlapping.
"""

import concurrent.futures
import contextlib
import contextvars
import dataclasses
import logging
import os
import tempfile

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "certsync_deploy"

DEPLOY_LOCK = ".certsync-deploy.lock"
LOCK_TIMEOUT = 120
#: The minion's own deploy lock, under its cachedir, and how long a deploy waits for it:
#: the deploys of other routes ahead of it, each up to a few verify_timeouts.
MINION_LOCK = os.path.join("certsync", "deploy.lock")
MINION_LOCK_TIMEOUT = 600
#: Among a kind's reload results: the copies of the pair it wrote (a line, no service).
WRITTEN = "written"
#: At most one restart of a service per this many seconds (a certificate that never
#: takes must not restart mail in a loop from the schedule).
RESTART_BACKOFF = 3600


def __virtual__():
    if "certsync.validate" not in __salt__:
        return (False, "certsync_deploy needs the certsync execution module")
    for needed in ("certsync_args.seconds", "certsync_endpoints.table"):
        if needed not in __utils__:
            util = needed.split(".")[0]
            return (False, f"certsync_deploy needs salt://_utils/{util}.py: saltutil.sync_all")
    return __virtualname__


def _short(fingerprint):
    return f"{fingerprint[:16]}..." if fingerprint else "nothing"


# --------------------------------------------------------------------------
# Source, plan, install
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _source_pair(source, hostname, live_dir, source_minion, fingerprint, route=None):
    """Yield (fullchain, key, description) of the source pair, wherever it is (from the
    mine: the entry of ``route``)."""
    if source_minion:
        if source or live_dir:
            raise SaltInvocationError("give one of source, live_dir and source_minion")
        staging = os.path.join(__opts__["cachedir"], "certsync")
        os.makedirs(staging, mode=0o700, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="staging-", dir=staging) as private:
            found = __salt__["certsync_mine.fetch_published"](source_minion, private, route=route)
            origin = f"the mine of {source_minion}{__utils__['certsync_routes.label'](route)}"
            if fingerprint and fingerprint != found["fingerprint"]:
                # A queued run for an older announcement: the mine holds the newer one.
                origin += f" (the announced {str(fingerprint)[:16]}... is superseded)"
            yield found["fullchain"], found["privkey"], origin
        return
    if not (source or live_dir):
        raise SaltInvocationError("a source directory, a live_dir or a source_minion is required")
    if isinstance(source, dict):  # a source of any kind on this minion
        if live_dir:
            raise SaltInvocationError("give source (a mapping) or live_dir, not both")
        where = dict(source)
        kind = __utils__["certsync_settings.source_kind"](where.pop("kind", None))
        known = __salt__["certsync_source.settings"](kind)
        unknown = sorted(str(key) for key in set(where) - set(known))
        if unknown:
            raise SaltInvocationError(
                f"source: {', '.join(unknown)} not a setting of the {kind} source "
                f"(its settings: {', '.join(known)})"
            )
        found = __salt__["certsync_source.locate"](hostname, kind, **where)
    else:
        found = __salt__["certsync_source.locate"](hostname, source=source, live_dir=live_dir)
    yield found["fullchain"], found["privkey"], found["dir"]


def _own(settings):
    """The consumer kind's settings among keyword arguments: not Salt's own (``__pub_*``)."""
    return {key: value for key, value in settings.items() if not key.startswith("__")}


def _summary(validation):
    return {key: validation.get(key) for key in ("fingerprint", "not_after", "sans")}


def _plan(fullchain, key, layout):
    """Return the list of directories whose pair (or a file beside it) differs."""
    plan = []
    for directory in layout["dirs"]:
        comparison = __salt__["certsync.compare"](
            fullchain, key, directory, files=layout["files"].get(directory)
        )
        if not comparison["current"]:
            plan.append((directory, comparison))
    return plan


def _apply(fullchain, key, plan, layout):
    """Install into each planned directory; on failure restore those done."""
    done = []
    try:
        for directory, _ in plan:
            __salt__["certsync.install"](
                fullchain,
                key,
                directory,
                files=layout["files"].get(directory),
                originals=layout["originals"],
            )
            done.append(directory)
    except CommandExecutionError as exc:
        restore_errors = _restore(done)
        raise CommandExecutionError(
            f"{exc}; restored the previous pair in: {', '.join(done) or 'nothing installed'}"
            + (f"; restoring failed: {'; '.join(restore_errors)}" if restore_errors else "")
        ) from None
    return done


def _restore(directories):
    errors = []
    for directory in reversed(directories):
        try:
            __salt__["certsync.restore_previous"](directory)
        except CommandExecutionError as exc:
            errors.append(str(exc))
    return errors


def _describe_plan(plan):
    return "; ".join(
        f"{directory}: {', '.join(comparison['differences'])}" for directory, comparison in plan
    )


# --------------------------------------------------------------------------
# Services and the wire
# --------------------------------------------------------------------------


class _Serving:
    """Reload the consumer's services and check its endpoints: the consumer kind
    (``certsync_consumer``) says what its services are and how they take a pair."""

    def __init__(self, dest, hostname, consumer, endpoints, address, timeout):
        # a files-only deploy (no services, no endpoints) never loads the probe's module
        if endpoints and "tlsprobe.probe" not in __salt__:
            raise SaltInvocationError("endpoints given but the tlsprobe module is not available")
        self.kind, given = consumer
        self.dest = dest
        self.hostname = hostname
        self.settings = __salt__["certsync_consumer.prepare"](
            self.kind, dest, hostname, endpoints, given
        )
        self.services = self.settings["services"]
        self.endpoints = self.settings["endpoints"]
        if self.endpoints:
            __salt__["tlsprobe.endpoint_list"](self.endpoints)
        self.address = address
        self.timeout = _seconds(timeout, "verify_timeout")
        self.names = None  # SNI names to probe with (None: hostname only)
        self.log = []
        self.last = {}  # the latest probe results, by endpoint
        self.unreachable = {}  # endpoint: why it answered nothing before the deploy
        self.answering = None  # the probe for the hostname begun with the run (a future)

    def call(self, function, *args):
        """``function`` of the consumer kind, with the prepared settings."""
        return __salt__["certsync_consumer.call"](self.kind, function, *args, self.settings)

    def without_sni(self):
        """``[""]``, the probe that names no host (the top-level pair), unless the
        kind serves this pair by SNI alone."""
        return [] if self.settings.get("sni_only") else [""]

    @property
    def active(self):
        return bool(self.services or self.endpoints or self.settings.get("writes"))

    def preflight(self):
        """Fail before anything changes when a service is not there."""
        self.call("preflight")

    def probe_early(self):
        """Begin the probe for the hostname (which endpoints answer) now, while the
        pair is fetched and checked: it is what an install waits for."""
        if not self.endpoints:
            return
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        # the loader's dunders live in context variables, which a thread does not inherit
        self.answering = pool.submit(contextvars.copy_context().run, self.served, False)
        pool.shutdown(wait=False)  # its one probe runs on, bounded by the probe's timeout

    def served(self, every_name=True):
        """What each endpoint serves now: {endpoint: probe result}; for the hostname
        alone unless ``every_name``."""
        return __salt__["tlsprobe.probe"](
            self.hostname, self.endpoints, self.address, names=self.names if every_name else None
        )

    def _reload(self):
        results = self.call("reload", self.dest)
        written = results.pop(WRITTEN, None)  # the kind's own copies of the pair
        if written:
            self.log.append(written["output"])
        failed = [
            f"{s}: {r.get('error') or r.get('output')}" for s, r in results.items() if not r["ok"]
        ]
        if self.services:
            self.log.append(
                "reloaded "
                + ", ".join(self.services)
                + (f" ({'; '.join(failed)})" if failed else "")
            )
        return not failed

    def set_aside_unreachable(self, every_name=True):
        """Probe before anything changes. An endpoint that answers nothing (refused,
        timed out, no TLS) is off, not stale: reported, never waited for, never a
        reason to reload or restart. Returns what the others serve (for every name,
        or, before an install that makes them serve another pair anyway, for the
        hostname alone: one handshake per endpoint)."""
        if every_name or self.answering is None:
            served = self.served(every_name)
        else:
            served = self.answering.result()
        by_endpoint = {}
        for key, result in served.items():
            by_endpoint.setdefault(key.split("/")[0], []).append(result)
        self.unreachable = {
            endpoint: _why_unreachable(results[0])
            for endpoint, results in by_endpoint.items()
            if not any(r.get("fingerprint") for r in results)
        }
        if len(self.unreachable) == len(by_endpoint):
            raise CommandExecutionError(
                "no endpoint answers, so nothing could be verified: "
                + "; ".join(f"{e} ({why})" for e, why in sorted(self.unreachable.items()))
            )
        self.endpoints = {
            protocol: f"{address}:{port}" if address else port
            for protocol, port, address in __salt__["tlsprobe.endpoint_list"](self.endpoints)
            if protocol not in self.unreachable
        }
        return {k: r for k, r in served.items() if k.split("/")[0] not in self.unreachable}

    def unreachable_lines(self):
        return [
            f"Not reachable, not checked: {endpoint} ({why}); certsync never restarts a "
            "service for it (take it out of endpoints if it is off on purpose)"
            for endpoint, why in sorted(self.unreachable.items())
        ]

    def _restart(self, services, restoring=False):
        backoff = self.settings["backoff"]
        recent = {}
        if not restoring:
            recent = __salt__["certsync_monitor.restarts"](backoff, RESTART_BACKOFF)
        held = [s for s in services if s in recent]
        if held:
            self.log.append(
                f"not restarted {', '.join(held)}: restarted at "
                f"{', '.join(_utc(recent[s]) for s in held)}, "
                f"at most one restart per {RESTART_BACKOFF} s"
            )
        services = [s for s in services if s not in recent]
        if not services:
            return False
        results = self.call("restart", services, self.dest)
        __salt__["certsync_monitor.note_restarts"](backoff, services)
        failed = [f"{s}: {r.get('error')}" for s, r in results.items() if not r["ok"]]
        self.log.append(
            "restarted " + ", ".join(services) + (f" ({'; '.join(failed)})" if failed else "")
        )
        return True

    def _wait(self, fingerprint):
        waited = __salt__["tlsprobe.wait_for"](
            self.hostname,
            fingerprint,
            self.endpoints,
            self.address,
            timeout=self.timeout,
            names=self.names,
        )
        self.last = waited["served"]
        return waited["ok"]

    def _stale_services(self, fingerprint):
        """The services of the endpoints that do not serve ``fingerprint``: each answered
        before the deploy (set_aside_unreachable), so it serves another certificate now,
        or the reload stopped it. A name not probed: its endpoint's hostname is stale."""
        stale = sorted(
            {
                name.split("/")[0]
                for name, result in self.last.items()
                if result.get("fingerprint") != fingerprint and result.get("probed") is not False
            }
        )
        return [s for s in self.call("stale", stale) if s in self.services]

    def make_served(self, fingerprint, restoring=False):
        """Reload, check, restart what is stale, check again. True when served everywhere.
        A service restarted within the back-off is not restarted again, unless
        ``restoring`` the pair that served before."""
        self.last = {}
        reloaded = self._reload() if self.services or self.settings.get("writes") else True
        if not self.endpoints:
            return reloaded
        if reloaded and self._wait(fingerprint):
            return True
        if not self.services:
            return False
        if not self.last:
            self.last = self.served()
        stale = self._stale_services(fingerprint)
        return bool(stale) and self._restart(stale, restoring) and self._wait(fingerprint)


def _why_unreachable(result):
    where = f"{result.get('address')}:{result.get('port')}"
    return f"{where}: {result.get('error') or 'no certificate'}"


def _seconds(value, what):
    return __utils__["certsync_args.seconds"](value, what, 3600)


def _utc(epoch):
    return __utils__["certsync_pem.iso"](epoch)


@contextlib.contextmanager
def _deploy_lock(name, timeout=LOCK_TIMEOUT):
    """One deploy or roll back at a time on this minion, whatever its route: the routes
    of a consumer share its services, which a deploy probes, reloads and restarts, and
    another deploy must not see half done (a lock under the cachedir). And one per
    destination, whoever started it (a lock file beside the pair; install and rollback
    hold .certsync.lock inside it)."""
    locked = __utils__["certsync_files.locked"]
    minion_lock = os.path.join(__opts__["cachedir"], MINION_LOCK)
    os.makedirs(os.path.dirname(minion_lock), mode=0o700, exist_ok=True)
    with locked(minion_lock, MINION_LOCK_TIMEOUT, "another certsync deploy on this minion"):
        if not os.path.isdir(name) or os.path.islink(name):
            yield  # the certsync module refuses such a destination, naming it
            return
        with locked(os.path.join(name, DEPLOY_LOCK), timeout, "another certsync deploy"):
            yield


def _indented(lines):
    return [f"  {line}" for line in lines]


def _served_report(served, expected, names):
    """One line per endpoint: what it served, and whose pair that is."""
    lines = []
    for endpoint, result in sorted(served.items()):
        where = f"{endpoint} ({result['address']}:{result['port']})"
        fingerprint = result.get("fingerprint")
        if not fingerprint:
            lines.append(f"{where}: {result.get('error', 'no certificate')}")
            continue
        owner = names.get(fingerprint, "an unknown pair")
        state = "ok" if fingerprint == expected else "WRONG"
        lines.append(f"{where}: {state}, serves {_short(fingerprint)} ({owner})")
    return lines


def _pair_names(name, new, old):
    """Whose pair each fingerprint is: the new, the previous, and the SNI dirs holding it."""
    labels = {new: ["the new pair"]}
    if old:
        labels.setdefault(old, []).append("the previous pair")
    for sni_name, fingerprint in __salt__["certsync.sni_inventory"](name).items():
        labels.setdefault(fingerprint, []).append(f"the pair in SNI dir {sni_name}")
    return {fingerprint: ", also ".join(found) for fingerprint, found in labels.items()}


def _fail_and_roll_back(run, serving, done, new, old):
    """The new pair is not served everywhere: restore the old one and say what happened."""
    names = _pair_names(run.name, new, old)
    report = _served_report(serving.last, new, names) if serving.last else []
    restore_errors = _restore(done)
    lines = [f"Certificate {_short(new)} was not served everywhere after: {'; '.join(serving.log)}"]
    lines += _indented(report)
    if restore_errors:
        lines.append("Restoring the previous pair FAILED: " + "; ".join(restore_errors))
    else:
        lines.append(f"Restored the previous pair {_short(old)} in: {', '.join(done)}")
        serving.log = []
        if old and serving.make_served(old, restoring=True):
            lines.append(f"The previous pair {_short(old)} is served again on every endpoint")
        elif old:
            lines.append(
                f"The previous pair is NOT served everywhere after: {'; '.join(serving.log)}"
            )
            lines += _indented(_served_report(serving.last or {}, old, names))
    run.ret["changes"] = {}
    run.ret["comment"] = "\n".join(lines)


# --------------------------------------------------------------------------
# The state
# --------------------------------------------------------------------------


def _converge_served(run, serving, validation, origin, served):
    """The files are current: make sure every endpoint that answers serves them too."""
    ret = run.ret
    new = validation["fingerprint"]
    ret["result"] = True
    ret["comment"] = f"Certificate {new} from {origin} is already deployed"
    if _rewrite_drifted(run, serving, new) or not serving.endpoints:
        return
    stale = sorted(n for n, r in served.items() if r.get("fingerprint") != new)
    if not stale:
        ret["comment"] += " and served on every endpoint" + (
            " that answers" if serving.unreachable else ""
        )
        return
    names = _pair_names(run.name, new, None)
    report = "\n".join(_indented(_served_report(served, new, names)))
    if run.test:
        ret["result"] = None
        ret["comment"] += (
            f", but not served on {', '.join(stale)}; would reload "
            + (", ".join(serving.services) or "nothing")
            + f":\n{report}"
        )
        return
    if serving.make_served(new):
        ret["changes"] = {"served": {"repaired": stale, "fingerprint": new}}
        ret["comment"] += (
            f"; {', '.join(stale)} served something else, now fixed by: {'; '.join(serving.log)}"
        )
        return
    ret["result"] = False
    ret["comment"] += f", but not served everywhere after: {'; '.join(serving.log)}\n" + "\n".join(
        _indented(_served_report(serving.last, new, names))
    )


def _rewrite_drifted(run, serving, new):
    """The consumer's own copies of the pair (a ``service``'s files) differ from it: write
    them again and make them served. True when there was such a drift."""
    ret = run.ret
    drift = serving.call("drift", run.name)
    if not drift:
        return False
    if run.test:
        ret["result"] = None
        ret["comment"] += "; would write again: " + "; ".join(drift)
        return True
    ret["result"] = serving.make_served(new)
    ret["changes"] = {"rewritten": drift}
    ret["comment"] += f"; wrote again: {'; '.join(drift)}; {'; '.join(serving.log)}"
    if not ret["result"]:
        ret["comment"] += "\n" + "\n".join(
            _indented(_served_report(serving.last, new, _pair_names(run.name, new, None)))
        )
    return True


def deploy(
    name,
    hostname,
    source=None,
    live_dir=None,
    min_days=7,
    ca_file=None,
    consumer=None,
    endpoints=None,
    probe_address=None,
    verify_timeout=60,
    source_minion=None,
    fingerprint=None,
    route=None,
    dane=None,
    allow_older=False,
    paused=False,
    test=False,
    **settings,
):
    """
    Make the certificate pair in ``name`` match the source pair, and make the
    consumer's services serve it. Returns ``result`` (None in a dry run with
    something to do), ``changes`` (fingerprints, ``not_after``, SANs, the
    directories; never key material) and ``comment``, as the
    ``certsync.deployed`` state, a thin layer over this function, does.

    name
        The directory certsync keeps the pair in, ``cert.pem`` (0644) and
        ``key.pem`` (0600), the previous pair beside them: the one the
        consumer reads itself, or the one its files
        are written from (``service``). It must exist and must not be a
        symlink.

    hostname
        The host name the certificate must cover (RFC 6125), also sent as
        SNI by the probes.

    consumer
        The consumer kind (``certsync_consumer.kinds``; where none is named,
        ``certsync_consumer.DEFAULT_KIND``), e.g. ``service``: a plain host's
        systemd units and files, HAProxy through its runtime API. The other
        keyword arguments are that kind's settings, each documented in its
        module, ``certsync_consumer_<kind>`` (``certsync_consumer.settings
        <kind>`` lists them). One the kind does not take is refused, by name.

    source
        A directory holding ``fullchain.pem`` and ``privkey.pem``, such as
        NPM's ``live/npm-5``, read through its symlinks; or a source of any
        kind on this minion as a mapping of ``kind`` and that kind's
        settings (``certsync_source``), e.g. ``{kind: caddy, storage:
        /var/lib/caddy/.local/share/caddy}``.

    live_dir
        Instead of ``source``: NPM's ``live/`` directory, searched for the
        certificate that covers ``hostname`` (the latest ``not_after`` wins).

    source_minion
        Instead of ``source``: the id of the source minion whose mine entry
        for this minion holds the chain and the sealed key (see
        ``certsync_mine.publish``). The key is opened into a private staging
        directory under the cachedir, removed after the run.

    fingerprint
        With ``source_minion``: the fingerprint the ``certsync/published``
        event announced. When the mine entry is for another certificate (a
        newer publication superseded the announcement), the comment says so
        and the entry in the mine, validated as always, is what is deployed.

    route
        With ``source_minion``: the route whose entry to take (a name under
        the pillar's ``certsync:certificates``). Default: the route of the
        single-certificate keys (``certsync:hostname``).

    min_days
        Refuse a source certificate with fewer days of validity left.
        Default: 7.

    dane
        When the host uses DANE: ``True`` (TLSA at ``_25._tcp.<hostname>``,
        the system resolver) or a mapping with ``port``, ``nameservers`` and
        ``dns_port``. A certificate that no published TLSA record matches is
        not deployed; the comment gives the exact record to publish and the
        rollover steps (publish beside the old, wait the TTL, deploy, remove
        the old). A failed lookup deploys nothing. Default: off.

    ca_file
        Optional PEM bundle of trusted roots the chain must verify against.

    endpoints
        Endpoints to verify on the wire (see the ``tlsprobe`` module): names
        such as ``[smtp, imaps, https]``, ``protocol:port`` strings or a
        protocol-to-port mapping. Default: none, nothing is probed. They are
        probed once before anything changes: one that answers no TLS
        handshake then (refused, timed out, another protocol: a port that is
        off) is named in the comment and left out of the run; it never causes
        a reload or a restart. When none answers, nothing is deployed.
        A service is restarted only for endpoints that served another
        certificate after the reload (or stopped answering), and at most
        once an hour (a record in the cachedir), except to bring the previous
        pair back in a roll back.

    probe_address
        Where the probes connect. Default: ``hostname``.

    verify_timeout
        Seconds to wait for every endpoint to serve the new certificate, per
        attempt (after the reload, after the restart). Default: 60.

    allow_older
        Deploy the source's certificate even when it was issued before the
        one certsync installed and serves now. Default: False: an older
        publication (a master's mine cache restored from a backup) is refused
        and the newer certificate keeps serving.

    paused
        Deploy nothing, and say so (pillar ``paused: true``). Deploys are
        also paused after a roll back (``certsync.rolled_back``) until
        ``certsync.resumed`` (``state.apply certsync.resume``).

    The wire check probes every endpoint for the hostname, for each name the
    consumer's layout serves from other directories (SNI), and without SNI.

    test
        Change nothing; the comment gives the plan. Default: False.

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_deploy.deploy /etc/certsync/mail.example.com \\
            mail.example.com live_dir=/etc/letsencrypt/live \\
            consumer=service units='[postfix, dovecot]' \\
            files='[{path: /etc/ssl/mail.pem, contents: combined}]' \\
            endpoints='[smtp, imaps]' test=True
    """
    run = _Run(
        name,
        test=bool(test),
        min_days=min_days,
        ca_file=ca_file,
        allow_older=allow_older,
        route=route,
    )
    held = _paused(name, paused)
    if held:
        return {**run.ret, "result": True, "comment": held}
    try:
        serving = _Serving(
            name,
            hostname,
            (consumer, _own(settings)),
            endpoints,
            probe_address,
            verify_timeout,
        )
        run.dane = _dane_settings(dane)
        with _deploy_lock(name):
            if not run.test:  # a dry run reports what is served by name
                serving.probe_early()  # under the lock: no other deploy is reloading
            with _source_pair(
                source, hostname, live_dir, source_minion, fingerprint, route
            ) as pair:
                _deploy(run, serving, pair)
        run.ret["comment"] = "\n".join([run.ret["comment"], *run.notes])
    except (CommandExecutionError, SaltInvocationError) as exc:
        run.ret.update(result=False, changes={}, comment=f"Nothing deployed: {exc}")
    except Exception as exc:  # a run never ends in a traceback, and is recorded
        log.error("certsync: unexpected error deploying into %s", name, exc_info=True)
        run.ret.update(
            result=False,
            changes={},
            comment=f"Nothing deployed: unexpected {type(exc).__name__}: {exc}",
        )
    _record_run(run)
    return run.ret


def deployed(name=None, test=False, **kwargs):
    """
    ``deploy`` as the master's runner sends it to a consumer on
    ``certsync/published``, the return shaped as ``state.single`` returns it
    (under ``certsync_|-<name>_|-<name>_|-deployed``), so the highstate
    outputter shows it. Without ``name``, this consumer's own settings from
    its own pillar (``certsync_settings.deploy_args``: the arguments the
    formula's ``certsync.deployed`` SLS gives the state), for the
    publication of ``source_minion`` (which its pillar must name as the
    source) for ``route`` (unset: the default route) and the announced
    ``fingerprint``: what the runner sends. With
    ``name``, the arguments given. Refused, each problem named, when this
    minion's certsync pillar fails ``certsync_settings.check``. Exits
    non-zero when ``result`` is False.

    CLI Example:

    .. code-block:: bash

        salt mail-host certsync_deploy.deployed source_minion=npm-host --out=highstate
        salt web-host certsync_deploy.deployed /etc/certsync/mail.example.com \
            hostname=mail.example.com source_minion=npm-host \
            consumer=service units='[nginx]' \
            files='[{path: /etc/nginx/tls/fullchain.pem, contents: fullchain}]' \
            endpoints='[https]' --out=highstate
    """
    arguments = {key: value for key, value in kwargs.items() if not key.startswith("__")}
    ret = _settings_refused(name or "certsync")
    if ret is None and name is None:
        name, arguments, ret = _own_arguments(arguments)
    try:
        ret = ret or deploy(name, test=test, **arguments)
    except TypeError as exc:  # an argument deploy does not take
        raise SaltInvocationError(f"certsync_deploy.deployed: {exc}") from None
    name = ret["name"]
    __context__["retcode"] = 1 if ret.get("result") is False else 0
    return {f"certsync_|-{name}_|-{name}_|-deployed": {**ret, "__id__": name, "__run_num__": 0}}


def _own_arguments(sent):
    """The deploy's name and arguments from this consumer's own pillar, for the
    publication the runner announced (``source_minion``, ``fingerprint``); or a
    refusal's return when its pillar names another source or no such consumer."""
    source = sent.get("source_minion")
    unknown = sorted(set(sent) - {"source_minion", "fingerprint", "route"})
    try:
        if unknown:
            raise SaltInvocationError(
                f"without a name the deploy takes source_minion, fingerprint and route only, not "
                f"{', '.join(unknown)}"
            )
        own = __salt__["certsync_settings.deploy_args"](
            sent.get("fingerprint") or "", route=sent.get("route") or "default"
        )
    except (CommandExecutionError, SaltInvocationError) as exc:
        return None, None, _refusal("certsync", f"Nothing deployed: {exc}")
    name = own.pop("name")
    if own.get("source_minion") != source:
        why = (
            f"Nothing deployed: this minion's certsync pillar names {own.get('source_minion')!r} "
            f"as the source, not {str(source)[:80]!r}"
        )
        return name, None, _refusal(name, why)
    return name, own, None


def _refusal(name, comment):
    return {"name": name, "result": False, "changes": {}, "comment": comment}


def _settings_refused(name):
    """The return of a deploy refused because this minion's certsync pillar has problems
    by the formula's check (``certsync_settings.check``: a key it does not know, a value
    of the wrong type, a credential of another minion), each named; None when it has
    none. The formula's states wait for the same check (certsync-settings)."""
    if "certsync_settings.check" not in __salt__ or not __pillar__.get("certsync"):
        return None  # by the CLI on a minion without the pillar: its arguments alone
    checked = __salt__["certsync_settings.check"]()
    if not checked["problems"]:
        return None
    return _refusal(
        name,
        "Nothing deployed: this minion's certsync pillar fails the check "
        "(certsync_settings.check):\n" + "\n".join(f"  {p}" for p in checked["problems"]),
    )


@dataclasses.dataclass
class _Run:
    """One deploy into ``name``: its settings, the lines it adds to the comment, what the
    DANE gate said, and the return it builds."""

    name: str
    test: bool = False
    min_days: object = 7
    ca_file: str = None
    allow_older: bool = False
    dane: object = None
    route: str = None
    notes: list = dataclasses.field(default_factory=list)
    dane_steps: list = dataclasses.field(default_factory=list)
    dane_pending: str = None  # the TLSA record to publish before the deploy may go on
    ret: dict = None

    def __post_init__(self):
        self.ret = {"name": self.name, "result": False, "changes": {}, "comment": ""}


def _paused(name, by_pillar):
    """Why deploys into ``name`` are paused (the pillar, or a roll back), or None."""
    if by_pillar:
        return "Paused by the pillar (paused: true): nothing deployed"
    pause = (
        __salt__["certsync_monitor.paused"](name) if "certsync_monitor.paused" in __salt__ else None
    )
    if not pause:
        return None
    return (
        f"Paused since {_utc(pause['since'])} ({pause['reason']}): nothing deployed. "
        "To deploy again: salt <this minion> state.apply certsync.resume"
    )


def _record_run(run):
    """Note the run's result for monitoring (certsync_monitor); a dry run is not a run."""
    if run.test or "certsync_monitor.record_deploy" not in __salt__:
        return
    ret = run.ret
    installed = bool(ret["changes"].get("new"))  # even when a later step failed
    try:
        __salt__["certsync_monitor.record_deploy"](
            run.name,
            ret["result"],
            installed,
            ret["comment"],
            dane_pending=run.dane_pending,
            certificate=__salt__["certsync.deployed_info"](run.name) if installed else None,
            **({"route": run.route} if run.route not in (None, "", "default") else {}),
        )
    except OSError as exc:
        log.warning("certsync: cannot record the result of the run for %s: %s", run.name, exc)


def _deploy(run, serving, pair):
    """Validate, plan, install and serve one source pair; the outcome in ``run.ret``."""
    fullchain, key, origin = pair
    ret, hostname = run.ret, serving.hostname
    validation = __salt__["certsync.validate"](
        fullchain, key, hostname, min_days=run.min_days, ca_file=run.ca_file
    )
    if not validation["valid"]:
        ret["comment"] = "Source pair is invalid, nothing deployed:\n" + "\n".join(
            validation["problems"]
        )
        return
    layout = serving.call("layout", run.name, fullchain, hostname)
    serving.names = [hostname, *layout["names"], *serving.without_sni()]
    serving.preflight()  # in a dry run too: a service that is not there fails both
    run.notes += [*layout["notes"], *serving.call("checks", hostname, validation, run.test)]
    plan = _plan(fullchain, key, layout)
    # what is served now is reported by name when nothing is installed (or in a dry run)
    every_name = not plan or run.test
    served = serving.set_aside_unreachable(every_name) if serving.endpoints else {}
    run.notes += serving.unreachable_lines()
    if not plan:
        _converge_served(run, serving, validation, origin, served)
        if run.dane and serving.endpoints and ret["result"] is not False:
            _dane_retire(run, hostname)
        return
    old = __salt__["certsync.deployed_info"](run.name)
    older = not run.allow_older and _older_than_served(run.name, old, validation)
    if older:
        ret["comment"] = older
        return
    if run.dane and _dane_gate(run, hostname, fullchain):
        return
    ret["changes"] = {
        **ret["changes"],
        "old": _summary(old or {}),
        "new": _summary(validation),
        "dirs": [directory for directory, _ in plan],
    }
    if run.test:
        _test_plan(run, serving, plan, origin, served)
        return
    done = _apply(fullchain, key, plan, layout)
    new, previous = validation["fingerprint"], (old or {}).get("fingerprint")
    try:
        served = not serving.active or serving.make_served(new)
        if not served:
            _fail_and_roll_back(run, serving, done, new, previous)
            return
    except Exception as exc:  # whatever it is, the previous pair comes back
        _restore_after_error(run, serving, done, exc, previous)
        return
    ret["result"] = True
    ret["comment"] = f"Installed certificate {new} from {origin} into {', '.join(done)}"
    if serving.log:
        ret["comment"] += f"; {'; '.join(serving.log)}"
        ret["changes"]["served"] = sorted(serving.last) if serving.endpoints else []
    ret["comment"] += "".join(f"\nDANE: {step}" for step in run.dane_steps)
    if run.dane and serving.endpoints:
        _dane_retire(run, hostname)
    elif run.dane:
        ret["comment"] += "\nDANE: no endpoints verified, so no old TLSA record is removed"


def _older_than_served(name, served, validation):
    """Why the source's certificate must not replace what is served, or None: certsync
    installed what is served (its deploy record says so) and the source's certificate
    was issued before it (an older mine entry, e.g. a restored master cache)."""
    if not served or "certsync_monitor.last_deploy" not in __salt__:
        return None
    installed = (__salt__["certsync_monitor.last_deploy"](name) or {}).get("certificate") or {}
    if installed.get("fingerprint") != served["fingerprint"]:
        return None  # not certsync's own (the service's own, a hand copy): nothing to compare
    if not validation.get("not_before") or validation["not_before"] >= served["not_before"]:
        return None
    return (
        f"Nothing deployed: the source's certificate {_short(validation['fingerprint'])} was "
        f"issued {validation['not_before']}, before the one certsync installed and serves "
        f"({_short(served['fingerprint'])}, issued {served['not_before']}): an older "
        "publication (a restored master cache?) never replaces a newer certificate. "
        "To deploy it anyway: allow_older: true"
    )


def _dane_settings(dane):
    if not dane:
        return None
    if dane is not True and not isinstance(dane, dict):
        raise SaltInvocationError("dane must be true or a mapping (port, nameservers, ...)")
    if "certsync_dane.tlsa_gate" not in __salt__:
        raise SaltInvocationError(
            "dane is on but the certsync_dane module (dnspython) is not available"
        )
    return dane


def _dane_gate(run, hostname, fullchain):
    """True when the DANE gate holds the new certificate back (``run.ret`` says why)."""
    ret = run.ret
    try:
        gate = __salt__["certsync_dane.tlsa_gate"](
            hostname, fullchain, os.path.join(run.name, "cert.pem"), run.dane, test=run.test
        )
    except (CommandExecutionError, SaltInvocationError) as exc:
        # a DNS provider's failure: the record still pending, with the reason (status and
        # the dane_pending alert show both); the pair that serves keeps serving
        port = run.dane.get("port", 25) if isinstance(run.dane, dict) else 25
        name = __utils__["certsync_pem.tlsa_name"](hostname, port, "tcp").rstrip(".")
        run.dane_pending = f"{name}. IN TLSA {__salt__['certsync.tlsa'](fullchain)}"
        ret["result"] = False
        ret["comment"] = f"Nothing deployed: {exc}"
        return True
    ret["changes"] = {"tlsa": {"added": gate["added"]}} if gate["added"] else {}
    if gate["ready"]:
        run.dane_steps = gate["steps"]
        return False
    run.dane_pending = gate.get("publish") or f"{gate['name']}. IN TLSA {gate['record']}"
    ret["result"] = None if run.test else False
    ret["comment"] = "\n".join([*(f"DANE: {step}" for step in gate["steps"]), gate["comment"]])
    return True


def _dane_retire(run, hostname):
    """After the new pair is served: remove the old TLSA record of a rollover."""
    ret = run.ret
    try:
        retired = __salt__["certsync_dane.tlsa_retire"](
            hostname, os.path.join(run.name, "cert.pem"), run.dane, test=run.test
        )
    except Exception as exc:  # the new pair is served: whatever failed, it stays reported
        if not isinstance(exc, (CommandExecutionError, SaltInvocationError)):
            log.error("certsync: unexpected error retiring the old TLSA record", exc_info=True)
            exc = f"unexpected {type(exc).__name__}"
        ret["result"] = False
        ret["comment"] += (
            f"\nDANE: the old TLSA record is still published ({exc}); the next run removes it"
        )
        return
    if retired["removed"]:
        verb = "would remove" if retired["pending"] else "removed"
        ret["comment"] += f"\nDANE: {verb} the old TLSA record {'; '.join(retired['removed'])}"
        if not retired["pending"]:
            ret["changes"].setdefault("tlsa", {})["removed"] = retired["removed"]


def _restore_after_error(run, serving, done, exc, previous):
    """A step after the install failed: the previous pair back in place, and served
    again (a consumer's copies of it written again: a failed reload may have left the
    new pair in some)."""
    restore_errors = _restore(done)
    run.ret["changes"] = {}
    run.ret["comment"] = f"{exc}; restored the previous pair in: {', '.join(done)}"
    if restore_errors:
        run.ret["comment"] += f"; restoring FAILED: {'; '.join(restore_errors)}"
        return
    if not (previous and serving.active):
        return
    serving.log = []
    try:
        again = serving.make_served(previous, restoring=True)
    except Exception as second:  # reported; the restored pair stays
        if not isinstance(second, (CommandExecutionError, SaltInvocationError)):
            log.error("certsync: serving the previous pair again failed", exc_info=True)
        run.ret["comment"] += f"; serving it again failed: {second}"
        return
    verdict = "is served again" if again else "is NOT served everywhere again"
    run.ret["comment"] += f"; the previous pair {verdict} after: {'; '.join(serving.log)}"


def _test_plan(run, serving, plan, origin, served):
    ret = run.ret
    ret["result"] = None
    lines = [f"Would install the pair from {origin}: {_describe_plan(plan)}"]
    if serving.settings.get("writes"):
        lines.append(f"Would write {', '.join(serving.settings['writes'])}")
    if serving.services:
        lines.append(f"Would reload {', '.join(serving.services)}")
    if serving.endpoints:
        new = ret["changes"]["new"]["fingerprint"]
        old = ret["changes"]["old"]["fingerprint"]
        names = _pair_names(run.name, new, old)
        lines.append("Served now:")
        lines += _indented(_served_report(served, new, names))
    ret["comment"] = "\n".join(lines)


def _dane_refuses_previous(name, hostname, dane, force):
    """Why the previous pair in ``name`` may not go live on a DANE host (no published
    TLSA record matches it), or None."""
    if not dane or force:
        return None
    _dane_settings(dane)
    previous = os.path.join(name, "cert.pem.certsync-prev")
    lookup = __salt__["certsync_dane.dane_lookup"](dane)
    check = __salt__["maildns.tlsa_check"](hostname, {"previous": previous}, **lookup)
    if check["matching"]["previous"]:
        return None
    wanted = __salt__["certsync.tlsa"](previous)
    published = "; ".join(row["record"] for row in check["records"]) or "none"
    return (
        f"DANE: no TLSA record at {check['name']} matches the previous pair's key "
        f"(published: {published}), so clients that check DANE would refuse it. Publish "
        f"{check['name']}. IN TLSA {wanted}, wait its TTL, and roll back again; or roll "
        "back anyway with force: true"
    )


def roll_back(
    name,
    hostname,
    consumer=None,
    endpoints=None,
    probe_address=None,
    verify_timeout=60,
    dane=None,
    force=False,
    test=False,
    **settings,
):
    """
    Undo the deploy of the certificate ``name`` holds, and keep it undone: the
    previous pair back in ``name`` and in every per-name directory the same
    deploy changed, as one step (``certsync.rollback``), then the services
    reloaded (restarted where the reload does not take) and every endpoint
    checked on the wire; deploys into ``name`` (the schedule's, the reactor's)
    are paused until ``certsync.resumed``. The arguments are ``deploy``'s;
    with ``test=True`` nothing changes and the comment gives the plan. The
    ``certsync.rolled_back`` state is a thin layer over this function.

    dane
        ``deploy``'s: on a DANE host the previous pair must match a published
        TLSA record, as any pair that goes live must; one that none matches
        is refused, naming the record to publish.

    force
        Roll back all the same, with no record matching the previous pair
        (clients that check DANE refuse it until one is published). Default:
        False.

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_deploy.roll_back /etc/certsync/mail.example.com \\
            mail.example.com consumer=service units='[postfix]' \\
            endpoints='[smtp, imaps, https]' test=True
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        serving = _Serving(
            name, hostname, (consumer, _own(settings)), endpoints, probe_address, verify_timeout
        )
        with _deploy_lock(name):
            plan = __salt__["certsync.rollback_plan"](name)
            refused = _dane_refuses_previous(name, hostname, dane, force)
            if refused:
                ret["comment"] = f"Nothing rolled back: {refused}"
                return ret
            steps = [
                f"{step['dir']}: {_short(step['holds'])} -> {_short(step['restores'])}"
                for step in plan
            ]
            serving.preflight()
            if test:
                ret["result"] = None
                ret["comment"] = "\n".join(
                    ["Would roll back:", *_indented(steps)]
                    + ([f"Would reload {', '.join(serving.services)}"] if serving.services else [])
                    + ["Would pause the deploys until certsync.resumed"]
                )
                return ret
            restored = __salt__["certsync.rollback"](name)
            __salt__["certsync_monitor.pause"](
                name, f"rolled back from {_short(plan[0]['holds'])} by certsync.rolled_back"
            )
            serving.names = [
                hostname,
                *(os.path.basename(s["dir"]) for s in plan[1:]),
                *serving.without_sni(),
            ]
            served = not serving.active or serving.make_served(restored["restored"], True)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = f"Nothing rolled back: {exc}"
        return ret
    ret["changes"] = {
        "rolled_back": {"old": plan[0]["holds"], "new": plan[0]["restores"]},
        "dirs": [step["dir"] for step in plan],
        "paused": True,
    }
    ret["result"] = bool(served)
    lines = ["Rolled back:", *_indented(steps)]
    if serving.log:
        lines.append("; ".join(serving.log))
    if serving.endpoints:
        verdict = "served on every endpoint" if served else "NOT served everywhere"
        lines.append(f"The previous pair {_short(restored['restored'])} is {verdict}")
        lines += _indented(_served_report(serving.last, restored["restored"], {}))
    lines.append(
        "Deploys are paused (schedule and reactor deploy nothing); to deploy again: "
        "salt <this minion> state.apply certsync.resume"
    )
    ret["comment"] = "\n".join(lines)
    return ret
