#!/usr/bin/env bash
# What the Mermaid rendering test needs: Debian's chromium (puppeteer's own browser download does not
# work here) and mermaid-cli from scripts/mermaid/package-lock.json. About a minute the first time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing Debian's chromium (for the Mermaid rendering test)"
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
  else
    echo "   not root: run 'sudo apt-get install chromium' (the rendering test skips without it)"
  fi
fi
stamp=scripts/mermaid/node_modules/.installed
if [ ! -f "$stamp" ] || [ scripts/mermaid/package-lock.json -nt "$stamp" ]; then
  echo "== installing mermaid-cli (scripts/mermaid)"
  (cd scripts/mermaid && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  touch "$stamp"
fi
