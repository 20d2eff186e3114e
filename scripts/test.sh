#!/usr/bin/env bash
# Installs what the tests need, then runs all of them: formatting and lints,
# unit and integration tests (real redis-server processes on free ports, real
# WebSocket clients; once with one Redis, once with a local Redis Cluster),
# the release build, and the end-to-end tests in
# Chromium plus the Node `ws` relay compatibility check.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --all-targets -- -D warnings
# The browser crate on its own target: with the server it would switch on
# both `ssr` and `hydrate` in `app`.
cargo clippy -p frontend --target wasm32-unknown-unknown -- -D warnings
step "cargo test (unit + integration, one Redis)"
cargo test
step "cargo test: the Redis suites again, against a three-master Redis Cluster"
TEST_REDIS=cluster cargo test -p server --test auth --test authorship --test chat --test durable --test interest --test ops --test relay \
  --test rooms --test scale --test security --test streams --test exactly_once \
  --test moderation --test api --test webhooks --test retention
step "release build (server + WASM)"
scripts/build.sh
step "end-to-end (Playwright, Chromium) and relay compatibility (Node ws)"
(cd end2end && npx playwright test)
