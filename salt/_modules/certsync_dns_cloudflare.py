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
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync_dns_cloudflare"

API_URL = "https://api.cloudflare.com/client/v4"
DEFAULT_TIMEOUT = 10
UPDATE_KEYS = {"provider", "zone", "zone_id", "ttl", "api_url", "auth_port", "timeout", "strict"}
#: Cloudflare's error codes certsync acts on.
AUTHENTICATION_ERROR = 10000
RECORD_EXISTS = 81058
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
    if zone and (not isinstance(zone, str) or not __utils__["certsync_pem.is_dns_name"](zone)):
        raise SaltInvocationError(f"update zone {zone!r} is not a valid DNS name")
    if zone_id and not (isinstance(zone_id, str) and zone_id.isalnum() and len(zone_id) <= 64):
        raise SaltInvocationError(f"update zone_id {zone_id!r} is not a Cloudflare zone id")
    ttl = update.get("ttl", 1)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not (ttl == 1 or 60 <= ttl <= 86400):
        raise SaltInvocationError(
            f"update ttl {ttl!r} must be 1 (automatic) or 60 to 86400 seconds"
        )
    api_url = update.get("api_url") or API_URL
    if not isinstance(api_url, str) or not api_url.startswith(("https://", "http://127.")):
        raise SaltInvocationError(f"update api_url {api_url!r} must be an https:// URL")
    strict = update.get("strict", False)
    if not isinstance(strict, bool):
        raise SaltInvocationError(f"update strict {strict!r} must be true or false")
    _api_token()
    return {
        "provider": "cloudflare",
        "zone": zone.rstrip(".").lower() if zone else None,
        "zone_id": zone_id or None,
        "ttl": ttl,
        "api_url": api_url.rstrip("/"),
        "auth_port": __utils__["certsync_args.port"](update.get("auth_port", 53), "auth_port"),
        "timeout": __utils__["certsync_args.seconds"](
            update.get("timeout", DEFAULT_TIMEOUT), "update timeout", 300
        ),
        "strict": strict,
    }


class _Api:
    """One minion's calls to the API, each error named without the token."""

    def __init__(self, settings, max_wait):
        sdk = _sdk()
        self.sdk, self.settings = sdk, settings
        self.deadline = time.monotonic() + max_wait
        self.client = sdk.Cloudflare(
            api_token=_api_token(),
            base_url=settings["api_url"],
            max_retries=0,  # 429 and 5xx are handled here, within max_wait
            timeout=settings["timeout"],
            _strict_response_validation=settings["strict"],
        )

    def call(self, what, request, denied, tolerate=()):
        """``request()``; a 429 waited out per its Retry-After while the deadline allows;
        an error whose codes are all in ``tolerate`` returns None."""
        sdk = self.sdk
        for _ in range(MAX_RATE_LIMITED):
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
            except sdk.APIConnectionError as exc:
                cause = exc.__cause__
                why = f"{type(cause).__name__}: {cause}" if cause else type(exc).__name__
                raise CommandExecutionError(
                    f"Cloudflare's API at {self.settings['api_url']} is unreachable for "
                    f"{what} ({__utils__['certsync_util.printable'](why)[:160]}): the next "
                    "run goes on"
                ) from None
        raise CommandExecutionError(
            f"Cloudflare's API rate-limited {what} {MAX_RATE_LIMITED} times in a row"
        )

    def _status_message(self, what, exc, denied):
        status = exc.status_code
        detail = _error_detail(exc.body)
        if status in (401, 403) or AUTHENTICATION_ERROR in _error_codes(exc.body):
            return f"Cloudflare refused {what} (HTTP {status}{detail}): {denied}"
        if status >= 500:
            return (
                f"Cloudflare's API failed {what} (HTTP {status}{detail}): nothing else was "
                "changed, the next run goes on"
            )
        return f"Cloudflare's API refused {what} (HTTP {status}{detail})"

    def zone_id(self):
        """The zone's id: given, or looked up by name once per minion process."""
        if self.settings["zone_id"]:
            return self.settings["zone_id"]
        cache = __context__.setdefault("certsync_dns_cloudflare.zone_ids", {})
        key = (self.settings["api_url"], self.settings["zone"])
        if key not in cache:
            zone = self.settings["zone"]
            page = self.call(
                f"the lookup of zone {zone}",
                lambda: self.client.zones.list(name=zone),
                f"the API token is invalid or expired (it needs Zone:Read and DNS:Edit for {zone})",
            )
            found = [z.id for z in page.result if z.name.lower() == zone]
            if not found:
                raise CommandExecutionError(
                    f"Cloudflare has no zone {zone} that this API token may read "
                    "(is the zone in the token's zone resources?)"
                )
            cache[key] = found[0]
        return cache[key]

    def zone_name(self):
        if self.settings["zone"]:
            return self.settings["zone"]
        zone_id = self.settings["zone_id"]
        zone = self.call(
            f"the lookup of zone id {zone_id}",
            lambda: self.client.zones.get(zone_id=zone_id),
            f"the API token is invalid or expired, or may not read zone {zone_id}",
        )
        return zone.name.rstrip(".").lower()

    def tlsa_records(self, name):
        """{record data: record id} of the TLSA records at ``name``, every page."""
        zone_id = self.zone_id()
        found = {}
        for number in range(1, MAX_PAGES + 1):
            page = self.call(
                f"the listing of {name}" + (f" (page {number})" if number > 1 else ""),
                lambda number=number: self.client.dns.records.list(
                    zone_id=zone_id,
                    name={"exact": name},
                    type="TLSA",
                    per_page=PER_PAGE,
                    page=number,
                ),
                f"the API token may not read DNS records of zone {self._zone_label()}",
            )
            for item in page.result:
                if item.type == "TLSA" and item.name.rstrip(".").lower() == name:
                    found[_record_text(item)] = item.id
            size = page.result_info.per_page if page.result_info else None
            if len(page.result) < (size or PER_PAGE):  # a short page is the last
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
            tolerate=(RECORD_EXISTS,),
        )

    def delete(self, name, record, record_id):
        zone_id = self.zone_id()
        self.call(
            f"the deletion of {name}. IN TLSA {record}",
            lambda: self.client.dns.records.delete(record_id, zone_id=zone_id),
            f"the API token may not edit DNS records of zone {self._zone_label()} "
            "(it needs the Zone > DNS > Edit permission)",
        )


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
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return []
    return [e.get("code") for e in errors if isinstance(e, dict)]


def _error_detail(body):
    """``, code N: message`` for each of Cloudflare's errors (text from outside: escaped,
    cut short)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = [
        f"code {e.get('code')}: {str(e.get('message', ''))[:120]}"
        for e in errors[:3]
        if isinstance(e, dict)
    ]
    return __utils__["certsync_util.printable"](", " + "; ".join(parts)) if parts else ""


def _record_text(item):
    """A listed TLSA record as ``"usage selector mtype hex"`` (from ``data``, else
    ``content``)."""
    data = item.data
    if data is not None and data.certificate is not None:
        fields = (data.usage, data.selector, data.matching_type)
        if all(f is not None for f in fields):
            return " ".join(str(int(f)) for f in fields) + f" {data.certificate.lower()}"
    return " ".join((item.content or "").lower().split())


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
