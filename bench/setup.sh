#!/bin/sh
# Installs Debian's postfix for its smtp-sink (the fast discard-everything SMTP server that
# bench/run.py sends to). run.py calls this only when /usr/sbin/smtp-sink is missing.
# Non-interactive and quiet; prints apt's output only if the install fails.
set -e
[ -x /usr/sbin/smtp-sink ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends postfix; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "bench/setup.sh: could not install postfix (smtp-sink)" >&2
    exit 1
fi
