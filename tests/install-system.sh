#!/bin/sh
# Installs the Debian packages the tests drive for real, in one apt-get run, only if missing:
#   chromium (+ emoji and CJK fonts)  the browser tests (Playwright's own download needs the network)
#   postfix                           a real MTA for tests/test_postfix.py, smtp-sink for bench/
#   dovecot-imapd                     a real IMAP server for tests/test_bounces_imap.py
#   postgresql                        throwaway clusters (initdb, pg_ctl) for tests/postgres.py
# Quiet unless something fails.
set -e
need=""
command -v chromium >/dev/null 2>&1 || need="$need chromium"
fc-list 2>/dev/null | grep -q "Noto Color Emoji" || need="$need fonts-noto-color-emoji"
fc-list 2>/dev/null | grep -q "Noto Sans CJK" || need="$need fonts-noto-cjk"
{ [ -x /usr/sbin/postfix ] && [ -x /usr/sbin/smtp-sink ]; } || need="$need postfix"
[ -x /usr/sbin/dovecot ] || need="$need dovecot-imapd"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
[ -z "$need" ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "installing Debian packages:$need"
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends $need; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-system.sh: could not install:$need" >&2
    exit 1
fi
