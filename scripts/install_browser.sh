#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/ui), which Playwright's Python package drives
# through its path: Playwright's own browser downloads are not reachable from every machine.
# Nothing to do when `chromium` is on PATH or ACCELFLOW_BROWSER names a Chromium.
set -euo pipefail
if [ -n "${ACCELFLOW_BROWSER:-}" ] || command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "the browser tests need Chromium: install it with your package manager and set" \
         "ACCELFLOW_BROWSER=/path/to/chromium" >&2
    exit 1
fi
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo -n)
apt_install() {
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
}
# a fresh machine may have no package lists yet
apt_install || { "${sudo[@]}" apt-get update -qq && apt_install; }
