"""
ufw lets certsync's traffic out
===============================

:depends: the ``certsync_ufw`` execution module; ufw

.. code-block:: yaml

    certsync-egress-allow-2525:
      certsync_ufw.allowed_out:
        - port: 2525
        - address: 192.0.2.25
        - comment: 'certsync: relay'

A rule in place (ufw's rules, read in the order ufw matches them) is left
as it is; ``test=True`` names the ``ufw`` command it would run. An inactive
ufw is an error: its rules would not apply, and the host's firewall is
something else.
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync_ufw"


def __virtual__():
    if "certsync_ufw.status" not in __salt__:
        return (False, "the certsync_ufw execution module is not available")
    return __virtualname__


def allowed_out(name, port, address=None, comment="certsync"):
    """
    ufw allows TCP out to ``address`` (any when not given) on ``port``.

    name
        A label for the rule.

    port
        The destination port.

    address
        The destination address or network; any when not given.

    comment
        ufw's comment on the rule (printable, at most 100 characters).

    .. code-block:: yaml

        certsync-egress-allow-4505:
          certsync_ufw.allowed_out:
            - port: 4505
            - comment: 'certsync: salt master'
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        argv = __salt__["certsync_ufw.rule"](port, address, comment)
        state = __salt__["certsync_ufw.status"]()
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret
    command = __salt__["certsync_ufw.command"](argv)
    if not state["active"]:
        ret["comment"] = (
            "ufw is not active on this host, so its rules would not apply: enable it, or set "
            "relay:firewall:backend to nftables"
        )
        return ret
    if __salt__["certsync_ufw.allowed_out"](port, address, rules=state["rules"]):
        ret["result"] = True
        ret["comment"] = f"ufw already allows tcp out to {address or 'any'} port {port}"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"would run: {command}"
        ret["changes"] = {"added": command}
        return ret
    try:
        answer = __salt__["certsync_ufw.allow_out"](port, address, comment)
        present = __salt__["certsync_ufw.allowed_out"](port, address)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret
    if not present:
        ret["comment"] = (
            f"ran {command} ({answer}), but ufw's rules do not let the traffic out: a rule "
            "listed before it (deny, reject, limit) matches first"
        )
        return ret
    ret["result"] = True
    ret["comment"] = f"ran {command}: {answer}"
    ret["changes"] = {"added": command}
    return ret
