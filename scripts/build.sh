#!/usr/bin/env bash
# Builds the release: the server, and the site's files with hashed names,
# each also precompressed (brotli and gzip) for the server to send as is.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo leptos build --release --precompress "$@"
# cargo-leptos runs wasm-opt -Oz once; more passes until nothing changes
# leave the WASM about 1% smaller gzipped (same code, same behaviour). Its
# brotli copy is made again from the result (gzip below).
for wasm in target/site/pkg/*.wasm; do
  wasm-opt -Oz --converge "$wasm" -o "$wasm"
  node -e 'const fs = require("fs"), zlib = require("zlib"), f = process.argv[1];
    const quality = { [zlib.constants.BROTLI_PARAM_QUALITY]: zlib.constants.BROTLI_MAX_QUALITY };
    fs.writeFileSync(f + ".br", zlib.brotliCompressSync(fs.readFileSync(f), { params: quality }));' "$wasm"
done
# cargo-leptos's gzip encoder leaves the WASM about 15% bigger than gzip -9
# does: browsers without brotli get the smaller copy.
find target/site/pkg -type f ! -name '*.gz' ! -name '*.br' -exec gzip -9 -n -k -f {} \;
