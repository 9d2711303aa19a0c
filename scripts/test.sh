#!/usr/bin/env bash
# Installs everything the tests need (Debian packages for the real peers, Python packages in a
# virtual environment, .venv) and runs the whole suite: lint, types, tests — the daemons under
# uvloop, then the daemon and integration tests again under asyncio. Run as root on Debian 12
# (CI does); safe to run again. Arguments go to pytest (and then skip the asyncio pass).
# Both passes run on two pytest-xdist workers, a test module per worker at a time (--dist
# loadfile: a module's peers are started once); SEALMAIL_TEST_WORKERS=0 runs in one process.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's time, so that the whole (CI has 15 minutes) stays in view.
started=$SECONDS
took() { echo "== $1: $((SECONDS - step)) s (total $((SECONDS - started)) s)"; step=$SECONDS; }
step=$SECONDS

PEERS="postfix nsd dovecot-core dovecot-lmtpd dovecot-imapd dovecot-pop3d dovecot-sieve cyrus-common
       sasl2-bin swaks mutt tmux fetchmail procmail tcpd sieve-connect python3-venv fail2ban
       pflogsumm postgresql xinetd postgrey postfix-policyd-spf-python opendkim opendkim-tools
       opendmarc chromium chromium-driver"
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

# Debian's own Python refuses pip outside a virtual environment (PEP 668).
[ -x .venv/bin/python ] || python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --disable-pip-version-check -e '.[test,fast,postgresql,console,metrics]'
took "packages"

python -m ruff check src tests bench
python -m mypy
took "ruff and mypy"
# The slowest tests are listed too.
workers=(-n "${SEALMAIL_TEST_WORKERS:-2}" --dist loadfile)
python -m pytest -q "${workers[@]}" --durations=15 "$@"
took "tests (uvloop)"
if [ $# = 0 ]; then
    # The daemons again on the stdlib's loop (the other commands' tests run once, above).
    SEALMAIL_EVENT_LOOP=asyncio python -m pytest -q "${workers[@]}" --durations=10 \
        tests/server tests/mta tests/integration tests/cli/test_up.py tests/cli/test_deliver.py
    took "tests (asyncio)"
fi
