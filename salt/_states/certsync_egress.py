"""
Is the way out open? A check state for a mail host behind a firewall
====================================================================

:depends: the ``certsync_egress`` execution module

.. code-block:: yaml

    certsync-egress:
      certsync_egress.reachable:
        - relay: mail.smtp2go.com:2525

Fails, naming each blocked target with the reason and the nftables rule that
would let it through, when the relay (TCP, STARTTLS, a verified certificate)
or the Salt master's ports cannot be reached from this host. It changes
nothing, so ``test=True`` runs the same check.
"""

from salt.exceptions import SaltInvocationError

__virtualname__ = "certsync_egress"


def __virtual__():
    if "certsync_egress.check" not in __salt__:
        return (False, "the certsync_egress execution module is not available")
    return __virtualname__


def reachable(
    name, relay=None, master=None, master_ports=None, relay_address=None, cafile=None, timeout=5
):
    """
    The relay and the Salt master are reachable from this host
    (``certsync_egress.check``).

    name
        A label for the check.

    relay
        The smarthost, ``host:port``.

    master, master_ports, relay_address, cafile, timeout
        As ``certsync_egress.check``: default the minion's master and its
        ``publish_port`` and ``master_port``; the addresses the relay's name
        resolves to; the system's CAs; 5 s.

    .. code-block:: yaml

        certsync-egress:
          certsync_egress.reachable:
            - name: certsync
            - relay: smtp.relay.example.net:2525
            - master: salt.example.com
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        report = __salt__["certsync_egress.check"](
            relay=relay,
            master=master,
            master_ports=master_ports,
            relay_address=relay_address,
            cafile=cafile,
            timeout=timeout,
        )
    except SaltInvocationError as exc:
        ret["comment"] = str(exc)
        return ret
    __context__.pop("retcode", None)
    reached = [f"{r['target']} {r.get('address', r['host'])}:{r['port']}" for r in report["checks"]]
    blocked = [row for row in report["checks"] if not row["ok"]]
    if not blocked:
        ret["result"] = True
        ret["comment"] = f"reachable: {', '.join(reached) or 'nothing to check'}"
        return ret
    ret["comment"] = "\n".join(
        f"{r['target']} {r['host']} ({r.get('address', '?')}:{r['port']}) is blocked: {r['error']}"
        + (f"; allow it with: {r['rule']}" if r.get("rule") else "")
        for r in blocked
    )
    return ret
