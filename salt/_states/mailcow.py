"""
mailcow-dockerized configuration
================================

:depends: the ``mailcow`` execution module

.. code-block:: yaml

    mailcow-conf:
      mailcow.conf_set:
        - name: /opt/mailcow-dockerized
        - settings:
            SKIP_LETS_ENCRYPT: y
            ENABLE_SSL_SNI: n
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "mailcow"


def __virtual__():
    if "mailcow.conf_set" not in __salt__:
        return (
            False,
            "the mailcow execution module is not available: install docker "
            "(salt-pip install docker) and run saltutil.sync_all",
        )
    return __virtualname__


def conf_set(name, settings):
    """
    Make ``mailcow.conf`` in the checkout ``name`` hold ``settings``.

    name
        The mailcow-dockerized directory, e.g. ``/opt/mailcow-dockerized``.

    settings
        Mapping of ``mailcow.conf`` keys to values. YAML booleans are written
        as ``y``/``n``, as mailcow spells them.

    mailcow reads ``mailcow.conf`` when containers are created: the comment
    says when ``docker compose up -d`` is needed for a change to take effect.

    .. code-block:: yaml

        certsync-acme-off-in-conf:
          mailcow.conf_set:
            - name: /opt/mailcow-dockerized
            - settings:
                SKIP_LETS_ENCRYPT: "y"
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    if not isinstance(settings, dict) or not settings:
        ret["comment"] = "settings must be a non-empty mapping of mailcow.conf keys to values"
        return ret
    try:
        for key, given in settings.items():
            value = ("y" if given else "n") if isinstance(given, bool) else given
            done = __salt__["mailcow.conf_set"](key, value, path=name, test=__opts__["test"])
            if done["changed"]:
                ret["changes"][key] = {"old": done["old"], "new": done["new"]}
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["changes"] = {}
        ret["comment"] = str(exc)
        return ret
    if not ret["changes"]:
        ret["result"] = True
        ret["comment"] = "mailcow.conf already holds these settings"
        return ret
    keys = ", ".join(ret["changes"])
    compose = f"run `docker compose up -d` in {name} for it to take effect"
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"Would set {keys} in mailcow.conf; then {compose}"
    else:
        ret["result"] = True
        ret["comment"] = f"Set {keys} in mailcow.conf; {compose}"
    return ret


def acme_stood_down(name):
    """
    Make sure acme-mailcow does not fight certsync: it reads
    ``SKIP_LETS_ENCRYPT`` only when its container is created, so with
    ``SKIP_LETS_ENCRYPT=y`` in ``mailcow.conf`` (set it first, e.g. with
    ``mailcow.conf_set``) a running acme-mailcow created without it is
    recreated the way mailcow documents (``docker compose up -d`` in the
    checkout, only that service); where no compose command or compose file is
    there, it is stopped and the comment says why. No acme-mailcow, or one
    created with ``SKIP_LETS_ENCRYPT=y``: nothing to do.

    name
        The mailcow-dockerized directory, e.g. ``/opt/mailcow-dockerized``.

    .. code-block:: yaml

        acme-mailcow-stood-down:
          mailcow.acme_stood_down:
            - name: /opt/mailcow-dockerized
            - require:
              - mailcow: mailcow-conf
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        done = __salt__["mailcow.acme_stand_down"](name, test=__opts__["test"])
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = f"acme-mailcow not stood down: {exc}"
        return ret
    if done["action"] == "none":
        ret["result"] = True
        status = done["status"]
        ret["comment"] = (
            "acme-mailcow runs with SKIP_LETS_ENCRYPT=y"
            if status["running"]
            else "acme-mailcow does not run"
            if status["exists"]
            else "no acme-mailcow container"
        )
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["changes"] = {"acme-mailcow": done["action"]}
        ret["comment"] = f"acme-mailcow runs without SKIP_LETS_ENCRYPT=y: {done['action']} it"
        return ret
    ret["result"] = True
    ret["changes"] = {"acme-mailcow": done["action"]}
    ret["comment"] = (
        f"acme-mailcow ran without SKIP_LETS_ENCRYPT=y: {done['action']} ({done['why']})"
    )
    return ret


def reloaded(name, services):
    """
    Reload ``services`` of the checkout ``name`` (``mailcow.reload``: each
    service's own reload in its container) when a state it watches changed;
    run on its own, it does nothing. For a configuration file of mailcow's
    that a service reads at its reload, e.g. dovecot's ``extra.conf``.

    name
        The mailcow-dockerized directory, e.g. ``/opt/mailcow-dockerized``.

    services
        The compose services to reload, e.g. ``[dovecot-mailcow]``.

    .. code-block:: yaml

        dovecot-reloaded:
          mailcow.reloaded:
            - name: /opt/mailcow-dockerized
            - services: [dovecot-mailcow]
            - watch:
              - file: dovecot-extra-conf
    """
    return {
        "name": name,
        "result": True,
        "changes": {},
        "comment": f"Nothing changed that {', '.join(services)} must reload for",
    }


def mod_watch(name, sfun=None, services=None, **kwargs):
    """A watched state changed: reload ``services`` (Salt calls it for the ``watch``
    requisite of :py:func:`reloaded`)."""
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    if sfun != "reloaded":
        ret["comment"] = f"mailcow.{sfun} has no watch action"
        return ret
    shown = ", ".join(services or [])
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"Would reload {shown}"
        return ret
    try:
        results = __salt__["mailcow.reload"](services, name)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = f"{shown} not reloaded: {exc}"
        return ret
    failed = {s: r.get("error") or r.get("output") for s, r in results.items() if not r["ok"]}
    ret["changes"] = {"reloaded": sorted(s for s in results if s not in failed)}
    if failed:
        ret["comment"] = "Reload failed: " + "; ".join(f"{s}: {e}" for s, e in failed.items())
        return ret
    ret["result"] = True
    ret["comment"] = f"Reloaded {shown}"
    return ret
