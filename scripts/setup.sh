#!/usr/bin/env bash
# Installs what building (and, with --test, testing) the project needs on a
# Debian machine, skipping whatever is already present. Safe to run again.
#
#   scripts/setup.sh          toolchain to build and run the app
#   scripts/setup.sh --test   plus redis-server, Chromium and the end2end npm packages
#   scripts/setup.sh --dev    plus cargo-leptos, for `cargo leptos watch` (slow:
#                             about 13 minutes to compile on 2 cores, once)
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_LEPTOS_VERSION=0.3.10   # 0.3.11 needs a newer rustc
BINARYEN_VERSION=132          # Debian's binaryen 108 silently breaks the WASM
with_tests=false
with_dev=false
for arg in "$@"; do
  case $arg in
    --test) with_tests=true ;;
    --dev) with_dev=true ;;
    *) echo "usage: $0 [--test] [--dev]" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

apt_packages=()
need_apt() { command -v "$1" >/dev/null 2>&1 || apt_packages+=("$2"); }
need_apt node nodejs
need_apt npm npm
need_apt cc build-essential
need_apt pkg-config pkg-config
if $with_tests; then
  need_apt redis-server redis-server
  need_apt chromium chromium
fi
if ((${#apt_packages[@]})); then
  say "apt-get install ${apt_packages[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${apt_packages[@]}"
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# The CLI must match the wasm-bindgen crate in Cargo.lock exactly.
bindgen_version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $bindgen_version"; then
  say "cargo install wasm-bindgen-cli $bindgen_version"
  # Without --locked: its lockfile pins a crate version the registry lacks.
  # The binder alone (no test runner, no TLS and its C build), unoptimised:
  # it compiles in a third of the time and binds this WASM in under a
  # second all the same, with the same output.
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo install wasm-bindgen-cli --version "$bindgen_version" \
    --no-default-features --bin wasm-bindgen
fi

if ! wasm-opt --version 2>/dev/null | grep -q "version $BINARYEN_VERSION"; then
  if dpkg -s binaryen >/dev/null 2>&1; then
    say "removing Debian's binaryen (it shadows the working wasm-opt)"
    as_root apt-get remove -y -qq binaryen
  fi
  say "npm install -g binaryen@$BINARYEN_VERSION"
  as_root npm install -g --no-audit --no-fund "binaryen@$BINARYEN_VERSION.0.0"
fi

if $with_tests; then
  if [[ ! -d end2end/node_modules/@playwright/test ]] || [[ end2end/package-lock.json -nt end2end/node_modules/.package-lock.json ]]; then
    say "npm ci in end2end/ (Playwright without its browser download: Debian's Chromium is used)"
    (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
  fi
fi
if $with_dev && ! cargo leptos --version 2>/dev/null | grep -q " $CARGO_LEPTOS_VERSION"; then
  say "cargo install cargo-leptos $CARGO_LEPTOS_VERSION (slow: ~13 min on 2 cores, once per machine)"
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked --features no_downloads
fi
say "toolchain ready"
