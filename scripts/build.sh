#!/usr/bin/env bash
# Builds the release: the server, and the site under target/site: the WASM
# bound by wasm-bindgen and shrunk by wasm-opt, its JS, the CSS and the public
# files, the first three named with a hash of their content (served as
# immutable) and each also precompressed (brotli and gzip) for the server to
# send as is. The hashed names are listed in target/release/hash.txt, next
# to the binary, where Leptos looks for them.
#
# This is what `cargo leptos build --release --precompress` did, without
# needing cargo-leptos (20 minutes to compile on 2 cores): the release needs
# its output, not the development tool that also watches and reloads.
set -euo pipefail
cd "$(dirname "$0")/.."

name=chat # the output name the pages link (LEPTOS_OUTPUT_NAME)
site=target/site
pkg=$site/pkg
bound=target/wasm-bound

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

say "WASM (frontend, wasm-release profile)"
# Alone, in a target directory of its own: with the server it would switch
# on both `ssr` and `hydrate` in `app` (and it shares nothing with the
# server's build: another target, another profile).
cargo build -p frontend --lib --target wasm32-unknown-unknown --profile wasm-release \
  --target-dir target/wasm
rm -rf "$bound"
# The pages pass the WASM's hashed path to init(): no default path in the JS.
wasm-bindgen --target web --no-typescript --omit-default-module-path \
  --out-dir "$bound" --out-name "$name" \
  target/wasm/wasm32-unknown-unknown/wasm-release/frontend.wasm
# Passes until nothing changes: about 1% smaller gzipped than a single -Oz.
wasm-opt -Oz --converge "$bound/${name}_bg.wasm" -o "$bound/${name}_bg.wasm"

# After the WASM, not beside it: on two cores the two builds side by side
# took longer (10.1 min for a first run) than one after the other (9.6).
say "server (release)"
cargo build --release -p server "$@"

say "site files in $site"
rm -rf "$site"
mkdir -p "$pkg"
cp -R public/. "$site/"
# A name-safe content hash: the first 20 hex digits of its SHA-256.
hashed() { # <source> <kind>: copies it as $name.<hash>.<kind>, prints the hash
  local hash
  hash=$(sha256sum "$1" | cut -c1-20)
  cp "$1" "$pkg/$name.$hash.$2"
  echo "$hash"
}
{
  echo "js: $(hashed "$bound/$name.js" js)"
  echo "wasm: $(hashed "$bound/${name}_bg.wasm" wasm)"
  echo "css: $(hashed style/main.css css)"
} >target/release/hash.txt
# Code the Rust side inlines into the JS (#[wasm_bindgen(inline_js)]).
[[ -d "$bound/snippets" ]] && cp -R "$bound/snippets" "$pkg/"

# Brotli at its best quality (Node's zlib, already needed for binaryen) and
# gzip -9 for browsers without brotli.
find "$pkg" -type f ! -name '*.gz' ! -name '*.br' -print0 |
  xargs -0 node -e 'const fs = require("fs"), zlib = require("zlib");
    const quality = { [zlib.constants.BROTLI_PARAM_QUALITY]: zlib.constants.BROTLI_MAX_QUALITY };
    for (const f of process.argv.slice(1))
      fs.writeFileSync(f + ".br", zlib.brotliCompressSync(fs.readFileSync(f), { params: quality }));'
find "$pkg" -type f ! -name '*.gz' ! -name '*.br' -exec gzip -9 -n -k -f {} \;
say "built: target/release/server, $site ($(cat target/release/hash.txt | tr '\n' ' '))"
