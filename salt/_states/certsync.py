"""
Keep a deployed certificate pair in step with its source, and served
===================================================================

:depends: the ``certsync_deploy`` execution module (the deploy and the roll
    back), ``certsync`` and ``certsync_mine`` (the source's publication),
    ``certsync_monitor`` (pauses)

Thin states over the execution modules, as Salt's ``x509_v2`` states are:

.. code-block:: yaml

    mailcow-certificate:
      certsync.deployed:
        - name: /opt/mailcow-dockerized/data/assets/ssl
        - hostname: mail.example.com
        - live_dir: /etc/letsencrypt/live    # or: source: /etc/letsencrypt/live/npm-5
        # or another kind: source: {kind: caddy, storage: /var/lib/caddy/.local/share/caddy}
        - services: [postfix-mailcow, dovecot-mailcow, nginx-mailcow]
        - endpoints: [smtp, submission, smtps, imap, imaps, pop3, pop3s, sieve, https]
        - probe_address: 127.0.0.1

``certsync.deployed`` validates the source pair, installs it atomically only
when it differs from ``cert.pem``/``key.pem`` in ``name``, reloads the
services, and checks on the wire that every endpoint serves it. A service
whose reload does not take is restarted; when the new certificate still is
not served everywhere, the previous pair is restored and served again, and
the state fails saying which endpoint served what. ``changes`` carries
fingerprints, ``not_after`` and SANs, never key material.
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync"


def __virtual__():
    if "certsync.validate" not in __salt__:
        return (False, "the certsync execution module is not available")
    return __virtualname__


def deployed(name, hostname, **kwargs):
    """
    Make the certificate pair in ``name`` match the source pair, and make the
    services serve it: ``certsync_deploy.deploy`` with this state's arguments
    (each documented there: ``salt-call sys.doc certsync_deploy.deploy``),
    in a dry run with ``test=True``.

    .. code-block:: yaml

        mailcow-certificate:
          certsync.deployed:
            - name: /opt/mailcow-dockerized/data/assets/ssl
            - hostname: mail.example.com
            - source_minion: npm-host
            - services: [postfix-mailcow, dovecot-mailcow, nginx-mailcow]
            - endpoints: [smtp, imaps, https]
    """
    return _call("certsync_deploy.deploy", name, hostname, kwargs)


def rolled_back(name, hostname, **kwargs):
    """
    Undo the deploy of the certificate ``name`` holds, serve the previous
    pair and pause the deploys until ``certsync.resumed``:
    ``certsync_deploy.roll_back`` with this state's arguments (those of
    ``certsync.deployed`` that reach the services and the wire).

    .. code-block:: yaml

        mailcow-rolled-back:
          certsync.rolled_back:
            - name: /opt/mailcow-dockerized/data/assets/ssl
            - hostname: mail.example.com
            - services: [postfix-mailcow, dovecot-mailcow, nginx-mailcow]
            - endpoints: [smtp, imaps, https]
    """
    return _call("certsync_deploy.roll_back", name, hostname, kwargs)


def _call(function, name, hostname, kwargs):
    """The state's return from ``function``: an argument it does not take fails the state."""
    # ``test`` in a state's arguments is Salt's (already in __opts__), never the function's
    arguments = {k: v for k, v in kwargs.items() if not k.startswith("__") and k != "test"}
    try:
        return __salt__[function](name, hostname, test=__opts__["test"], **arguments)
    except TypeError as exc:
        return {"name": name, "result": False, "changes": {}, "comment": f"{function}: {exc}"}


def resumed(name):
    """
    Let deploys into ``name`` run again after a roll back
    (``certsync.rolled_back``). The formula's ``certsync.resume`` applies it,
    then the deploy.

    .. code-block:: yaml

        mailcow-resumed:
          certsync.resumed:
            - name: /opt/mailcow-dockerized/data/assets/ssl
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    pause = __salt__["certsync_monitor.paused"](name)
    if not pause:
        ret["comment"] = f"Deploys into {name} are not paused"
        return ret
    if __opts__["test"]:
        ret.update(result=None, comment=f"Would resume the deploys into {name}")
        return ret
    __salt__["certsync_monitor.resume"](name)
    ret["changes"] = {"paused": {"old": True, "new": False}}
    ret["comment"] = f"Deploys into {name} resumed (paused for: {pause['reason']})"
    return ret


def settings_valid(name="certsync"):
    """
    The formula's first state: fail, naming each problem, when this minion's
    ``certsync`` pillar has a key the formula does not know (with the closest
    one it knows), lacks ``hostname``, or names a source or consumers but not
    this minion's id (``certsync_settings.check``). A minion meant to have no
    role says so with ``certsync:no_role: true``.

    .. code-block:: yaml

        certsync-settings:
          certsync.settings_valid: []
    """
    checked = __salt__["certsync_settings.check"]()
    role = checked["role"] or "none"
    ret = {"name": name, "changes": {}, "result": checked["valid"], "comment": ""}
    if checked["valid"]:
        ret["comment"] = f"The certsync pillar is valid; role: {role} ({checked['why']})"
        return ret
    lines = [*checked["problems"]]
    if not checked["role"] and checked["why"] not in lines:
        lines.append(checked["why"])
    ret["comment"] = "The certsync pillar needs fixing:\n" + "\n".join(f"- {x}" for x in lines)
    return ret


def published(name, consumers, kind=None, force=False, route=None, **where):
    """
    Publish the certificate for ``name`` (the mail host name) from this
    source minion to the ``consumers`` through the Salt mine: one entry per
    consumer, readable only by it, with the private key sealed to its
    recipient key; then ``certsync/published`` is fired. Changes (and the
    event) only when the certificate or a consumer's recipient key changed;
    otherwise the mine entries are refreshed quietly.

    name
        The host name the certificate covers.

    consumers
        The consumer minion ids.

    kind
        The source kind (``certsync_source``). Default: ``npm``.

    The other arguments are the source's settings of its kind (``npm``:
    ``live_dir`` [and ``dir``], or ``source``, a lineage directory), as
    ``certsync_source.locate`` takes them.

    force
        Fire ``certsync/published`` even when nothing changed.

    route
        The route this certificate is published for (a name under the
        pillar's ``certsync:certificates``): its own mine entries, named in
        the event. Default: the route of ``certsync:hostname``.

    .. code-block:: yaml

        certsync-published:
          certsync.published:
            - name: mail.example.com
            - consumers: [mailcow-host]
            - live_dir: /opt/npm/letsencrypt/live
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        found = __salt__["certsync_source.locate"](name, kind, **where)
        origin = found["dir"]
        done = __salt__["certsync_mine.publish"](
            found["fullchain"],
            found["privkey"],
            consumers,
            hostname=name,
            force=force,
            test=__opts__["test"],
            route=route,
        )
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = f"Nothing published: {exc}"
        return ret
    lines = []
    if done["missing_recipient_key"]:
        lines.append(
            "No recipient key in the mine for "
            + ", ".join(done["missing_recipient_key"])
            + " (apply the consumer state there first)"
        )
    if done["problems"]:
        lines.append("Warning, the consumers will refuse it: " + "; ".join(done["problems"]))
    fingerprint = done["fingerprint"]
    if not done["changed"] and not force:
        ret["result"] = not done["missing_recipient_key"]
        lines.insert(0, f"Certificate {fingerprint} from {origin} is already published")
    elif __opts__["test"]:
        ret["result"] = None
        lines.insert(0, f"Would publish certificate {fingerprint} from {origin}")
        ret["changes"] = {"fingerprint": fingerprint, "consumers": done["consumers"]}
    else:
        ret["result"] = not done["missing_recipient_key"]
        consumers = ", ".join(done["consumers"]) or "nobody"
        lines.insert(0, f"Published certificate {fingerprint} from {origin} for {consumers}")
        ret["changes"] = {
            "fingerprint": fingerprint,
            "not_after": done["not_after"],
            "consumers": done["consumers"],
        }
    ret["comment"] = "\n".join(lines)
    return ret


def recipient_published(name, sources):
    """
    Make this consumer's recipient key pair (created once, 0600, in the
    minion's ``pki_dir``) and put its public half in the mine for the
    ``sources`` only. When the key is new (a rebuilt host), fire
    ``certsync/recipient`` so that the sources seal for it again.

    name
        A label for the state.

    sources
        The source minion ids allowed to read the public key.

    .. code-block:: yaml

        certsync-recipient-key:
          certsync.recipient_published:
            - name: certsync
            - sources: [npm-host]
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        done = __salt__["certsync_mine.publish_recipient_key"](sources, test=__opts__["test"])
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret
    if __opts__["test"]:
        ret["result"] = None if done["created"] else True
        ret["comment"] = (
            "Would create the recipient key and publish its public half"
            if done["created"]
            else "The recipient key exists; its public half would be refreshed in the mine"
        )
        return ret
    ret["result"] = True
    if done["created"]:
        __salt__["event.send"]("certsync/recipient", {"sources": done["sources"]})
        ret["changes"] = {"created": True, "public": done["public"]}
        ret["comment"] = (
            f"Created the recipient key and published it for {', '.join(done['sources'])}"
        )
    else:
        ret["comment"] = f"The recipient key is published for {', '.join(done['sources'])}"
    return ret


def key_kept(name, kind=None, **where):
    """
    Make the source keep the key of the certificate for ``name`` (the host
    name) at its next renewal, so that a ``TLSA 3 1 1`` record (and anything
    else pinning the key) survives it: ``certsync_source.keep_key`` for the
    source ``kind`` with its settings (``npm``: ``live_dir`` [and ``dir``]:
    certbot's ``reuse_key = True`` under ``[renewalparams]`` of the lineage's renewal
    file, every other line kept; certbot's default, and NPM's, is a new key at every
    renewal).

    .. code-block:: yaml

        certsync-key-kept:
          certsync.key_kept:
            - name: mail.example.com
            - kind: npm
            - live_dir: /etc/nginx/letsencrypt/live
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        done = __salt__["certsync_source.keep_key"](name, kind, test=__opts__["test"], **where)
    except (CommandExecutionError, SaltInvocationError) as exc:
        kind = __utils__["certsync_settings.source_kind"](kind)
        ret["comment"] = f"The {kind} source may change the key: {exc}"
        return ret
    if not done["changed"]:
        ret.update(result=True, comment=f"{done['where']} already keeps the key")
        return ret
    ret["changes"] = {"key_kept": {"old": False, "new": True}, "where": done["where"]}
    if __opts__["test"]:
        ret.update(result=None, comment=f"Would make {done['where']} keep the key")
    else:
        ret.update(
            result=True, comment=f"{done['where']} keeps the key at the next renewal from now on"
        )
    return ret
