// Open a page in Debian's chromium (headless, through puppeteer), report its text, console errors,
// page errors and failed requests as JSON, and save a screenshot: `node page-check.mjs URL PNG`.
import puppeteer from "puppeteer";

const [url, png] = process.argv.slice(2);
const browser = await puppeteer.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"], headless: true });
const errors = [];
try {
  const page = await browser.newPage();
  page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => errors.push(`page: ${e.message}`));
  page.on("requestfailed", (r) => errors.push(`request: ${r.url()} ${r.failure()?.errorText}`));
  await page.setViewport({ width: 1100, height: 900 });
  await page.goto(url, { waitUntil: "load" });
  if (png) await page.screenshot({ path: png, fullPage: false });
  const text = await page.evaluate(() => document.body.innerText);
  console.log(JSON.stringify({ text, errors }));
} finally {
  await browser.close();
}
