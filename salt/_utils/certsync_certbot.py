"""
certbot's renewal files
=======================

The format of ``<config dir>/renewal/<lineage>.conf`` as certbot reads it
(through ``__utils__["certsync_certbot.<name>"]``, for the ``npm`` source):
where a lineage's file is, certbot's own reading of its text and the checks
it makes before it renews, whether the next renewal keeps the key, and the
one-line edits that set ``reuse_key = True`` or take it out again. Text in,
text out: the reads, writes and notes are the npm source module's.
"""

import os
import re

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:  # the parser certbot reads its renewal files with
    import configobj

    HAS_CONFIGOBJ = True
except ImportError:
    HAS_CONFIGOBJ = False

_LINEAGE = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9._-]{1,200}")
_RENEWAL_SECTION = re.compile(r"^\s*(\[+)\s*([^\[\]]+?)\s*(\]+)\s*(#.*)?$")
_REUSE_KEY_LINE = re.compile(r"""^(\s*)(["']?)reuse_key\2\s*=""")
#: One ``reuse_key`` line as certbot writes it: the only thing a note may put back.
_WHOLE_REUSE_KEY_LINE = re.compile(
    r"""[ \t]*(["']?)reuse_key\1[ \t]*=[ \t]*(["']?)[A-Za-z0-9]*\2[ \t]*(?:#[ -~]*)?"""
)
#: The renewal parameters certbot restores as booleans and integers before it renews
#: (certbot/_internal/renewal.py); a value that does not parse makes it skip the file.
CERTBOT_BOOLS = ("must_staple", "allow_subset_of_names", "reuse_key", "autorenew")
CERTBOT_INTS = ("rsa_key_size", "http01_port")
#: Where certbot points a lineage's files, relative to its config dir.
_LINEAGE_PATHS = {
    "archive_dir": ("archive", "{}"),
    "cert": ("live", "{}", "cert.pem"),
    "privkey": ("live", "{}", "privkey.pem"),
    "fullchain": ("live", "{}", "fullchain.pem"),
}


def location(lineage_dir):
    """(config dir, lineage, renewal file) of a certbot ``live/<lineage>`` directory."""
    if not isinstance(lineage_dir, str) or not lineage_dir.strip():
        raise SaltInvocationError("give the lineage's live directory, e.g. .../live/npm-5")
    path = os.path.normpath(lineage_dir)
    live, lineage = os.path.split(path)
    if not _LINEAGE.fullmatch(lineage) or os.path.basename(live) != "live":
        raise SaltInvocationError(
            f"{lineage_dir!r} is not a certbot lineage directory (<config dir>/live/<name>)"
        )
    config_dir = os.path.dirname(live)
    return config_dir, lineage, os.path.join(config_dir, "renewal", f"{lineage}.conf")


def _refused(path, why):
    return CommandExecutionError(
        f"{path}: certbot refuses this renewal file ({why}): it skips the lineage, which "
        "does not renew until the file is fixed"
    )


def _quoted(text):
    """Untrusted text for a message: one line, bounded, control characters escaped."""
    return repr(str(text)[:200])


def _is_int(value):
    try:
        int(value)
    except (TypeError, ValueError):
        return False
    return True


def reading(text, path):
    """The renewal file as certbot reads it: ConfigObj with certbot's options, then the
    checks certbot makes before it renews (``[renewalparams]``, an ``authenticator``, and
    True or False for its booleans, a number for its integers). What certbot refuses
    is a CommandExecutionError naming the line or the value."""
    if not HAS_CONFIGOBJ:
        raise CommandExecutionError(
            "reading certbot's renewal file needs configobj, the parser certbot uses "
            "(salt-pip install configobj)"
        )
    try:
        read = configobj.ConfigObj(text.splitlines(), encoding="utf-8", default_encoding="utf-8")
        params = read.get("renewalparams")
        if not isinstance(params, configobj.Section):
            raise CommandExecutionError(f"{path}: no [renewalparams] section, not a renewal file")
        if "authenticator" not in params:
            raise _refused(path, "[renewalparams] names no authenticator")
        for name in CERTBOT_BOOLS:
            value = params.get(name)
            if name in params and not (
                isinstance(value, str) and value.lower() in ("true", "false")
            ):
                raise _refused(path, f"{name} = {_quoted(value)}: certbot wants True or False")
        for name in CERTBOT_INTS:
            if name in params and not _is_int(params.get(name)):
                raise _refused(path, f"{name} = {_quoted(params.get(name))}: not a number")
        read.dict()  # every value interpolated, as certbot's reads do
    except configobj.ConfigObjError as exc:  # duplicates, bad lines, interpolation
        raise _refused(path, str(exc).rstrip(".")) from None
    return read


def check_lineage_paths(read, path, lineage):
    """The file must point at this lineage, by its relative layout (NPM's paths are
    the container's /etc/letsencrypt/..., not the minion's)."""
    for key, parts in _LINEAGE_PATHS.items():
        value = read.get(key)
        if not isinstance(value, str) or not value:
            raise CommandExecutionError(f"{path}: no {key!r} line, not a certbot renewal file")
        tail = [part.format(lineage) for part in parts]
        if os.path.normpath(value).split(os.sep)[-len(tail) :] != tail:
            raise CommandExecutionError(
                f"{path}: {key} = {_quoted(value)} belongs to another lineage "
                f"(want .../{'/'.join(tail)})"
            )


def reuse_key(read):
    """Whether certbot renew keeps the key, by certbot's own rule (``value.lower()``)."""
    return str(read["renewalparams"].get("reuse_key", "False")).lower() == "true"


def ending(line):
    """The line ending ``line`` has (``\\r\\n``, ``\\n``, ...), or ``""``."""
    return line[len(line.rstrip("\r\n")) :]


def is_reuse_key_line(value):
    """Whether ``value`` is one whole ``reuse_key`` line (what a note may put back)."""
    return isinstance(value, str) and bool(_WHOLE_REUSE_KEY_LINE.fullmatch(value))


def starts_reuse_key(line):
    """Whether ``line`` is a ``reuse_key`` setting (however its value reads)."""
    return _REUSE_KEY_LINE.match(line) is not None


def renewalparams_lines(text):
    """The line numbers of ``[renewalparams]`` and of the (last) ``reuse_key`` under it
    (None where there is none)."""
    section, params_line, reuse_line = (), None, None
    for number, line in enumerate(text.splitlines()):
        header = _RENEWAL_SECTION.match(line)
        if header:
            section = (*section[: len(header.group(1)) - 1], header.group(2))
            params_line = number if section == ("renewalparams",) else params_line
        elif section == ("renewalparams",) and _REUSE_KEY_LINE.match(line):
            reuse_line = number
    return params_line, reuse_line


def with_reuse_key(text, read, path):
    """``text`` with ``reuse_key = True`` under ``[renewalparams]``: its ``reuse_key``
    line's value replaced (indent and inline comment kept), or a line added right
    after the section line; every other line as it was. The result is read again as
    certbot reads it: anything but the same file with reuse_key True is refused."""
    lines = text.splitlines(keepends=True)
    params_line, reuse_line = renewalparams_lines(text)
    if reuse_line is not None:
        comment = read["renewalparams"].inline_comments.get("reuse_key") or ""
        indent = _REUSE_KEY_LINE.match(lines[reuse_line]).group(1)
        value = f"{indent}reuse_key = True" + (f"  {comment}" if comment else "")
        lines[reuse_line] = value + ending(lines[reuse_line])
    elif params_line is not None:
        end = ending(lines[params_line])
        if end:
            lines.insert(params_line + 1, "reuse_key = True" + end)
        else:  # [renewalparams] is the last line, with no newline: the file keeps none
            lines[params_line] += "\r\n" if "\r\n" in text else "\n"
            lines.insert(params_line + 1, "reuse_key = True")
    edited = "".join(lines)
    again = reading(edited, path)
    before, after = read.dict(), again.dict()
    before["renewalparams"].pop("reuse_key", None)
    after["renewalparams"].pop("reuse_key", None)
    if not reuse_key(again) or before != after:
        raise CommandExecutionError(
            f"{path}: cannot set reuse_key = True by editing one line of this file; nothing "
            "written: set it under [renewalparams] by hand"
        )
    return edited
