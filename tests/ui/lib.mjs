// What every browser scenario shares: Debian's chromium driven by playwright-core (no
// browser download), named steps that print as they pass, screenshots, the page's own
// errors, and a line protocol with the Rust test that runs the script
// (`@@control <what>` on stdout, answered by one line on stdin), used to stop and start
// the master under the page.
//
// Usage: node tests/ui/<scenario>.mjs MASTER_URL SCREENSHOT_DIR
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.PLINTH_CHROMIUM ?? '/usr/bin/chromium';
// No background traffic: this machine's network is closed, and the tests talk only to
// the master they started.
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Seconds a step may wait for the UI to show something. */
export const PATIENCE_MS = Number(process.env.PLINTH_UI_PATIENCE_MS ?? 45000);

export async function scenario(name, body) {
  const [base, shots = fs.mkdtempSync(path.join(os.tmpdir(), `plinth-ui-${name}-`))] = process.argv.slice(2);
  if (!base) {
    console.error(`usage: node ${name}.mjs MASTER_URL [SCREENSHOT_DIR]`);
    process.exit(2);
  }
  fs.mkdirSync(shots, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-ui-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1280, height: 860 },
    deviceScaleFactor: 1,
    locale: 'en-GB',
    timezoneId: 'UTC',
  });
  context.setDefaultTimeout(PATIENCE_MS);
  const page = context.pages()[0] ?? (await context.newPage());
  const problems = [];
  page.on('pageerror', (error) => problems.push(`uncaught error in the page: ${error.message}`));
  page.on('console', (message) => {
    const text = message.text();
    if (/Content Security Policy|Refused to (load|execute|apply)/i.test(text)) problems.push(`CSP: ${text}`);
    if (message.type() === 'error' && process.env.PLINTH_UI_VERBOSE) console.log(`  [console] ${text}`);
  });
  // Requests still open when a step fails say what the page was waiting for.
  const open = new Map();
  page.on('request', (request) => open.set(request, Date.now()));
  page.on('requestfinished', (request) => open.delete(request));
  const failedRequests = [];
  page.on('requestfailed', (request) => {
    open.delete(request);
    failedRequests.push(`${request.method()} ${request.url()}: ${request.failure()?.errorText}`);
  });
  page.on('response', (response) => {
    if (response.status() >= 400) failedRequests.push(`${response.request().method()} ${response.url()}: HTTP ${response.status()}`);
  });
  const consoleLines = [];
  page.on('console', (message) => consoleLines.push(`[${message.type()}] ${message.text()}`));
  const t = new Steps(name, page, base, shots);
  t.diagnose = () => [
    ...problems.map((l) => `problem: ${l}`),
    ...failedRequests.slice(-10).map((l) => `failed request: ${l}`),
    ...consoleLines.slice(-15).map((l) => `console: ${l}`),
    ...[...open].map(([r, since]) => `still open: ${r.method()} ${r.url()} (${((Date.now() - since) / 1000).toFixed(1)} s)`),
  ];
  let failed = false;
  try {
    await body(t);
    if (problems.length) throw new Error(`the page reported problems:\n  ${problems.join('\n  ')}`);
  } catch (error) {
    failed = true;
    console.log(`FAILED in step "${t.current}": ${error?.stack ?? error}`);
    for (const line of t.diagnose()) console.log(`  ${line}`);
    try {
      await page.screenshot({ path: path.join(shots, `failure-${t.slug(t.current)}.png`), fullPage: true });
      console.log(`page at ${page.url()}:\n${(await page.locator('body').innerText()).slice(0, 4000)}`);
    } catch (inner) {
      console.log(`(no screenshot: ${inner.message})`);
    }
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
    closeControl();
  }
  if (failed) process.exit(1);
  console.log(`ui ${name}: all ${t.count} steps passed; screenshots in ${shots}`);
}

class Steps {
  constructor(name, page, base, shots) {
    this.name = name;
    this.page = page;
    this.base = base.replace(/\/+$/, '');
    this.shots = shots;
    this.current = 'start';
    this.count = 0;
  }

  /** Runs one named step and says it passed (with its time). */
  async step(title, fn) {
    this.current = title;
    const started = Date.now();
    await fn();
    this.count += 1;
    console.log(`step ok: ${title} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  }

  slug(text) {
    return String(text).toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60);
  }

  /** A full-page screenshot named `name.png` in the screenshot dir. */
  async shot(name) {
    await this.page.waitForTimeout(150); // let the last render settle
    // Notices fade by themselves; a picture of a view does without them.
    await this.page.evaluate(() => document.querySelectorAll('.toast').forEach((t) => t.remove()));
    await this.page.screenshot({ path: path.join(this.shots, `${name}.png`), fullPage: true });
  }

  /** Opens a hash route of the UI (as a link would; the same URL again reloads it). */
  async open(hash) {
    const url = `${this.base}/ui/${hash}`;
    if (this.page.url() === url) await this.page.reload();
    else await this.page.goto(url);
    await this.started();
  }

  /**
   * Waits for the page's script to have started (main.js marks <html>). Seen when the
   * browser shared the host's network namespace with other tests (their veths aborted
   * module loads as net::ERR_NETWORK_CHANGED; tests/e2e/ui.rs now gives it its own): the
   * page is then loaded once more, and the line below says so.
   */
  async started() {
    const mark = this.page.locator('html[data-started="true"]');
    try {
      await mark.waitFor({ state: 'attached', timeout: 15000 });
    } catch {
      console.log(`warning: the page's script did not start within 15 s at ${this.page.url()}; loading it again`);
      for (const line of this.diagnose()) console.log(`  ${line}`);
      await this.page.reload();
      await mark.waitFor({ state: 'attached' });
    }
  }

  /** The master's API from the test (not through the page). */
  async api(method, apiPath, body) {
    const headers = body === undefined ? {} : { 'content-type': 'application/json' };
    // `t.auth`: an Authorization header for masters that want credentials.
    if (this.auth) headers.authorization = this.auth;
    const response = await fetch(`${this.base}${apiPath}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: response.status, json };
  }

  /** Polls `check` (returns a value or a falsy one) until it holds. */
  async until(what, check, timeout = PATIENCE_MS) {
    const deadline = Date.now() + timeout;
    let last;
    for (;;) {
      try {
        last = await check();
        if (last) return last;
      } catch (error) {
        last = error.message;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last seen: ${JSON.stringify(last)})`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  /** Asks the Rust test to do something (stop the master, ...) and waits until it did. */
  async control(what) {
    console.log(`@@control ${what}`);
    const answer = await nextLine();
    if (answer !== `done ${what}`) throw new Error(`the test answered "${answer}" to "${what}"`);
  }
}

let lines;
let pending = [];
let queued = [];

function nextLine() {
  lines ??= readline.createInterface({ input: process.stdin }).on('line', (line) => {
    const waiter = pending.shift();
    if (waiter) waiter(line.trim());
    else queued.push(line.trim());
  });
  if (queued.length) return Promise.resolve(queued.shift());
  return new Promise((resolve) => pending.push(resolve));
}

function closeControl() {
  lines?.close();
}

export function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}
