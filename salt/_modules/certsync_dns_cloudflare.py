"""
DNS provider ``cloudflare``: TLSA records through Cloudflare's API
==================================================================

:depends: cloudflare (Cloudflare's official Python library, 4.x or later:
    ``salt-pip install cloudflare``), imported at the first call

One of the providers behind ``certsync_dane`` (``dane:update:provider``):
TLSA records created with structured ``data`` (usage, selector,
matching_type, certificate) and deleted one by one by their record id,
never touching another record at the name. The API token is read from this
minion's own pillar (``dane:update:api_token``), never an argument, and no
message, return or log line holds it.

Every provider has the same functions: ``checked``, ``zone``, ``records``
and ``change`` (see ``certsync_dns_rfc2136``).
"""

import email.utils
import importlib.util
import math
import re
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync_dns_cloudflare"

API_URL = "https://api.cloudflare.com/client/v4"
DEFAULT_TIMEOUT = 10
UPDATE_KEYS = {"provider", "zone", "zone_id", "ttl", "api_url", "auth_port", "timeout", "strict"}
#: The settings that are credentials: read from this minion's pillar only, never an
#: argument, never on another minion (``certsync_settings.check``).
CREDENTIAL_KEYS = ("api_token",)
#: Cloudflare's error codes certsync acts on.
AUTHENTICATION_ERROR = 10000
#: "A record with the same settings already exists" (81057) and "An identical record
#: already exists" (81058): the record is there, as certbot's and lexicon's Cloudflare
#: clients take them.
RECORD_EXISTS = (81057, 81058)
#: Credentials an error body may quote back (a request's headers): never shown.
_QUOTED_CREDENTIAL = re.compile(
    r"(?i)(bearer\s+|(?:authorization|x-auth-key|x-auth-email|x-auth-user-service-key)"
    r"[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?)[^\s\"',;}]+"
)
#: Bounds: pages of one listing, waits for one rate-limited call.
MAX_PAGES = 20
PER_PAGE = 100
MAX_RATE_LIMITED = 5


def __virtual__():
    if importlib.util.find_spec("cloudflare") is None:
        return (
            False,
            "certsync_dns_cloudflare needs Cloudflare's Python library "
            "(salt-pip install cloudflare)",
        )
    return __virtualname__


def _sdk():
    import cloudflare  # noqa: PLC0415 (about 0.2 s: only a Cloudflare rollover pays it)

    return cloudflare


def _api_token():
    """The API token from this minion's own pillar; never an argument or a message."""
    token, where = __utils__["certsync_settings.consumer_setting"](
        __pillar__.get("certsync"), __opts__["id"], "dane", "update", "api_token"
    )
    if not token:
        raise SaltInvocationError(f"no Cloudflare API token in this minion's pillar at {where}")
    if (
        not isinstance(token, str)
        or not token.isascii()
        or not token.isprintable()
        or (any(char.isspace() for char in token))
    ):
        raise SaltInvocationError(f"{where} is not an API token (the value is not shown)")
    return token


def credential_keys():
    """
    The ``dane:update`` settings of this provider that are credentials
    (api_token): read from the consumer's own pillar only, and refused by
    ``certsync_settings.check`` in any other minion's pillar.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dns_cloudflare.credential_keys
    """
    return list(CREDENTIAL_KEYS)


def checked(update):
    """
    The ``dane:update`` settings of this provider, checked (an error names
    the bad one), with their defaults:

    zone / zone_id
        The zone by name (its id looked up once, then kept for the minion's
        life) or by id. One of them is required; with both, the id is used
        and the name must match it.
    ttl
        TTL of the records it creates: 1 (Cloudflare's "automatic", the
        default) or 60 to 86400 seconds.
    api_url
        ``https://api.cloudflare.com/client/v4``.
    auth_port
        The port the zone's authoritative servers answer on: 53.
    timeout
        Seconds for one API call: 10.
    strict
        Hold every API response to the library's models (an answer that
        does not fit is an error): false.

    The token is read from this minion's pillar
    (``certsync:consumers:<id>:dane:update:api_token``, or under
    ``consumer_defaults``) and never shown.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dns_cloudflare.checked \
            '{provider: cloudflare, zone: example.com}'
    """
    if not isinstance(update, dict):
        raise SaltInvocationError("update must be a mapping of zone or zone_id, ttl, ...")
    if "api_token" in update:
        raise SaltInvocationError(
            "api_token is not taken as an argument (Salt keeps arguments in its job cache "
            "and logs): set it in this minion's pillar, "
            f"certsync:consumers:{__opts__['id']}:dane:update:api_token"
        )
    unknown = set(update) - UPDATE_KEYS
    if unknown:
        raise SaltInvocationError(f"unknown update settings: {', '.join(sorted(unknown))}")
    zone, zone_id = update.get("zone"), update.get("zone_id")
    if not zone and not zone_id:
        raise SaltInvocationError("the cloudflare provider needs zone (a name) or zone_id")
    if isinstance(zone, str) and zone.endswith(".") and not zone.endswith(".."):
        zone = zone[:-1]  # the root's dot, as a zone file writes it
    if zone and (not isinstance(zone, str) or not __utils__["certsync_pem.is_dns_name"](zone)):
        raise SaltInvocationError(f"update zone {str(zone)[:80]!r} is not a valid DNS name")
    if zone_id and not (
        isinstance(zone_id, str) and zone_id.isascii() and zone_id.isalnum() and len(zone_id) <= 64
    ):
        raise SaltInvocationError(
            f"update zone_id {str(zone_id)[:80]!r} is not a Cloudflare zone id"
        )
    ttl = update.get("ttl", 1)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not (ttl == 1 or 60 <= ttl <= 86400):
        raise SaltInvocationError(
            f"update ttl {ttl!r} must be 1 (automatic) or 60 to 86400 seconds"
        )
    api_url = __utils__["certsync_args.api_url"](update.get("api_url") or API_URL, "update api_url")
    strict = update.get("strict", False)
    if not isinstance(strict, bool):
        raise SaltInvocationError(f"update strict {strict!r} must be true or false")
    _api_token()
    return {
        "provider": "cloudflare",
        "zone": zone.rstrip(".").lower() if zone else None,
        "zone_id": zone_id or None,
        "ttl": ttl,
        "api_url": api_url,
        "auth_port": __utils__["certsync_args.port"](update.get("auth_port", 53), "auth_port"),
        "timeout": __utils__["certsync_args.seconds"](
            update.get("timeout", DEFAULT_TIMEOUT), "update timeout", 300
        ),
        "strict": strict,
    }


class _Shape(Exception):
    """An answer of the API that is not of the shape its call returns."""


class _Deadline:
    """One call's deadline, shared by every socket read and write of that call: a
    server that drips its answer a byte at a time cannot hold a call past ``timeout``
    (httpx's timeouts bound each read, not the call)."""

    def __init__(self):
        self.at = None

    def start(self, seconds):
        self.at = time.monotonic() + seconds

    def left(self, timeout):
        import httpcore  # noqa: PLC0415 (comes with the SDK)

        remaining = (self.at - time.monotonic()) if self.at is not None else None
        if remaining is not None and remaining <= 0:
            raise httpcore.ReadTimeout("the call's deadline passed")
        if remaining is None:
            return timeout
        return remaining if timeout is None else min(timeout, remaining)


def _http_client(deadline, timeout):
    """An httpx client whose every socket operation is held to ``deadline``; no proxy or
    credential from the environment (``trust_env`` off), no redirect followed."""
    import httpcore  # noqa: PLC0415
    import httpx  # noqa: PLC0415

    class Stream(httpcore.NetworkStream):
        def __init__(self, stream):
            self.stream = stream

        def read(self, max_bytes, timeout=None):
            return self.stream.read(max_bytes, deadline.left(timeout))

        def write(self, buffer, timeout=None):
            self.stream.write(buffer, deadline.left(timeout))

        def close(self):
            self.stream.close()

        def start_tls(self, ssl_context, server_hostname=None, timeout=None):
            tls = self.stream.start_tls(ssl_context, server_hostname, deadline.left(timeout))
            return Stream(tls)

        def get_extra_info(self, info):
            return self.stream.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):
        def __init__(self):
            self.backend = httpcore.SyncBackend()

        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            return Stream(
                self.backend.connect_tcp(
                    host, port, deadline.left(timeout), local_address, socket_options
                )
            )

        def connect_unix_socket(self, path, timeout=None, socket_options=None):
            raise httpcore.ConnectError("no unix socket for Cloudflare's API")

        def sleep(self, seconds):
            time.sleep(max(0.0, min(seconds, deadline.left(seconds))))

    class Transport(httpx.HTTPTransport):
        def __init__(self):
            super().__init__(trust_env=False)
            # the pool httpx would make, with the deadline's network backend
            self._pool = httpcore.ConnectionPool(
                ssl_context=httpx.create_ssl_context(trust_env=False),
                network_backend=Backend(),
            )

    return httpx.Client(
        transport=Transport(), timeout=timeout, trust_env=False, follow_redirects=False
    )


class _Api:
    """One minion's calls to the API, each error named without the token."""

    def __init__(self, settings, max_wait):
        sdk = _sdk()
        self.sdk, self.settings = sdk, settings
        self.deadline = time.monotonic() + max_wait
        self.call_deadline = _Deadline()
        self.token = _api_token()
        # Only the pillar's token authenticates: the SDK's fallbacks to the environment
        # (CLOUDFLARE_API_KEY, CLOUDFLARE_EMAIL, CLOUDFLARE_API_USER_SERVICE_KEY,
        # CLOUDFLARE_CUSTOM_HEADERS) are each overridden or left out.
        self.client = sdk.Cloudflare(
            api_token=self.token,
            base_url=settings["api_url"],
            max_retries=0,  # 429 and 5xx are handled here, within max_wait
            timeout=settings["timeout"],
            http_client=_http_client(self.call_deadline, settings["timeout"]),
            default_headers={
                "Authorization": f"Bearer {self.token}",
                "X-Auth-Key": sdk.Omit(),
                "X-Auth-Email": sdk.Omit(),
                "X-Auth-User-Service-Key": sdk.Omit(),
            },
            _strict_response_validation=settings["strict"],
        )
        self.client.api_key = self.client.api_email = self.client.user_service_key = None

    def call(self, what, request, denied, tolerate=()):
        """``request()`` within one call's deadline (``timeout``); a 429 waited out per its
        Retry-After while ``max_wait`` allows; an error whose codes are all in
        ``tolerate`` returns None; an answer of another shape is named."""
        sdk = self.sdk
        for _ in range(MAX_RATE_LIMITED):
            self.call_deadline.start(self.settings["timeout"])
            try:
                return request()
            except sdk.RateLimitError as exc:
                wait = _retry_after(exc.response.headers.get("retry-after"))
                if time.monotonic() + wait > self.deadline:
                    raise CommandExecutionError(
                        f"Cloudflare's API rate-limited {what} (HTTP 429) and asks to wait "
                        f"{wait:g} s, beyond max_wait: the next run goes on"
                    ) from None
                time.sleep(wait)
            except sdk.APIStatusError as exc:
                codes = _error_codes(exc.body)
                if codes and set(codes) <= set(tolerate):
                    return None
                raise CommandExecutionError(self._status_message(what, exc, denied)) from None
            except sdk.APIResponseValidationError:
                raise CommandExecutionError(
                    f"Cloudflare's API answered {what} with a response that does not fit "
                    "the library's models (strict: true)"
                ) from None
            except sdk.APITimeoutError:
                raise CommandExecutionError(
                    f"Cloudflare's API at {self.settings['api_url']} did not answer {what} "
                    f"within {self.settings['timeout']:g} s: the next run goes on"
                ) from None
            except sdk.APIConnectionError as exc:
                cause = exc.__cause__
                why = f"{type(cause).__name__}: {cause}" if cause else type(exc).__name__
                raise CommandExecutionError(
                    f"Cloudflare's API at {self.settings['api_url']} is unreachable for "
                    f"{what} ({self._shown(why)[:160]}): the next run goes on"
                ) from None
            except (_Shape, ValueError, TypeError, AttributeError, KeyError) as exc:
                why = str(exc) if isinstance(exc, _Shape) else "not the API's JSON envelope"
                raise CommandExecutionError(
                    f"Cloudflare's API answered {what} with a response of an unexpected "
                    f"shape ({self._shown(why)[:160]}): nothing was changed by it"
                ) from None
            finally:
                self.call_deadline.at = None
        raise CommandExecutionError(
            f"Cloudflare's API rate-limited {what} {MAX_RATE_LIMITED} times in a row"
        )

    def _shown(self, text):
        """Text from the API or the network, fit for a message: a credential it quotes
        (the token, an Authorization or X-Auth-* header) masked, controls escaped."""
        text = _QUOTED_CREDENTIAL.sub(r"\1**********", str(text))
        if self.token:
            text = text.replace(self.token, "**********")
        return __utils__["certsync_util.printable"](text)

    def _status_message(self, what, exc, denied):
        status = exc.status_code
        detail = _error_detail(exc.body, self._shown)
        if status in (401, 403) or AUTHENTICATION_ERROR in _error_codes(exc.body):
            return f"Cloudflare refused {what} (HTTP {status}{detail}): {denied}"
        if status >= 500:
            return (
                f"Cloudflare's API failed {what} (HTTP {status}{detail}): nothing else was "
                "changed, the next run goes on"
            )
        return f"Cloudflare's API refused {what} (HTTP {status}{detail})"

    def zone_id(self):
        """The zone's id: given (and, with the zone's name given too, checked to be that
        zone's), or looked up by name; either once per minion process."""
        cache = __context__.setdefault("certsync_dns_cloudflare.zone_ids", {})
        key = (self.settings["api_url"], self.settings["zone"], self.settings["zone_id"])
        if key not in cache:
            if self.settings["zone_id"] and self.settings["zone"]:
                named = self._named_zone(self.settings["zone_id"])
                if named != self.settings["zone"]:
                    given = self.settings["zone"]
                    raise CommandExecutionError(
                        f"zone_id {self.settings['zone_id']} belongs to {self._shown(named)[:80]}, "
                        f"not to {given}: give the one meant (or only one of zone and zone_id)"
                    )
                cache[key] = self.settings["zone_id"]
            elif self.settings["zone_id"]:
                cache[key] = self.settings["zone_id"]
            else:
                cache[key] = self._zone_by_name(self.settings["zone"])
        return cache[key]

    def _zone_by_name(self, zone):
        found = self.call(
            f"the lookup of zone {zone}",
            lambda: [
                item["id"]
                for item in _items(self.client.zones.list(name=zone), ("id", "name"))
                if item["name"].rstrip(".").lower() == zone
            ],
            f"the API token is invalid or expired (it needs Zone:Read and DNS:Edit for {zone})",
        )
        if not found:
            raise CommandExecutionError(
                f"Cloudflare has no zone {zone} that this API token may read "
                "(is the zone in the token's zone resources?)"
            )
        return found[0]

    def _named_zone(self, zone_id):
        return self.call(
            f"the lookup of zone id {zone_id}",
            lambda: _zone_name(self.client.zones.get(zone_id=zone_id)),
            f"the API token is invalid or expired, or may not read zone {zone_id}",
        )

    def zone_name(self):
        if self.settings["zone"]:
            self.zone_id()  # a zone_id given beside it is checked to be this zone's
            return self.settings["zone"]
        return self._named_zone(self.settings["zone_id"])

    def tlsa_records(self, name):
        """{record data: record id} of the TLSA records at ``name``, every page."""
        zone_id = self.zone_id()
        found = {}
        for number in range(1, MAX_PAGES + 1):
            items, size = self.call(
                f"the listing of {name}" + (f" (page {number})" if number > 1 else ""),
                lambda number=number: _page_items(
                    self.client.dns.records.list(
                        zone_id=zone_id,
                        name={"exact": name},
                        type="TLSA",
                        per_page=PER_PAGE,
                        page=number,
                    )
                ),
                f"the API token may not read DNS records of zone {self._zone_label()}",
            )
            for item in items:
                if item["type"] == "TLSA" and item["name"].rstrip(".").lower() == name:
                    record = item["record"]
                    if record:  # a record whose data cannot be read is never deleted
                        found[record] = item["id"]
            if len(items) < (size or PER_PAGE):  # a short page is the last
                return found
        raise CommandExecutionError(f"Cloudflare listed more than {MAX_PAGES} pages at {name}")

    def _zone_label(self):
        return self.settings["zone"] or self.settings["zone_id"]

    def create(self, name, record):
        usage, selector, mtype, certificate = record.split()
        zone_id = self.zone_id()
        return self.call(
            f"the creation of {name}. IN TLSA {record}",
            lambda: self.client.dns.records.create(
                zone_id=zone_id,
                name=name,
                type="TLSA",
                ttl=self.settings["ttl"],
                data={
                    "usage": int(usage),
                    "selector": int(selector),
                    "matching_type": int(mtype),
                    "certificate": certificate,
                },
                comment="certsync: DANE rollover",
            ),
            f"the API token may not edit DNS records of zone {self._zone_label()} "
            "(it needs the Zone > DNS > Edit permission)",
            tolerate=RECORD_EXISTS,
        )

    def delete(self, name, record, record_id):
        zone_id = self.zone_id()
        self.call(
            f"the deletion of {name}. IN TLSA {record}",
            lambda: self.client.dns.records.delete(record_id, zone_id=zone_id),
            f"the API token may not edit DNS records of zone {self._zone_label()} "
            "(it needs the Zone > DNS > Edit permission)",
        )


def _text(value, field):
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise _Shape(f"{field} is not a string")
    return value


def _zone_name(zone):
    """A zone's name as the API gives it, which must be a DNS name."""
    name = _text(getattr(zone, "name", None), "name").rstrip(".").lower()
    if not __utils__["certsync_pem.is_dns_name"](name):
        raise _Shape(f"the zone's name {name[:80]!r} is not a DNS name")
    return name


def _items(page, fields):
    """The listed objects of a page (``result`` must be a list) as mappings of
    ``fields``, each a string."""
    result = getattr(page, "result", None)
    if not isinstance(result, list):
        raise _Shape(f"result is {type(result).__name__}, not a list")
    return [{f: _text(getattr(item, f, None), f) for f in fields} for item in result]


def _page_items(page):
    """The TLSA listing of one page: each record's id, name, type and data (None when it
    cannot be read), and the page's size."""
    items = _items(page, ("id", "name", "type"))
    for item, listed in zip(items, page.result, strict=True):
        item["record"] = _record_text(listed) if item["type"] == "TLSA" else None
    info = getattr(page, "result_info", None)
    size = getattr(info, "per_page", None) if info is not None else None
    return items, size if isinstance(size, int) and not isinstance(size, bool) else None


def _retry_after(value):
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); 1 if none."""
    if value is None:
        return 1.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return 1.0
    return min(max(seconds, 0.0), 86400.0) if math.isfinite(seconds) else 1.0


def _error_codes(body):
    """The whole-number codes of Cloudflare's error envelope (anything else is left out)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return []
    codes = [e.get("code") for e in errors if isinstance(e, dict)]
    return [c for c in codes if isinstance(c, int) and not isinstance(c, bool)]


def _error_detail(body, shown):
    """``, code N: message`` for each of Cloudflare's errors, each message made fit to
    show by ``shown`` (a credential it quotes masked, controls escaped) before it is
    cut short."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = [
        f"code {shown(str(e.get('code')))[:12]}: {shown(str(e.get('message', '')))[:120]}"
        for e in errors[:3]
        if isinstance(e, dict)
    ]
    return ", " + "; ".join(parts) if parts else ""


def _record_text(item):
    """A listed TLSA record as ``"usage selector mtype hex"`` (from ``data``, else
    ``content``), checked as record data; None when neither reads as one."""
    data = getattr(item, "data", None)
    fields = [getattr(data, f, None) for f in ("usage", "selector", "matching_type")]
    certificate = getattr(data, "certificate", None)
    candidates = []
    if isinstance(certificate, str) and all(isinstance(f, (int, float)) for f in fields):
        candidates.append(" ".join(str(int(f)) for f in fields) + f" {certificate}")
    content = getattr(item, "content", None)
    if isinstance(content, str):
        candidates.append(content)
    for candidate in candidates:
        try:
            return _record(candidate)
        except (SaltInvocationError, ValueError, OverflowError):
            continue
    return None


def _max_wait(value):
    """Seconds a call may wait for rate limits: 0 (not at all) to 86400."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if isinstance(value, bool) or not 0 <= seconds <= 86400:
        raise SaltInvocationError(f"max_wait {value!r} must be 0 to 86400 seconds")
    return seconds


def _owner(hostname, port, protocol):
    return __utils__["certsync_pem.tlsa_name"](hostname, port, protocol).rstrip(".").lower()


def _in_zone(name, zone):
    if not (name == zone or name.endswith("." + zone)):
        raise SaltInvocationError(f"{name} is not in the zone {zone}")


def _record(value):
    """Record data ``"usage selector mtype hex"``, checked and in lower case."""
    parts = str(value).split()
    if (
        len(parts) != 4
        or not all(p.isdigit() and int(p) < 256 for p in parts[:3])
        or len(parts[3]) % 2
        or not all(c in "0123456789abcdefABCDEF" for c in parts[3])
    ):
        raise SaltInvocationError(f"{str(value)[:80]!r} is not TLSA record data")
    return " ".join([*(str(int(p)) for p in parts[:3]), parts[3].lower()])


def zone(update, max_wait=60):
    """
    The zone the records are in (by name, or its name looked up from
    ``zone_id``), and the port its authoritative servers answer on.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dns_cloudflare.zone '{provider: cloudflare, zone: example.com}'
    """
    settings = checked(update)
    api = _Api(settings, _max_wait(max_wait))
    return {"zone": api.zone_name(), "auth_port": settings["auth_port"]}


def records(hostname, update, port=25, protocol="tcp", max_wait=60):
    """
    The TLSA records Cloudflare holds at ``_<port>._<protocol>.<hostname>``,
    as ``"usage selector mtype hex"`` (every page of the listing).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dns_cloudflare.records mail.example.com \
            '{provider: cloudflare, zone: example.com}'
    """
    settings = checked(update)
    name = _owner(hostname, port, protocol)
    api = _Api(settings, _max_wait(max_wait))
    _in_zone(name, api.zone_name())
    return sorted(api.tlsa_records(name))


def change(hostname, update, add=None, delete=None, port=25, protocol="tcp", ttl=None, max_wait=60):
    """
    Add and delete single TLSA records at ``_<port>._<protocol>.<hostname>``:
    each added record created with structured ``data`` (a record Cloudflare
    already holds, code 81058, counts as added); each deleted record found by
    its data and deleted by its id. No other record at the name is touched.
    A refused call is an error naming why (the token is never shown); a
    429 is waited out per its Retry-After within ``max_wait`` seconds.

    ttl
        Not used: created records take the provider's ``ttl`` setting.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_dns_cloudflare.change mail.example.com \
            '{provider: cloudflare, zone: example.com}' add='["3 1 1 0123..."]'
    """
    del ttl  # Cloudflare's records take the zone's ttl setting (checked)
    settings = checked(update)
    name = _owner(hostname, port, protocol)
    strings = __utils__["certsync_args.strings"]
    add = [_record(r) for r in strings(add, "add", "TLSA records")]
    delete = [_record(r) for r in strings(delete, "delete", "TLSA records")]
    if not add and not delete:
        raise SaltInvocationError("nothing to add or delete")
    if settings["zone"]:
        _in_zone(name, settings["zone"])
    api = _Api(settings, _max_wait(max_wait))
    held = api.tlsa_records(name) if delete else {}
    for record in add:
        api.create(name, record)
    deleted = []
    for record in delete:
        if record in held:
            api.delete(name, record, held[record])
            deleted.append(record)
    return {"name": name, "server": settings["api_url"], "added": add, "deleted": deleted}
