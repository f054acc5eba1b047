// End-to-end test of aiclient's web UI in headless Chromium (Debian's /usr/bin/chromium driven
// by playwright-core; no browser download). Run by tests/tests/web_ui.rs, which starts the
// gateway (file storage, one openai-custom account "a1" against a mock upstream) and passes:
//   AICLIENT_URL, AICLIENT_PASSWORD  the gateway and its generated admin password
//   AICLIENT_API_KEY                 the client API key (for requests through the gateway)
//   MOCK_BASE_URL, CLAUDE_API_KEY    for the claude-custom account the test adds
//   SCREENSHOT, FAILURE_SCREENSHOT   where to save the dashboard (and a failure) screenshot
//   CHROMIUM                         the browser (default /usr/bin/chromium)
// Prints one "ok N - …" line per step and a closing "ui e2e: N passed, N failed"; exits 1 on
// the first failure.

import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const URL_ = env("AICLIENT_URL").replace(/\/$/, "");
const PASSWORD = env("AICLIENT_PASSWORD");
const API_KEY = env("AICLIENT_API_KEY");
const MOCK = env("MOCK_BASE_URL");
const CLAUDE_KEY = env("CLAUDE_API_KEY");
const SCREENSHOT = env("SCREENSHOT");
const FAILURE_SCREENSHOT = env("FAILURE_SCREENSHOT", "");
const CHROMIUM = env("CHROMIUM", "/usr/bin/chromium");
const STEP_MS = 15_000;
const t0 = Date.now();

// The whole run is bounded, whatever hangs.
const overall = setTimeout(() => {
  console.log("not ok - the browser test ran over 150 s");
  console.log(`ui e2e: ${passed} passed, 1 failed`);
  process.exit(1);
}, 150_000);

let passed = 0;
async function step(name, fn) {
  try {
    await fn();
  } catch (e) {
    e.message = `${name}: ${e.message}`;
    throw e;
  }
  passed += 1;
  console.log(`ok ${passed} - ${name}`);
}
function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

// A client request through the gateway, as an SDK would send it.
async function chat(model) {
  const res = await fetch(`${URL_}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}` },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] }),
    signal: AbortSignal.timeout(STEP_MS),
  });
  await res.text();
  return res.status;
}

fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "aiclient-ui-chromium-"));
let context;
let page;
try {
  // This machine's closed network stalls Chromium's background services; these flags keep it
  // off the network, and the fresh profile keeps runs independent.
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60_000,
    viewport: { width: 1280, height: 900 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(STEP_MS);
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  // The UI reports action failures with alert(); any dialog here is a failure, except the
  // delete confirmation the test does not use.
  const dialogs = [];
  page.on("dialog", (d) => { dialogs.push(`${d.type()}: ${d.message()}`); d.dismiss().catch(() => {}); });
  const writes = [];
  page.on("request", (r) => { if (r.method() !== "GET") writes.push(`${r.method()} ${new URL(r.url()).pathname}`); });

  const token = () => page.evaluate(() => sessionStorage.getItem("aiclient-token"));
  const apiGet = async (p) => {
    const res = await fetch(`${URL_}${p}`, { headers: { authorization: `Bearer ${await token()}` }, signal: AbortSignal.timeout(STEP_MS) });
    assert(res.ok, `GET ${p} answered ${res.status}`);
    return res.json();
  };
  const row = (type, uuid) => page.locator(`.pool[data-type="${type}"] tr[data-uuid="${uuid}"]`);
  const cellNum = async (type, uuid, test) => Number(await row(type, uuid).locator(`[data-test="${test}"]`).textContent());

  await step("the login page is shown", async () => {
    const res = await page.goto(`${URL_}/`, { waitUntil: "load" });
    assert(res.ok(), `GET / answered ${res.status()}`);
    await page.locator("#login-view").waitFor({ state: "visible" });
    assert(await page.locator("#app-view").isHidden(), "the dashboard is hidden before login");
  });

  await step("a wrong password is refused with a message", async () => {
    await page.fill("#password", "not-the-password");
    await page.click("#login-button");
    await page.waitForFunction(() => document.getElementById("login-error").textContent.trim() !== "");
    assert(await page.locator("#app-view").isHidden(), "still logged out");
    assert(!(await token()), "no session token was kept");
  });

  await step("logs in and sees the seeded pool", async () => {
    await page.fill("#password", PASSWORD);
    await page.click("#login-button");
    await page.locator("#app-view").waitFor({ state: "visible" });
    await row("openai-custom", "a1").waitFor();
    const r = row("openai-custom", "a1");
    assert((await r.locator('[data-test="status"]').textContent()) === "healthy", "a1 is healthy");
    assert((await cellNum("openai-custom", "a1", "usage")) === 0, "a1 has no usage yet");
    assert((await cellNum("openai-custom", "a1", "errors")) === 0, "a1 has no errors yet");
    assert(await page.locator("#login-view").isHidden(), "the login form is gone");
    await page.locator("#live.on").waitFor();
  });

  let added;
  await step("adds an account through the form", async () => {
    await page.fill("#add-type", "claude-custom");
    await page.fill("#add-config", JSON.stringify({ customName: "e2e-added", CLAUDE_BASE_URL: MOCK, CLAUDE_API_KEY: CLAUDE_KEY }));
    await page.click("#add-button");
    const newRow = page.locator('.pool[data-type="claude-custom"] tbody tr', { hasText: "e2e-added" });
    await newRow.waitFor();
    added = await newRow.getAttribute("data-uuid");
    assert(added, "the new row carries its uuid");
    assert((await newRow.locator('[data-test="status"]').textContent()) === "healthy", "the new account is healthy");
    assert((await page.textContent('.pool[data-type="claude-custom"] h2')).includes("1/1 healthy"), "pool header counts it");
    assert((await page.textContent("#add-error")).trim() === "", "no error shown");
    assert((await page.textContent("#add-msg")).includes("e2e-added"), "a confirmation is shown");
    const pools = await apiGet("/api/providers");
    const a = (pools["claude-custom"] || []).find((x) => x.uuid === added);
    assert(a && a.customName === "e2e-added", "the API lists the new account");
    assert(a.CLAUDE_API_KEY === "******", "its key is masked");
    assert(!(await page.content()).includes(CLAUDE_KEY), "the key never reaches the page");
  });

  await step("edits the account in the dialog (masked key kept)", async () => {
    await row("claude-custom", added).locator('[data-test="edit"]').click();
    await page.locator("#edit-dialog").waitFor({ state: "visible" });
    const cfg = JSON.parse(await page.inputValue("#edit-config"));
    assert(cfg.CLAUDE_API_KEY === "******", "the dialog shows the key masked");
    cfg.customName = "e2e-renamed";
    await page.fill("#edit-config", JSON.stringify(cfg, null, 2));
    await page.click("#edit-save");
    await page.locator('.pool[data-type="claude-custom"] tbody tr', { hasText: "e2e-renamed" }).waitFor();
  });

  await step("Escape discards an edit", async () => {
    await row("claude-custom", added).locator('[data-test="edit"]').click();
    await page.locator("#edit-dialog").waitFor({ state: "visible" });
    const cfg = JSON.parse(await page.inputValue("#edit-config"));
    cfg.customName = "e2e-discarded";
    await page.fill("#edit-config", JSON.stringify(cfg, null, 2));
    const before = writes.length;
    await page.keyboard.press("Escape");
    await page.locator("#edit-dialog").waitFor({ state: "hidden" });
    await page.waitForTimeout(500);
    assert(writes.length === before, `Escape sent nothing (sent ${writes.slice(before).join(", ")})`);
    const pools = await apiGet("/api/providers");
    const a = pools["claude-custom"].find((x) => x.uuid === added);
    assert(a.customName === "e2e-renamed", `the discarded edit was not saved (name is ${a.customName})`);
    assert((await row("claude-custom", added).textContent()).includes("e2e-renamed"), "the row keeps its name");
  });

  await step("disables and re-enables the account", async () => {
    const status = row("claude-custom", added).locator('[data-test="status"]');
    await row("claude-custom", added).locator('[data-test="toggle"]').click();
    await page.waitForFunction((u) => document.querySelector(`tr[data-uuid="${u}"] [data-test="status"]`)?.textContent === "disabled", added);
    assert((await page.textContent('.pool[data-type="claude-custom"] h2')).includes("0/1 healthy"), "pool header drops it");
    assert((await row("claude-custom", added).locator('[data-test="toggle"]').textContent()) === "Enable", "button flips");
    await row("claude-custom", added).locator('[data-test="toggle"]').click();
    await page.waitForFunction((u) => document.querySelector(`tr[data-uuid="${u}"] [data-test="status"]`)?.textContent === "healthy", added);
    assert((await status.textContent()) === "healthy", "enabled again");
  });

  await step("disables the claude-custom plugin", async () => {
    await page.click('button[data-tab="plugins"]');
    const box = page.locator('tr[data-plugin="claude-custom"] [data-test="plugin-toggle"]');
    await box.waitFor();
    assert(await box.isChecked(), "the plugin starts enabled");
    assert((await page.locator('tr[data-plugin="file"] [data-test="plugin-toggle"]').count()) === 0, "the storage backend cannot be toggled");
    const before = await apiGet("/api/plugins");
    assert(before.plugins.find((p) => p.name === "claude-custom").enabled === true, "API: enabled before");
    // Mark this checkbox: the list is re-read from the server after the change, so the state
    // to check is that of a fresh one.
    await box.evaluate((e) => { e.__e2eOld = true; });
    await box.uncheck();
    await page.waitForFunction(() => {
      const b = document.querySelector('tr[data-plugin="claude-custom"] [data-test="plugin-toggle"]');
      return b && !b.__e2eOld && b.checked === false;
    });
    const after = await apiGet("/api/plugins");
    assert(after.plugins.find((p) => p.name === "claude-custom").enabled === false, "API: claude-custom disabled");
    assert(after.plugins.find((p) => p.name === "openai-custom").enabled === true, "API: openai-custom untouched");
    assert(await page.locator('tr[data-plugin="openai-custom"] [data-test="plugin-toggle"]').isChecked(), "openai-custom still checked");
    await page.screenshot({ path: path.join(path.dirname(SCREENSHOT), "plugins.png") });
  });

  await step("the config and storage tabs show masked settings", async () => {
    await page.click('button[data-tab="config"]');
    await page.waitForFunction(() => document.getElementById("config-text").value.includes("REQUIRED_API_KEY"));
    const cfg = JSON.parse(await page.inputValue("#config-text"));
    assert(cfg.REQUIRED_API_KEY === "******", "the client API key is masked");
    assert(!(await page.inputValue("#config-text")).includes(API_KEY), "the real key is not in the page");
    await page.click('button[data-tab="storage"]');
    await page.waitForFunction(() => document.getElementById("storage-status").textContent.includes('"type"'));
    assert(JSON.parse(await page.textContent("#storage-status")).storage.type === "file", "storage says file");
  });

  await step("the dashboard marks the pool of the disabled plugin as not serving", async () => {
    await page.click('button[data-tab="pools"]');
    const badge = page.locator('.pool[data-type="claude-custom"] [data-test="pool-state"]');
    await badge.waitFor();
    assert((await badge.textContent()).includes("claude-custom disabled"), "the badge names the plugin");
    assert(await page.locator('.pool[data-type="claude-custom"]').evaluate((e) => e.classList.contains("off")), "the card is marked off");
    assert((await page.locator('.pool[data-type="openai-custom"] [data-test="pool-state"]').count()) === 0, "openai-custom still serves");
  });

  await step("usage counts update live from /api/events", async () => {
    // A marker that a reload would wipe.
    await page.evaluate(() => { window.__e2eNoReload = true; });
    const before = await cellNum("openai-custom", "a1", "usage");
    const st = await chat("gpt-4o");
    assert(st === 200, `the client request through the gateway answered ${st}`);
    await page.waitForFunction(
      (n) => Number(document.querySelector('tr[data-uuid="a1"] [data-test="usage"]')?.textContent) > n,
      before,
    );
    assert(await page.evaluate(() => window.__e2eNoReload === true), "the page was not reloaded");
    console.log(`#   usage ${before} -> ${await cellNum("openai-custom", "a1", "usage")}`);
  });

  await step("error counts update live from /api/events", async () => {
    const before = await cellNum("openai-custom", "a1", "errors");
    const st = await chat("mock-500");
    assert(st >= 500, `an upstream failure is a 5xx for the client (got ${st})`);
    await page.waitForFunction(
      (n) => Number(document.querySelector('tr[data-uuid="a1"] [data-test="errors"]')?.textContent) > n,
      before,
    );
    assert(await page.evaluate(() => window.__e2eNoReload === true), "the page was not reloaded");
    console.log(`#   errors ${before} -> ${await cellNum("openai-custom", "a1", "errors")}`);
  });

  await step("saves a screenshot of the dashboard", async () => {
    // Let the usage request's own flush settle so the picture is stable.
    await page.waitForTimeout(300);
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    assert(fs.statSync(SCREENSHOT).size > 10_000, "the screenshot has content");
    console.log(`#   screenshot: ${SCREENSHOT}`);
  });

  assert(pageErrors.length === 0, `no script errors on the page: ${pageErrors.join("; ")}`);
  assert(dialogs.length === 0, `no alert was shown: ${dialogs.join("; ")}`);
  console.log(`#   browser steps took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  console.log(`ui e2e: ${passed} passed, 0 failed`);
} catch (e) {
  console.log(`not ok ${passed + 1} - ${e.message}`);
  if (e.stack) console.log(e.stack.split("\n").map((l) => `#   ${l}`).join("\n"));
  if (page && FAILURE_SCREENSHOT) {
    try {
      await page.screenshot({ path: FAILURE_SCREENSHOT, fullPage: true });
      console.log(`#   failure screenshot: ${FAILURE_SCREENSHOT}`);
    } catch {}
  }
  console.log(`ui e2e: ${passed} passed, 1 failed`);
  process.exitCode = 1;
} finally {
  clearTimeout(overall);
  if (context) await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}
