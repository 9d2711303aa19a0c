#!/usr/bin/env bash
# Installs everything the tests need (Debian packages for the real peers, Python packages) and runs
# the whole suite: lint, types, tests. Run as root on Debian 12 (CI does); safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS="postfix dovecot-core dovecot-lmtpd dovecot-imapd dovecot-pop3d dovecot-sieve cyrus-common
       sasl2-bin swaks mutt tmux fetchmail procmail tcpd sieve-connect"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=""
    for pkg in $PEERS; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        apt-get update -q
        # Package scripts must not start system daemons: the tests start private instances.
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
    fi
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test,fast]'

python3 -m ruff check src tests bench
python3 -m mypy
python3 -m pytest -q "$@"
