#!/usr/bin/env bash
# Installs what tests/python/test_js_clients.py drives, from the npm registry, into
# tests/js/.cache/node_modules (which git ignores): kafkajs 2.2.4 as `kafkajs` and kafkajs
# 1.16.0 as `kafkajs-old`, exactly as package-lock.json pins them (`npm ci`). client.js loads
# them from there.
#
# Idempotent and quick when nothing changed: npm runs again only when package.json,
# package-lock.json or the Node version changed. Needs Node 14+ and npm 7+ (lockfile v3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="$here/.cache"

for tool in node npm sha256sum; do
  command -v "$tool" >/dev/null || { echo "install.sh: $tool is not installed" >&2; exit 1; }
done
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 14 ? 0 : 1)' ||
  { echo "install.sh: kafkajs 2 needs Node 14 or newer, found $(node --version)" >&2; exit 1; }

want="$( { node --version; cat "$here/package.json" "$here/package-lock.json"; } |
  sha256sum | cut -d' ' -f1)"
if [ -f "$cache/node_modules.sha256" ] && [ "$(cat "$cache/node_modules.sha256")" = "$want" ] &&
    [ -d "$cache/node_modules" ]; then
  exit 0
fi

echo "== installing kafkajs (npm ci) into tests/js/.cache"
start=$SECONDS
# Into a temporary directory first, so that an interrupted install never looks complete.
tmp="$cache/install.tmp"
rm -rf "$tmp" "$cache/node_modules.sha256"
mkdir -p "$tmp"
cp "$here/package.json" "$here/package-lock.json" "$tmp/"
# --ignore-scripts: neither package has install scripts, and none should run here.
if ! (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error \
    >"$cache/npm.log" 2>&1); then
  cat "$cache/npm.log" >&2
  echo "install.sh: npm ci failed" >&2
  exit 1
fi
# The versions the tests expect, whatever the registry served.
NODE_PATH="$tmp/node_modules" node -e '
  const want = { "kafkajs": "2.2.4", "kafkajs-old": "1.16.0" };
  for (const [name, version] of Object.entries(want)) {
    const got = require(name + "/package.json").version;
    if (got !== version) {
      console.error(`install.sh: ${name} is ${got}, expected ${version}`)
      process.exit(1)
    }
  }'
rm -rf "$cache/node_modules"
mv "$tmp/node_modules" "$cache/node_modules"
rm -rf "$tmp"
echo "$want" >"$cache/node_modules.sha256"
echo "   installed in $((SECONDS - start)) s"
