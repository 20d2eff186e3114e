#!/usr/bin/env bash
# Builds the release server and load generator, then runs the load scenarios:
# a private redis-server on a free port, fresh server instances per scenario,
# real WebSocket clients. Prints a Markdown table and one JSON line per
# scenario. Needs redis-server (scripts/setup.sh --test installs it).
#
#   scripts/bench.sh                        # all fourteen scenarios (about 8 minutes)
#   scripts/bench.sh --only 1,5             # some of them
#   scripts/bench.sh --quick                # tiny loads: checks that it works
#   scripts/bench.sh --before-rev REV ...   # each scenario on commit REV's server,
#                                           # then on this one, and the change
#   cargo bench -p server                   # the per-message hot path (criterion)
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
while (($#)); do
  if [[ $1 == --before-rev ]]; then
    rev=$(git rev-parse --short "${2:?--before-rev needs a commit}")
    before=$PWD/target/before/server-$rev
    if [[ ! -x $before ]]; then
      # Built from a clean checkout of that commit, with a target directory
      # of its own (kept: a second comparison needs no rebuild).
      tree=$(mktemp -d)
      git worktree add --detach "$tree" "$rev" >/dev/null
      trap 'git worktree remove --force "$tree"' EXIT
      CARGO_TARGET_DIR=$PWD/target/before cargo build --release -p server \
        --manifest-path "$tree/Cargo.toml"
      cp target/before/release/server "$before"
    fi
    args+=(--before "$before")
    shift 2
  else
    args+=("$1")
    shift
  fi
done
cargo build --release -p server -p bench
target/release/loadgen "${args[@]}"
