#!/usr/bin/env bash
# Lighthouse (mobile, its default) against the release build, in Debian's
# Chromium; prints the four category scores. Not part of the test suite:
# scores move with the machine's load. Lighthouse 12.2.3 is the last that
# runs on Node 20.
#
#   scripts/lighthouse.sh            # builds, starts a server, measures /
#   scripts/lighthouse.sh URL        # measures a server already running
set -euo pipefail
cd "$(dirname "$0")/.."

chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  echo "Chromium is missing: run scripts/setup.sh --test" >&2
  exit 1
fi

url=${1:-}
if [ -z "$url" ]; then
  scripts/build.sh
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  PORT=$port RELAY_PORT=0 ADMIN_PORT=0 target/release/server > /dev/null 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  url="http://127.0.0.1:$port/"
  for _ in $(seq 50); do
    curl -fs "${url}healthz" > /dev/null && break
    sleep 0.2
  done
fi

report=$(mktemp --suffix=.json)
npx --yes lighthouse@12.2.3 "$url" \
  --chrome-path="$chromium" \
  --chrome-flags="--headless=new --no-sandbox" \
  --only-categories=performance,accessibility,best-practices,seo \
  --output=json --output-path="$report" --quiet
node -e '
const r = require(process.argv[1]);
for (const [id, c] of Object.entries(r.categories)) {
  console.log(`${c.title.padEnd(16)} ${Math.round(c.score * 100)}`);
  for (const a of c.auditRefs.map((ref) => r.audits[ref.id]))
    if (a.score !== null && a.score < 1 && a.scoreDisplayMode !== "informative" && a.scoreDisplayMode !== "manual" && a.scoreDisplayMode !== "notApplicable")
      console.log(`  - ${a.id}: ${a.displayValue ?? a.score}`);
}
' "$report"
