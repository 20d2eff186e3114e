#!/usr/bin/env bash
# Builds the release server and load generator, then runs the load scenarios:
# a private redis-server on a free port, fresh server instances per scenario,
# real WebSocket clients. Prints a Markdown table and one JSON line per
# scenario. Needs redis-server (scripts/setup.sh --test installs it).
#
#   scripts/bench.sh               # all thirteen scenarios (about 8 minutes)
#   scripts/bench.sh --only 1,5    # some of them
#   scripts/bench.sh --quick       # tiny loads: checks that it works
#   cargo bench -p server          # the per-message hot path (criterion)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p server -p bench
exec target/release/loadgen "$@"
