#!/usr/bin/env bash
# Make (or reuse) the virtual environment for one supported Salt release:
#   scripts/venv.sh 3008   -> .venv/salt3008 (test + dev tools)
#   scripts/venv.sh 3006   -> .venv/salt3006 (test tools, Salt 3006 LTS)
# The pins come from pyproject.toml; a venv is rebuilt when they change.
set -euo pipefail
release=${1:?usage: scripts/venv.sh 3008|3006}
repo=$(cd "$(dirname "$0")/.." && pwd)
venv="$repo/.venv/salt$release"
python=${PYTHON:-python3}

requirements=$("$python" - "$repo/pyproject.toml" "$release" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as handle:
    extras = tomllib.load(handle)["project"]["optional-dependencies"]
release = sys.argv[2]
if release == "3008":
    reqs = extras["test"] + extras["dev"]
elif release == "3006":
    reqs = [r for r in extras["test"] if not r.startswith("salt==")] + extras["salt3006"]
else:
    sys.exit(f"unsupported Salt release {release!r} (3008 or 3006)")
print("\n".join(reqs))
PY
)
stamp=$(printf '%s\n%s\n' "$("$python" -VV)" "$requirements" | sha256sum | cut -c1-16)
if [ -f "$venv/.certsync-stamp" ] && [ "$(cat "$venv/.certsync-stamp")" = "$stamp" ]; then
    exit 0
fi
echo "certsync: building $venv (Salt $release)" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
printf '%s\n' "$requirements" > "$venv/requirements.txt"
pip() { "$venv/bin/python" -m pip --disable-pip-version-check "$@" >> "$venv/pip.log" 2>&1; }
if ! { pip install --upgrade pip && pip install -r "$venv/requirements.txt"; }; then
    grep -v '^WARNING: Location' "$venv/pip.log" >&2
    echo "certsync: installing the test tools into $venv failed" >&2
    exit 1
fi
echo "$stamp" > "$venv/.certsync-stamp"
