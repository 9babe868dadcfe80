#!/bin/sh
# Make sure Debian's chromium is installed for the browser test (tests/test_web_page.py).
# Never downloads a browser of its own: apt only, and `apt-get update` only when the
# package is missing and cannot be found. When the browser truly cannot be installed
# (no root, no apt, no network), say so loudly and succeed: the test then skips with
# the reason written to $MARKER.
set -u
MARKER="${CHROMIUM_SKIP_FILE:-.venv/chromium-unavailable}"
BROWSER="${CHROMIUM_PATH:-/usr/bin/chromium}"

if [ -x "$BROWSER" ]; then
    rm -f "$MARKER"
    exit 0
fi

fail() {
    echo "!!! ensure_chromium: $1; the browser test will be SKIPPED" >&2
    mkdir -p "$(dirname "$MARKER")" 2>/dev/null
    echo "$1" > "$MARKER" 2>/dev/null
    exit 0
}

command -v apt-get >/dev/null 2>&1 || fail "no $BROWSER and no apt-get to install it"
if [ "$(id -u)" != "0" ]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
        || fail "no $BROWSER and not root (run: apt-get install -y chromium)"
    SUDO="sudo -n"
else
    SUDO=""
fi

echo "ensure_chromium: installing chromium with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q chromium >/dev/null 2>&1; then
    $SUDO apt-get update -q >/dev/null || fail "apt-get update failed"
    $SUDO apt-get install -y -q chromium >/dev/null 2>&1 || fail "apt-get install chromium failed"
fi
[ -x "$BROWSER" ] || fail "chromium installed but $BROWSER is missing"
rm -f "$MARKER"
