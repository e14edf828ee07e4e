#!/usr/bin/env bash
# Runs the sensenet JS client compatibility suite against a running Cairn server.
#   CAIRN_URL=http://127.0.0.1:8080 CAIRN_ADMIN_KEY=... compat/run-tests.sh [extra node --test args]
# Installs the pinned client (npm ci) when node_modules is missing. Needs Node >= 20.11.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

: "${CAIRN_URL:?set CAIRN_URL, e.g. http://127.0.0.1:8080}"
: "${CAIRN_ADMIN_KEY:?set CAIRN_ADMIN_KEY to the admin key of the server}"
export CAIRN_URL CAIRN_ADMIN_KEY

if [ ! -d node_modules/@sensenet/client-core ]; then
  npm ci --no-audit --no-fund
fi

# One test file at a time: CheckIndexIntegrity expects the index to catch up with writes.
exec node --test --test-concurrency=1 --test-timeout=120000 "$@" test/
