"""
The sealed transport over the Salt mine
=======================================

How a certificate travels from the source (NPM's minion) to its consumers
without SSH: each consumer puts a public recipient key in the mine, readable
by its source alone; the source publishes one entry per consumer, readable by
that consumer alone, holding the chain and the private key sealed to it with
HPKE (RFC 9180); the consumer reads its entry,
checks it and opens the key into a private directory. The entries go to the
master in one request per publication, whatever the number of consumers.

:depends: the ``certsync`` execution module, ``cryptography`` >= 47 (HPKE)
"""

import base64
import binascii
import hashlib
import json
import logging
import os
import re

import salt.channel.client
import salt.utils.atomicfile
import salt.utils.mine
from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
except ImportError:  # certsync's __virtual__ refuses to load without cryptography
    pass

log = logging.getLogger(__name__)

__virtualname__ = "certsync_mine"

RECIPIENT_MINE = "certsync_recipient"
#: Seconds to wait for the master to store mine entries.
MINE_TIMEOUT = 60
MAX_SEALED_BYTES = 64 * 1024
MAX_CHAIN_BYTES = 256 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")


def __virtual__():
    if "certsync.validate" not in __salt__:
        return (False, "certsync_mine needs the certsync execution module")
    for needed in ("certsync_files.read_regular", "certsync_pem.canonical_pair"):
        if needed not in __utils__:
            util = needed.split(".")[0]
            return (False, f"certsync_mine needs salt://_utils/{util}.py: saltutil.sync_all")
    return __virtualname__


def _pem(function):
    """A function of the certificate library, salt://_utils/certsync_pem.py."""
    return __utils__[f"certsync_pem.{function}"]


def _cert_mine_name(consumer, route=None):
    """The mine entry a source publishes for ``consumer`` (of ``route``: unset, the
    default route)."""
    try:
        return __utils__["certsync_routes.mine_name"](
            __utils__["certsync_args.minion_id"](consumer), route
        )
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None


def _route(route):
    """``route`` as entries and events carry it: None for the default route."""
    return None if __utils__["certsync_routes.is_default"](route) else route


def publish_recipient_key(sources, test=False):
    """
    Put this consumer's public recipient key in the mine
    (``certsync_recipient``), readable only by the ``sources`` minion ids.
    With ``test=True`` nothing is made or sent; ``created`` says whether the
    key would be created.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_mine.publish_recipient_key '[npm-host]'
    """
    sources = __utils__["certsync_args.minion_ids"](sources, "sources")
    if test:
        return {
            "sources": sources,
            "created": recipient_key(test=True)["created"],
        }
    info = recipient_key()
    entry = {k: info[k] for k in ("kem", "public", "id")}
    _store_in_mine({RECIPIENT_MINE: entry}, sources)
    return {"sources": sources, "created": info["created"], "public": info["public"]}


def _store_in_mine(entries, readers):
    """
    Store ``entries`` (mine name -> data) in this minion's mine on the master,
    each readable only by ``readers`` (a list of ids, or a mapping of entry name
    to its list), and return once the master has stored them.

    This is the request ``mine.send`` and ``mine.update`` end in (``_mine``,
    the same as Salt's ``mine.get`` sends its ``_mine_get``), made from the job
    itself: those functions hand it to the minion's own process as an event
    and then sleep half a second, without knowing whether the master stored
    anything, so an event fired after them could reach the master before the
    entry it announces.
    """
    if __opts__.get("file_client") == "local":
        raise CommandExecutionError("the certsync mine entries need a master: this minion has none")
    data = {
        name: salt.utils.mine.wrap_acl_structure(
            entry,
            allow_tgt=readers[name] if isinstance(readers, dict) else readers,
            allow_tgt_type="list",
        )
        for name, entry in entries.items()
    }
    load = {"cmd": "_mine", "id": __opts__["id"], "data": data, "clear": False}
    with salt.channel.client.ReqChannel.factory(__opts__) as channel:
        stored = channel.send(load, timeout=MINE_TIMEOUT)
    if stored is not True:
        raise CommandExecutionError(
            f"the master did not store the mine entries {', '.join(sorted(entries))}: {stored!r}"
        )


def withdraw(consumers=None, routes=None, test=False):
    """
    Remove this minion's certsync entries from the mine on the master: its
    recipient key (``certsync_recipient``) and the publication for each of
    ``consumers`` (``certsync_cert_<id>``), and of each of ``routes`` beside
    the default one (``certsync_route_<route>_<id>``). What the formula's
    ``certsync.absent`` does; removing an entry that is not there is no error.
    Returns the entry names.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_mine.withdraw '[mailcow-host]'
        salt npm-host certsync_mine.withdraw '[mailcow-host]' routes='[shop]'
    """
    consumers = __utils__["certsync_args.minion_ids"](consumers, "consumers") if consumers else []
    every = [None, *(routes or [])]
    names = [RECIPIENT_MINE, *(_cert_mine_name(c, r) for r in every for c in consumers)]
    names = list(dict.fromkeys(names))
    if test:
        return {"withdrawn": names}
    if __opts__.get("file_client") == "local":
        raise CommandExecutionError("the certsync mine entries need a master: this minion has none")
    with salt.channel.client.ReqChannel.factory(__opts__) as channel:
        for name in names:
            load = {"cmd": "_mine_delete", "id": __opts__["id"], "fun": name}
            if channel.send(load, timeout=MINE_TIMEOUT) is not True:
                raise CommandExecutionError(f"the master did not remove the mine entry {name}")
    return {"withdrawn": names}


def _recipients(consumers):
    """The consumers' public recipient keys from the mine (base64 of 32 bytes, an
    X25519 public key), and who has none."""
    found = __salt__["mine.get"](consumers, RECIPIENT_MINE, tgt_type="list") or {}
    keys, missing = {}, []
    for consumer in consumers:
        entry = found.get(consumer)
        public = entry.get("public") if isinstance(entry, dict) else None
        try:
            usable = len(base64.b64decode(public, validate=True)) == 32
        except (TypeError, ValueError, binascii.Error):
            usable = False
        if usable:
            keys[consumer] = public
        else:
            missing.append(consumer)
    return keys, missing


def _publication_record(hostname, route=None):
    name = f"published-{hostname or 'default'}.json"
    if _route(route):
        name = f"published-{route}-{hostname or 'default'}.json"
    return os.path.join(__opts__["cachedir"], "certsync", name)


def _publication_digest(fingerprint, recipients):
    text = json.dumps({"fingerprint": fingerprint, "recipients": recipients}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_record(path):
    return (__utils__["certsync_files.read_json_record"](path) or {}).get("digest")


def publish(fullchain, key, consumers, hostname=None, force=False, test=False, route=None):
    """
    Publish the certificate for the ``consumers``: one mine entry per
    consumer (``certsync_cert_<id>``; for a ``route`` of the pillar's
    ``certsync:certificates``, ``certsync_route_<route>_<id>``, and the
    event says the ``route``), readable only by that consumer, holding
    the chain and the private key sealed to it (see ``seal_payload``),
    all stored in one request to the master, answered once they are stored:
    one round trip, whatever the number of consumers, and the pair is read
    once.
    When the certificate or a consumer's recipient key changed since the last
    publication from this minion (or with ``force``), fire
    ``certsync/published`` with the fingerprint, ``not_after`` and the
    consumers, never key material.

    The source publishes what it has; every consumer validates before it
    installs. ``problems`` lists what ``certsync.validate`` finds (with
    ``hostname``), as a warning. With ``test=True`` nothing is sent; the
    return says whether anything changed.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_mine.publish /etc/letsencrypt/live/npm-5/fullchain.pem \\
            /etc/letsencrypt/live/npm-5/privkey.pem '[mailcow-host]' mail.example.com
    """
    consumers = __utils__["certsync_args.minion_ids"](consumers, "consumers")
    route = _route(route)
    _cert_mine_name(__opts__["id"], route)  # a bad route name is refused before anything
    cert = __salt__["certsync.info"](fullchain)
    recipients, missing = _recipients(consumers)
    digest = _publication_digest(cert["fingerprint"], recipients)
    record = _publication_record(hostname, route)
    problems = __salt__["certsync.validate"](fullchain, key, hostname) if hostname else {}
    ret = {
        "fingerprint": cert["fingerprint"],
        "not_after": cert["not_after"],
        "consumers": sorted(recipients),
        "missing_recipient_key": missing,
        "changed": digest != _read_record(record),
        "problems": problems.get("problems", []),
    }
    __context__.pop("retcode", None)
    if test:
        return ret
    if route:
        ret["route"] = route
    if ret["consumers"]:
        _send_entries(fullchain, key, {c: recipients[c] for c in ret["consumers"]}, route)
    if ret["consumers"] and (ret["changed"] or force):
        __salt__["event.send"](
            "certsync/published",
            {k: ret[k] for k in ("fingerprint", "not_after", "consumers", "route") if k in ret},
        )
    __utils__["certsync_files.write_json_record"](record, {"digest": digest})
    return ret


def publish_source(hostname, consumers, kind=None, keep_key=True, test=False, route=None, **where):
    """
    What a renewal needs on the source, in one call and without a state run
    (the master's runner sends it on ``certsync/renewed``, with the settings
    the source's pillar gives): take the pair for ``hostname`` from the
    source of ``kind`` with its settings (``certsync_source.locate``; ``npm``:
    ``live_dir`` [and ``dir``], or ``source``, a lineage directory),
    :py:func:`publish` it for the ``consumers`` and, with ``keep_key`` (the
    formula's ``certsync:source:reuse_key``), make the source keep its key
    again (``certsync_source.keep_key``; for NPM: a re-issue from its UI
    rewrites certbot's renewal file). The formula's ``certsync.published`` SLS
    does the same as states.

    Returns what :py:func:`publish` returns, the lineage directory
    (``source``) and ``reuse_key`` (``changed`` and the renewal file, or the
    ``error``); exits non-zero when a consumer has no recipient key or
    reuse_key could not be set. Never any key material.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_mine.publish_source mail.example.com '[mailcow-host]' \\
            live_dir=/opt/npm/letsencrypt/live
    """
    where = {key: value for key, value in where.items() if not key.startswith("__")}
    found = __salt__["certsync_source.locate"](hostname, kind, **where)
    ret = publish(
        found["fullchain"], found["privkey"], consumers, hostname=hostname, test=test, route=route
    )
    ret["source"] = found["dir"]
    failed = bool(ret["missing_recipient_key"])
    if keep_key:
        try:
            ret["reuse_key"] = __salt__["certsync_source.keep_key"](
                hostname, kind, test=test, **where
            )
        except (CommandExecutionError, SaltInvocationError) as exc:
            ret["reuse_key"] = {"error": str(exc)}
            failed = True
    if failed:
        __context__["retcode"] = 1
    return ret


def _send_entries(fullchain, key, recipients, route=None):
    """One entry per consumer, readable by it alone, all in one request to the
    master (one round trip, not one per consumer); the pair is read and sealed once for
    all of them."""
    payload = seal_payload(fullchain, key, recipients, route=route)
    common = {k: v for k, v in payload.items() if k != "sealed"}
    entries, readers = {}, {}
    for consumer, blob in payload["sealed"].items():
        name = _cert_mine_name(consumer, route)
        entries[name] = {**common, "sealed": {consumer: blob}}
        _checked_entry(entries[name], __opts__["id"], consumer, route)
        readers[name] = [consumer]
    _store_in_mine(entries, readers)


def _checked_entry(entry, source, consumer, route=None):
    """Check a mine entry's shape and claims before anything is opened."""
    if not isinstance(entry, dict) or entry.get("version") != 1:
        raise CommandExecutionError(f"the mine entry from {source} is not a certsync v1 entry")
    if entry.get("route") != route:
        raise CommandExecutionError(
            f"the mine entry from {source} claims the route "
            f"{_pem('shown')(repr(entry.get('route')))}, not {route or 'default'}"
        )
    fingerprint = entry.get("fingerprint")
    if not isinstance(fingerprint, str) or not _HEX64.fullmatch(fingerprint):
        raise CommandExecutionError(f"the mine entry from {source} has no valid fingerprint")
    if entry.get("source") != source:
        raise CommandExecutionError(
            f"the mine entry from {source} claims to come from {entry.get('source')!r}"
        )
    sealed_for = entry.get("sealed")  # untrusted: whatever type the entry holds
    sealed = sealed_for.get(consumer) if isinstance(sealed_for, dict) else None
    chain_pem = entry.get("chain_pem")
    if not isinstance(chain_pem, str) or len(chain_pem) > MAX_CHAIN_BYTES:
        raise CommandExecutionError(f"the mine entry from {source} has no usable chain")
    if not isinstance(sealed, str) or len(sealed) > MAX_SEALED_BYTES:
        raise CommandExecutionError(
            f"the mine entry from {source} holds no key sealed for {consumer}"
        )
    return fingerprint, chain_pem, sealed


def _mine_entry(source, route=None):
    """The checked (fingerprint, chain PEM, sealed key) ``source`` published for this
    minion (of ``route``)."""
    source, consumer, route = (
        __utils__["certsync_args.minion_id"](source),
        __opts__["id"],
        _route(route),
    )
    name = _cert_mine_name(consumer, route)
    entry = (__salt__["mine.get"](source, name, tgt_type="list") or {}).get(source)
    if entry is None:
        raise CommandExecutionError(f"the mine holds no {name} entry from {source}")
    return _checked_entry(entry, source, consumer, route)


def published_fingerprint(source, route=None):
    """
    The fingerprint of the certificate ``source`` published for this minion
    in the mine (of ``route``; unset: the default route), nothing opened or
    written.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_mine.published_fingerprint npm-host
    """
    return _mine_entry(source, route)[0]


def published_chain(source, route=None):
    """
    The certificate chain (PEM, public: no key) ``source`` published for
    this minion in the mine (of ``route``; unset: the default route): what
    ``certsync_status`` checks the TLSA records against beside the deployed
    pair.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_mine.published_chain npm-host
    """
    return _mine_entry(source, route)[1]


def fetch_published(source, dest, fingerprint=None, route=None):
    """
    Read the certificate ``source`` published for this minion from the mine,
    check it, open the sealed key and write ``fullchain.pem`` and
    ``privkey.pem`` (0600) into the private directory ``dest`` for
    ``certsync.validate`` and ``certsync.install`` (``open_sealed``
    opens the key).

    source
        The source minion id.

    dest
        An existing directory only root can read (e.g. under the cachedir).

    fingerprint
        When given (from the ``certsync/published`` event), the entry must be
        for this certificate.

    route
        The route whose entry to read (a name under ``certsync:certificates``);
        unset: the default route.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_mine.fetch_published npm-host \\
            /var/cache/salt/minion/certsync/staging
    """
    if fingerprint and not _HEX64.fullmatch(str(fingerprint)):
        raise SaltInvocationError(f"fingerprint {fingerprint!r} is not a SHA-256 hex digest")
    claimed, chain_pem, sealed = _mine_entry(source, route)
    if fingerprint and fingerprint != claimed:
        raise CommandExecutionError(
            f"the mine entry from {source} is for {claimed[:16]}..., not for the announced "
            f"{str(fingerprint)[:16]}..."
        )
    return open_sealed(source, claimed, chain_pem, sealed, dest, route=route)


# --------------------------------------------------------------------------
# Sealing a private key to a consumer, and opening it there (HPKE)
# --------------------------------------------------------------------------

RECIPIENT_KEY_FILE = "certsync_recipient.pem"
_SEAL_CONTEXT = b"certsync/v1 sealed private key"


def _hpke():
    """The HPKE suite (RFC 9180): X25519, HKDF-SHA256, ChaCha20-Poly1305."""
    try:
        from cryptography.hazmat.primitives import hpke  # noqa: PLC0415
    except ImportError:
        import cryptography  # noqa: PLC0415

        raise CommandExecutionError(
            "sealing keys needs cryptography >= 47 (HPKE); this minion has "
            f"cryptography {cryptography.__version__}"
        ) from None
    return hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def _seal_info(source, consumer, fingerprint, route=None):
    """What a sealed blob is bound to: who sealed it, for whom, for which certificate
    and, beside the default route, for which route."""
    parts = [_SEAL_CONTEXT, source.encode(), consumer.encode(), fingerprint.encode()]
    return b"\0".join(parts + ([route.encode()] if _route(route) else []))


def _recipient_key_path():
    return os.path.join(__opts__["pki_dir"], RECIPIENT_KEY_FILE)


def _load_or_create_recipient_key():
    """The consumer's X25519 key, made once beside the minion's keys (0600)."""
    from cryptography.hazmat.primitives.asymmetric import x25519  # noqa: PLC0415

    path = _recipient_key_path()
    if os.path.lexists(path):
        try:
            key = serialization.load_pem_private_key(_pem("read_file")(path), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise CommandExecutionError(f"{path}: not a usable recipient key") from None
        if not isinstance(key, x25519.X25519PrivateKey):
            raise CommandExecutionError(f"{path}: not an X25519 key")
        return key, False
    key = x25519.X25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    __utils__["certsync_files.replace_file"](path, pem, 0o600)
    log.info("certsync: created the recipient key %s", path)
    return key, True


def recipient_key(test=False):
    """
    Return this consumer's public recipient key for sealed private keys,
    creating the key pair on first use (``certsync_recipient.pem``, 0600, in
    the minion's ``pki_dir``). Only the public half leaves the host. With
    ``test=True`` nothing is made: ``created`` says whether the key would be,
    and ``public`` is there when the key exists.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_mine.recipient_key
    """
    if test and not os.path.lexists(_recipient_key_path()):
        return {"kem": "X25519", "id": __opts__["id"], "created": True}
    key, created = _load_or_create_recipient_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {
        "kem": "X25519",
        "public": base64.b64encode(public).decode(),
        "id": __opts__["id"],
        "created": created,
    }


def _public_key(encoded):
    """An X25519 public key from its base64 form; ValueError when it is not one."""
    from cryptography.hazmat.primitives.asymmetric import x25519  # noqa: PLC0415

    try:
        return x25519.X25519PublicKey.from_public_bytes(base64.b64decode(encoded, validate=True))
    except (TypeError, binascii.Error) as exc:
        raise ValueError(str(exc)) from None


def seal_payload(fullchain, key, recipients, route=None):
    """
    The mine payload for consumers: the chain, its fingerprint, SPKI hash and
    ``not_after``, and the private key sealed with HPKE to each consumer's
    recipient key, bound to the source id, the consumer id, the
    fingerprint and the ``route`` (unset: the default route, which entries
    do not name). ``publish`` makes one such payload per consumer,
    holding only that consumer's sealed key.

    recipients
        Mapping of consumer id to its public recipient key (base64), as
        :py:func:`recipient_key` returns it.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_mine.seal_payload /etc/letsencrypt/live/npm-5/fullchain.pem \\
            /etc/letsencrypt/live/npm-5/privkey.pem '{mailcow-host: <public key>}'
    """
    if not isinstance(recipients, dict) or not recipients:
        raise SaltInvocationError("recipients must map consumer ids to public keys")
    common, sealed = _sealed_for(fullchain, key, recipients, _route(route))
    return {**common, "sealed": sealed}


def _sealed_for(fullchain, key, recipients, route):
    """The payload's common part, and the key sealed to each recipient: the pair
    is read and parsed once, whatever the number of consumers."""
    certs, cert_pem, key_pem = _pem("canonical_pair")(fullchain, key)
    leaf = certs[0]
    fingerprint = _pem("fingerprint")(leaf)
    suite = _hpke()
    source = __opts__["id"]
    sealed = {}
    for consumer, encoded in recipients.items():
        __utils__["certsync_args.minion_id"](consumer)
        try:
            public = _public_key(encoded)
        except ValueError:
            raise SaltInvocationError(f"the recipient key of {consumer} is not usable") from None
        sealed[consumer] = base64.b64encode(
            suite.encrypt(key_pem, public, info=_seal_info(source, consumer, fingerprint, route))
        ).decode()
    common = {
        "version": 1,
        "source": source,
        "fingerprint": fingerprint,
        "spki_sha256": _pem("spki_sha256")(leaf.public_key()),
        "not_after": _pem("iso")(leaf.not_valid_after_utc),
        "sans": _pem("dns_sans")(leaf),
        "chain_pem": cert_pem.decode("ascii"),
        **({"route": route} if route else {}),
    }
    return common, sealed


def open_sealed(source, fingerprint, chain_pem, sealed, dest, route=None):
    """
    Open the private key ``source`` sealed to this minion for the certificate
    ``fingerprint`` (see :py:func:`seal_payload`) and write the pair into the
    private directory ``dest``: ``fullchain.pem`` (``chain_pem``, which must
    be that certificate; sealed for ``route``, unset: the default route) and
    ``privkey.pem`` (0600), for ``certsync.validate``
    and ``certsync.install``. What ``fetch_published`` does with
    the mine entry it read and checked. Returns the paths, the fingerprint and
    ``not_after``, never key material.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_mine.open_sealed npm-host <fingerprint> "$chain_pem" "$sealed" \\
            /var/cache/salt/minion/certsync/staging
    """
    source, consumer = __utils__["certsync_args.minion_id"](source), __opts__["id"]
    if not (isinstance(fingerprint, str) and _HEX64.fullmatch(fingerprint)):
        shown = _pem("shown")(repr(fingerprint))
        raise SaltInvocationError(f"fingerprint {shown} is not a SHA-256 hex digest")
    if not isinstance(chain_pem, str) or len(chain_pem) > MAX_CHAIN_BYTES:
        raise SaltInvocationError(f"chain_pem must be PEM text of at most {MAX_CHAIN_BYTES} bytes")
    fullchain = os.path.join(dest, "fullchain.pem")
    __utils__["certsync_files.replace_file"](fullchain, chain_pem.encode("ascii", "replace"))
    leaf = _pem("read_certs")(fullchain)[0]
    if _pem("fingerprint")(leaf) != fingerprint:
        raise CommandExecutionError(
            f"the chain in the mine entry from {source} does not match its fingerprint"
        )
    key, _ = _load_or_create_recipient_key()
    try:
        key_pem = _hpke().decrypt(
            base64.b64decode(sealed, validate=True),
            key,
            info=_seal_info(source, consumer, fingerprint, route),
        )
    except (ValueError, TypeError, binascii.Error, InvalidTag):
        raise CommandExecutionError(
            f"the key sealed by {source} does not open for {consumer} and certificate "
            f"{fingerprint[:16]}... (sealed for another consumer or certificate, or corrupted)"
        ) from None
    __utils__["certsync_files.replace_file"](os.path.join(dest, "privkey.pem"), key_pem)
    return {
        "source": source,
        "fingerprint": fingerprint,
        "not_after": _pem("iso")(leaf.not_valid_after_utc),
        "fullchain": fullchain,
        "privkey": os.path.join(dest, "privkey.pem"),
    }
