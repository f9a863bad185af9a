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
        return (False, "the mailcow execution module is not available")
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
