# Sourced by scripts/demo and scripts/test: makes sure the machine has what signal-bridge needs,
# then activates the project's virtualenv (.venv). Installs system packages with apt only when they
# are missing and we run as root; otherwise says exactly what to install and stops.
# Usage: source scripts/bootstrap.sh [demo|test]

set -euo pipefail
SIGBRIDGE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_profile="${1:-demo}"

_missing=()
_want_cmd() { command -v "$1" >/dev/null 2>&1 || _missing+=("$2"); }
_want_cmd python3 python3
if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
        || { echo "signal-bridge needs Python >= 3.11 (found $(python3 --version))" >&2; exit 1; }
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || _missing+=(python3-venv)
fi
if [ "$_profile" = test ]; then
    _want_cmd mosquitto mosquitto
    # The Redis session store's tests (tests/test_cluster_*.py) run real redis-server processes.
    _want_cmd redis-server redis-server
    _want_cmd g++ g++
    [ -x /usr/bin/chromium ] || _missing+=(chromium)
    # The rover sketch built for the Uno and run on an emulated ATmega328P (firmware_stubs/avr_build.py).
    _want_cmd avr-g++ gcc-avr
    [ -f /usr/lib/avr/include/avr/io.h ] || _missing+=(avr-libc)
    [ -f /usr/share/arduino/hardware/arduino/avr/cores/arduino/Arduino.h ] || _missing+=(arduino-core-avr)
    [ -f /usr/include/simavr/parts/uart_pty.h ] || _missing+=(libsimavr-dev)
    [ -f /usr/include/libelf.h ] || _missing+=(libelf-dev)
fi

if [ "${#_missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing system packages: ${_missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${_missing[@]}" >/dev/null
    else
        echo "signal-bridge needs these system packages: ${_missing[*]}" >&2
        echo "install them with:  sudo apt-get install -y ${_missing[*]}" >&2
        exit 1
    fi
fi

_venv="$SIGBRIDGE_ROOT/.venv"
# The demo shows the synthetic camera too (aiortc; the bridge itself never needs it).
_extra="[camera]"
[ "$_profile" = test ] && _extra="[test,cluster]"
_stamp="$_venv/.installed-$(sha1sum "$SIGBRIDGE_ROOT/pyproject.toml" | cut -c1-12)-${_profile}"
if [ ! -f "$_stamp" ]; then
    [ -x "$_venv/bin/python" ] || python3 -m venv "$_venv"
    # Say what is coming (from pyproject.toml, so it cannot drift): the first run takes a while.
    _what=$(python3 - "$SIGBRIDGE_ROOT/pyproject.toml" "$_profile" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
deps = list(project["dependencies"])
extras = ["test", "cluster"] if sys.argv[2] == "test" else ["camera"]
for extra in extras:
    deps += project.get("optional-dependencies", {}).get(extra, [])
print(", ".join(deps))
PY
)
    echo "== installing Python packages into $_venv: signal-bridge (editable) and ${_what}" >&2
    "$_venv/bin/python" -m pip install -q --disable-pip-version-check -e "$SIGBRIDGE_ROOT$_extra" 2>&1 \
        | grep -v '^WARNING: Location' >&2 || true
    "$_venv/bin/python" -c 'import bridge, aiohttp, websockets, jwt, yaml, aiomqtt' \
        || { echo "Python packages failed to install into .venv" >&2; exit 1; }
    touch "$_stamp"
fi
# shellcheck disable=SC1091
source "$_venv/bin/activate"
