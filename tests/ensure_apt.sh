#!/bin/sh
# Make sure the Debian packages a test drives are installed, so `make test` runs
# it on a fresh machine instead of skipping it:
#   sh tests/ensure_apt.sh NAME "PACKAGES" "PROGRAMS"
# e.g. chromium for the browser test (tests/clients/test_web_page.py), irssi and tmux for
# the IRC client test (tests/clients/test_irssi.py). apt only, never a download of our own,
# and `apt-get update` only when a package is missing and cannot be found. When a
# package truly cannot be installed (no root, no apt, no network), say so loudly and
# succeed: the test then skips, with the reason in .venv/NAME-unavailable.
set -u
NAME="$1"
PACKAGES="$2"
PROGRAMS="$3"
MARKER=".venv/$NAME-unavailable"

have_all() {
    for prog in $PROGRAMS; do
        case "$prog" in
            /*) [ -x "$prog" ] || return 1 ;;
            *) command -v "$prog" >/dev/null 2>&1 || return 1 ;;
        esac
    done
}

fail() {
    echo "!!! ensure_apt: $1; the $NAME test will be SKIPPED" >&2
    mkdir -p "$(dirname "$MARKER")" 2>/dev/null
    echo "$1" > "$MARKER" 2>/dev/null
    exit 0
}

if have_all; then
    rm -f "$MARKER"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || fail "no $PROGRAMS and no apt-get to install $PACKAGES"
if [ "$(id -u)" != "0" ]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
        || fail "$PACKAGES missing and not root (run: apt-get install -y $PACKAGES)"
    SUDO="sudo -n"
else
    SUDO=""
fi

echo "ensure_apt: installing $PACKAGES with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086 # PACKAGES is a list
if ! $SUDO apt-get install -y -q $PACKAGES >/dev/null 2>&1; then
    $SUDO apt-get update -q >/dev/null || fail "apt-get update failed"
    $SUDO apt-get install -y -q $PACKAGES >/dev/null 2>&1 || fail "apt-get install $PACKAGES failed"
fi
have_all || fail "$PACKAGES installed but one of $PROGRAMS is missing"
rm -f "$MARKER"
