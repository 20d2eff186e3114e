#!/usr/bin/env bash
# Installs what is missing, builds the release (server + WASM) and runs it
# on the embedded default: one instance, no Redis. Open http://localhost:4100.
# Settings come from the environment or .env (see .env.example); extra
# arguments go to the server (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec target/release/server "$@"
