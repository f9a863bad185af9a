"""
The mail DNS a domain needs
===========================

:depends: the ``maildns`` execution module (dnspython)

Checks the records, changes nothing: a failing row fails the state, and the
comment has one line per failure (record, expected, found, why). Every
option is an option of ``maildns.audit``.

.. code-block:: yaml

    mail-dns:
      maildns.records_ok:
        - name: example.com
        - hostname: mail.example.com
        - addresses: [192.0.2.25]
        - dkim_selectors: [dkim, s1378202]
        - dmarc_policy: reject
        - return_path: {name: bounces.example.com, target: relay.example.net}
        - tlsa_ports: [25]
        - certs: {deployed: /opt/mailcow-dockerized/data/assets/ssl/cert.pem}
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "maildns"


def __virtual__():
    if "maildns.audit" not in __salt__:
        return (False, "the maildns execution module is not available")
    return __virtualname__


def _line(row):
    why = f": {row['why']}" if row["why"] else ""
    return f"  {row['record']}: expected {row['expected']}, found {row['found']}{why}"


def records_ok(name, hostname, **options):
    """
    Check that the mail DNS of domain ``name`` served by ``hostname`` is as
    expected. Read-only, also without ``test=True``: ``changes`` stays empty;
    the comment lists every failing record.

    name
        The mail domain.

    hostname
        The mail host.

    The other options are those of ``maildns.audit`` (``maildns.audit_options``
    lists them). A lookup that fails is listed too (``error``).

    .. code-block:: yaml

        example.com-mail-dns:
          maildns.records_ok:
            - name: example.com
            - hostname: mail.example.com
            - tlsa_ports: [25]
            - dmarc_policy: reject
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    given = {key: value for key, value in options.items() if not key.startswith("__")}
    unknown = sorted(set(given) - set(__salt__["maildns.audit_options"]()))
    if unknown:
        ret["comment"] = f"unknown options: {', '.join(unknown)}"
        return ret
    try:
        report = __salt__["maildns.audit"](name, hostname, **given)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = f"DNS of {name} not checked: {exc}"
        return ret
    finally:
        __context__.pop("retcode", None)
    rows = report["rows"]
    if report["ok"]:
        ret["result"] = True
        ret["comment"] = f"All {len(rows)} DNS checks of {name} pass"
        return ret
    failures = [_line(row) for row in rows if row["result"] != "pass"]
    ret["comment"] = "\n".join(
        [f"{len(failures)} of {len(rows)} DNS checks of {name} fail:", *failures]
    )
    return ret
