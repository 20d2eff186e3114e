#!/usr/bin/env bash
# Builds the release: the server, and the site's files with hashed names,
# each also precompressed (brotli and gzip) for the server to send as is.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo leptos build --release --precompress "$@"
# cargo-leptos's gzip encoder leaves the WASM about 15% bigger than gzip -9
# does: browsers without brotli get the smaller copy.
find target/site/pkg -type f ! -name '*.gz' ! -name '*.br' -exec gzip -9 -n -k -f {} \;
