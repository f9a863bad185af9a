"""
Keep a deployed certificate pair in step with its source
========================================================

:depends: the ``certsync`` execution module (``salt/_modules/certsync.py``)

.. code-block:: yaml

    mailcow-certificate:
      certsync.deployed:
        - name: /opt/mailcow-dockerized/data/assets/ssl
        - hostname: mail.example.com
        - live_dir: /etc/letsencrypt/live    # or: source: /etc/letsencrypt/live/npm-5
        - min_days: 7

The state validates the source pair, compares it with ``cert.pem``/``key.pem``
in ``name`` and installs it atomically only when they differ. ``changes``
carries fingerprints, ``not_after`` and SANs, never key material. On any
failure the pair that was deployed stays as it was.
"""

import os

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync"


def __virtual__():
    if "certsync.validate" not in __salt__:
        return (False, "the certsync execution module is not available")
    return __virtualname__


def _resolve_source(source, hostname, live_dir):
    """Return (fullchain, key, description) of the local source pair."""
    if source and live_dir:
        raise SaltInvocationError("give either source or live_dir, not both")
    if source:
        return (
            os.path.join(source, "fullchain.pem"),
            os.path.join(source, "privkey.pem"),
            source,
        )
    if live_dir:
        found = __salt__["certsync.find_source"](hostname, live_dir)
        return found["fullchain"], found["privkey"], found["dir"]
    raise SaltInvocationError("a source directory or a live_dir to search is required")


def _summary(validation):
    return {key: validation.get(key) for key in ("fingerprint", "not_after", "sans")}


def _plan(fullchain, key, name, sni):
    """Return the list of directories whose pair differs from the source."""
    dirs = [name]
    if sni:
        dirs += __salt__["certsync.sni_dirs"](name, fullchain)
    plan = []
    for directory in dirs:
        comparison = __salt__["certsync.compare"](fullchain, key, directory)
        if not comparison["current"]:
            plan.append((directory, comparison))
    return plan


def _apply(fullchain, key, plan):
    """Install into each planned directory; on failure restore those done."""
    done = []
    try:
        for directory, _ in plan:
            __salt__["certsync.install"](fullchain, key, directory)
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
            __salt__["certsync.rollback"](directory)
        except CommandExecutionError as exc:
            errors.append(str(exc))
    return errors


def _describe_plan(plan):
    return "; ".join(
        f"{directory}: {', '.join(comparison['differences'])}" for directory, comparison in plan
    )


def deployed(
    name,
    hostname,
    source=None,
    live_dir=None,
    min_days=7,
    sni=True,
    ca_file=None,
):
    """
    Make the certificate pair in ``name`` match the source pair.

    name
        The directory mailcow reads ``cert.pem`` (0644) and ``key.pem`` (0600)
        from, e.g. ``/opt/mailcow-dockerized/data/assets/ssl``. It must exist
        and must not be a symlink.

    hostname
        The mail host name the certificate must cover (RFC 6125).

    source
        A directory holding ``fullchain.pem`` and ``privkey.pem``, such as
        NPM's ``live/npm-5``. Read through its symlinks.

    live_dir
        Instead of ``source``: NPM's ``live/`` directory, searched for the
        certificate that covers ``hostname`` (the latest ``not_after`` wins).

    min_days
        Refuse a source certificate with fewer days of validity left.
        Default: 7.

    sni
        With mailcow's ``ENABLE_SSL_SNI=y``, per-name directories
        ``name/<dns-name>/`` that already exist for a name the certificate
        covers are kept in step too. Default: True.

    ca_file
        Optional PEM bundle of trusted roots the chain must verify against.
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        fullchain, key, origin = _resolve_source(source, hostname, live_dir)
        validation = __salt__["certsync.validate"](
            fullchain, key, hostname, min_days=min_days, ca_file=ca_file
        )
        if not validation["valid"]:
            ret["comment"] = "Source pair is invalid, nothing deployed:\n" + "\n".join(
                validation["problems"]
            )
            return ret
        plan = _plan(fullchain, key, name, sni)
        if not plan:
            ret["result"] = True
            ret["comment"] = (
                f"Certificate {validation['fingerprint']} from {origin} is already deployed"
            )
            return ret
        old = __salt__["certsync.deployed_info"](name)
        ret["changes"] = {
            "old": _summary(old or {}),
            "new": _summary(validation),
            "dirs": [directory for directory, _ in plan],
        }
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"Would install the pair from {origin}: {_describe_plan(plan)}"
            return ret
        done = _apply(fullchain, key, plan)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["changes"] = {}
        ret["comment"] = f"Nothing deployed: {exc}"
        return ret
    ret["result"] = True
    ret["comment"] = f"Installed certificate {validation['fingerprint']} from {origin} into " + (
        ", ".join(done)
    )
    return ret
