#!/bin/sh
# Installs Debian's postfix: the real MTA of tests/test_postfix.py (and smtp-sink for bench/).
# Non-interactive: debconf takes its defaults. The test runs a private instance of its own and
# never uses or changes the system one. Quiet unless something fails.
set -e
[ -x /usr/sbin/postfix ] && [ -x /usr/sbin/smtp-sink ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends postfix; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-postfix.sh: could not install postfix" >&2
    exit 1
fi
