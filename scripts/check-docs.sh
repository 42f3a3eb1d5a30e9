#!/usr/bin/env bash
# Build the documentation site strictly, serve it on 127.0.0.1, open it in headless chromium and check that
# the pages render and that the search answers. Fails on any mkdocs warning (broken links or anchors, a page
# out of the nav, an undocumented public name or setting), on a page error, or when search finds nothing.
#
#   bash scripts/check-docs.sh                 # about 10 s
#   DOCS_SCREENSHOTS=/tmp/shots bash scripts/check-docs.sh    # also save home.png and search.png there
#
# Needs the docs dependency group in .venv (pip install --group docs) and Debian's chromium; uses puppeteer
# from scripts/mermaid/node_modules (scripts/ensure-node-tools.sh) when present, else chromium's DevTools
# protocol from a small Node script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-.venv/bin/python}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
PUPPETEER=${PUPPETEER:-$PWD/scripts/mermaid/node_modules/puppeteer}
QUERY="dead letter"
started=$EPOCHREALTIME

step() { printf '== %s (%ss)\n' "$1" "$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')"; }
fail() { echo "check-docs: FAILED: $*" >&2; exit 1; }

[ -x "$PYTHON" ] || fail "$PYTHON not found: create .venv first (scripts/_env.sh's ensure_venv), or set PYTHON"
"$PYTHON" -c "import mkdocs, material, mkdocstrings, mkdocs_click, griffe_pydantic" 2>/dev/null ||
  fail "the documentation tools are missing from $PYTHON: pip install --group docs (or: pip install" \
       "'mkdocs>=1.6,<2' 'mkdocs-material>=9.7,<10' 'mkdocstrings[python]' mkdocs-click griffe-pydantic)"
[ -x "$CHROMIUM" ] || fail "$CHROMIUM not found: apt-get install chromium (or set CHROMIUM)"

work=$(mktemp -d /tmp/pubsubpy-docs.XXXXXX)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work" 2>/dev/null || { sleep 1; rm -rf "$work"; }
}
trap cleanup EXIT

step "building the site: mkdocs build --strict"
if ! NO_MKDOCS_2_WARNING=1 timeout 300 "$PYTHON" -m mkdocs build --strict --site-dir "$work/site" \
     >"$work/build.log" 2>&1; then
  grep -E "WARNING|ERROR|Error|error" "$work/build.log" >&2 || cat "$work/build.log" >&2
  fail "mkdocs build --strict failed (every warning is fatal; the lines above say what to fix)"
fi

step "checking the built files"
"$PYTHON" - "$work/site" "$QUERY" <<'EOF' || fail "the built site is incomplete (see above)"
import json, pathlib, sys
site, query = pathlib.Path(sys.argv[1]), sys.argv[2]
index = json.loads((site / "search" / "search_index.json").read_text())
docs = index["docs"]
pages = {doc["location"].split("#")[0] for doc in docs}
print(f"   search index: {len(docs)} entries from {len(pages)} pages")
hits = [doc["location"] for doc in docs if query in (doc["title"] + " " + doc["text"]).lower()]
problems = []
if len(pages) < 20:
    problems.append(f"only {len(pages)} pages in the search index")
if not hits:
    problems.append(f"no entry of the search index mentions {query!r}")
expected = {
    "index.html": "Typed model events",
    "tutorial/index.html": "memory://shop",
    "reference/settings/index.html": "unknown_key_window",       # the generated settings table
    "reference/cli/index.html": "--metrics-port",               # mkdocs-click, from the click group
    "reference/api/pubsubpy/index.html": "publish_model_event",  # mkdocstrings, from the docstrings
    "reference/errors/index.html": "PublishNacked",
}
for page, text in expected.items():
    path = site / page
    if not path.exists():
        problems.append(f"{page} was not built")
    elif text not in path.read_text():
        problems.append(f"{page} does not contain {text!r}")
for problem in problems:
    print(f"   {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

step "serving the site on 127.0.0.1"
port=$("$PYTHON" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$PYTHON" -m http.server "$port" --bind 127.0.0.1 --directory "$work/site" >"$work/server.log" 2>&1 &
server=$!
url="http://127.0.0.1:$port/"
for _ in $(seq 50); do
  if "$PYTHON" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$url" 2>/dev/null; then
    break
  fi
  kill -0 "$server" 2>/dev/null || fail "the HTTP server exited: $(cat "$work/server.log")"
  sleep 0.2
done
"$PYTHON" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url" 2>/dev/null ||
  fail "the HTTP server did not answer on $url within 10 s"
echo "   $url"

if [ -f "$PUPPETEER/package.json" ]; then
  step "opening it in headless chromium (puppeteer): the home page, then a search for '$QUERY'"
  cat >"$work/check.cjs" <<'EOF'
// The home page renders without page errors; the search box answers a query with results, and answers
// nonsense with none (so the check can tell a working search from a broken one). Every wait is bounded.
const [puppeteerPath, chromium, url, query, shots] = process.argv.slice(2);
const puppeteer = require(puppeteerPath);
const fs = require("fs");
const path = require("path");

const problems = [];
(async () => {
  const browser = await puppeteer.launch({ executablePath: chromium, headless: true,
                                           args: ["--no-sandbox", "--disable-gpu"] });
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(15000);
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => { if (m.type() === "error") problems.push(`console error: ${m.text()}`); });
    page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
    await page.setViewport({ width: 1280, height: 900 });
    await page.goto(url, { waitUntil: "networkidle0", timeout: 20000 });
    const title = await page.title();
    if (!title.includes("pubsubpy")) problems.push(`home page title is ${JSON.stringify(title)}`);
    const tabs = await page.$$eval(".md-nav__link", (links) => links.length);
    console.log(`   home page: ${JSON.stringify(title)}, ${tabs} navigation links`);
    if (shots) await page.screenshot({ path: path.join(shots, "home.png") });

    async function search(text) {
      await page.click("label.md-header__button[for='__search'], .md-search__form", { timeout: 5000 })
        .catch(() => {});
      await page.focus("input.md-search__input");
      await page.$eval("input.md-search__input", (input) => { input.value = ""; });
      await page.type("input.md-search__input", text, { delay: 20 });
      await page.waitForFunction(() => {
        const meta = document.querySelector(".md-search-result__meta");
        return meta && !/initializing|typing/i.test(meta.textContent) && meta.textContent.trim() !== "";
      }, { timeout: 15000 }).catch(() => problems.push(`search for ${JSON.stringify(text)}: no answer in 15 s`));
      return page.evaluate(() => ({
        meta: document.querySelector(".md-search-result__meta")?.textContent.trim() ?? "",
        titles: [...document.querySelectorAll(".md-search-result__item h1, .md-search-result__item h2")]
          .map((h) => h.textContent.trim()),
      }));
    }

    const found = await search(query);
    console.log(`   search ${JSON.stringify(query)}: ${found.meta}; first: ${found.titles.slice(0, 4).join(" | ")}`);
    if (found.titles.length === 0) problems.push(`search for ${JSON.stringify(query)} shows no results (${found.meta})`);
    else if (!found.titles.some((t) => /dead.?letter/i.test(t))) {
      problems.push(`no result title for ${JSON.stringify(query)} mentions dead letters: ${found.titles.join(" | ")}`);
    }
    if (shots) await page.screenshot({ path: path.join(shots, "search.png") });

    if (found.titles.length === 0) throw new Error("search does not answer: the control search is skipped");
    const none = await search("qqxyzzyqq");
    console.log(`   search "qqxyzzyqq" (control): ${none.meta}`);
    if (none.titles.length !== 0) problems.push(`search for nonsense found ${none.titles.length} results`);
  } finally {
    await browser.close();
  }
  if (problems.length) {
    for (const p of problems) console.error(`   ${p}`);
    process.exit(1);
  }
})().catch((e) => {
  for (const p of problems) console.error(`   ${p}`);
  console.error(`   ${e.message || e}`);
  process.exit(1);
});
EOF
  [ -z "${DOCS_SCREENSHOTS:-}" ] || mkdir -p "$DOCS_SCREENSHOTS"
  timeout 90 node "$work/check.cjs" "$PUPPETEER" "$CHROMIUM" "$url" "$QUERY" "${DOCS_SCREENSHOTS:-}" ||
    fail "the site did not work in chromium (see above)"
else
  step "opening it in headless chromium (DevTools protocol, no puppeteer): a search for '$QUERY' through ?q="
  cat >"$work/cdp.cjs" <<'EOF'
// Without puppeteer: start chromium with remote debugging, open URL?q=QUERY (Material runs that search on
// load) and wait, bounded, for its results. Node 20 needs --experimental-websocket for WebSocket.
const { spawn } = require("child_process");
const fs = require("fs");
const path = require("path");
const [chromium, url, query, profile] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const browser = spawn(chromium, ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                                 `--user-data-dir=${profile}`, "about:blank"], { stdio: "ignore" });
async function main() {
  const portFile = path.join(profile, "DevToolsActivePort");
  for (let i = 0; i < 100 && !fs.existsSync(portFile); i++) await sleep(100);
  if (!fs.existsSync(portFile)) throw new Error("chromium did not open its DevTools port within 10 s");
  const port = fs.readFileSync(portFile, "utf8").split("\n")[0];
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const ws = new WebSocket(targets.find((t) => t.type === "page").webSocketDebuggerUrl);
  await new Promise((ok, ko) => { ws.onopen = ok; ws.onerror = () => ko(new Error("cannot reach the page")); });
  let id = 0;
  const pending = new Map();
  ws.onmessage = (m) => { const d = JSON.parse(m.data); pending.get(d.id)?.(d); pending.delete(d.id); };
  const send = (method, params = {}) =>
    new Promise((ok) => { pending.set(++id, ok); ws.send(JSON.stringify({ id, method, params })); });
  await send("Page.navigate", { url: `${url}?q=${encodeURIComponent(query)}` });
  const probe = `JSON.stringify([document.querySelectorAll(".md-search-result__item").length,
                  (document.querySelector(".md-search-result__meta") || {}).textContent || ""])`;
  for (let i = 0; i < 150; i++) {
    await sleep(100);
    const reply = await send("Runtime.evaluate", { expression: probe, returnByValue: true });
    const [count, meta] = JSON.parse(reply.result?.result?.value ?? '[0, ""]');
    if (count > 0) { console.log(`   search ${JSON.stringify(query)}: ${meta.trim()}`); return; }
  }
  throw new Error(`search for ${JSON.stringify(query)} shows no results within 15 s`);
}
async function stop(code) {  // chromium is ours: stop it and wait (bounded) until it is gone
  const gone = new Promise((ok) => browser.once("exit", ok));
  browser.kill();
  await Promise.race([gone, sleep(5000)]);
  process.exit(code);
}
main().then(() => stop(0), (e) => { console.error(`   ${e.message}`); return stop(1); });
EOF
  timeout 60 node --no-warnings --experimental-websocket "$work/cdp.cjs" "$CHROMIUM" "$url" "$QUERY" "$work/profile" ||
    fail "the site's search did not answer in chromium (see above)"
fi

step "stopping the server"
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
server=""
step "documentation OK"
