#!/usr/bin/env bash
# What the browser and Node tests need: Debian's chromium (puppeteer's own browser download does not
# work here), mermaid-cli and puppeteer (scripts/mermaid: the Mermaid rendering and the HTML catalogue
# tests) and the official AsyncAPI parser (scripts/asyncapi), each from its package-lock.json.
# About a minute the first time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing Debian's chromium (for the Mermaid rendering test)"
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # DPkg::Lock::Timeout: scripts/rabbitmq-next.sh may be installing debootstrap at the same moment
    lock=(-o DPkg::Lock::Timeout=300)
    apt-get install -y -qq "${lock[@]}" chromium >/dev/null 2>&1 \
      || { apt-get update -qq "${lock[@]}" && apt-get install -y -qq "${lock[@]}" chromium >/dev/null; }
  else
    echo "   not root: run 'sudo apt-get install chromium' (the rendering test skips without it)"
  fi
fi
for tool in mermaid asyncapi; do
  stamp="scripts/$tool/node_modules/.installed"
  if [ ! -f "$stamp" ] || [ "scripts/$tool/package-lock.json" -nt "$stamp" ]; then
    echo "== installing scripts/$tool (npm ci)"
    (cd "scripts/$tool" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    touch "$stamp"
  fi
done
