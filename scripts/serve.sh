#!/usr/bin/env bash
# Installs what the web build needs (scripts/setup.sh serve), then builds and
# serves the app at http://127.0.0.1:8080 (Trunk.toml). Extra arguments go to
# `trunk serve`, e.g. `scripts/serve.sh --port 9000`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh serve
. scripts/env.sh
echo "serve: http://127.0.0.1:8080/ (kernel self-test: http://127.0.0.1:8080/?selftest)"
exec trunk serve --release "$@"
