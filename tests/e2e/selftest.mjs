// Browser end-to-end test: serves dist/ (built by `trunk build --release`) on
// 127.0.0.1, opens /?selftest in headless Chromium with software WebGPU,
// waits for the app's marker (document.body.dataset.selftest = pass|fail),
// prints every row, saves a screenshot and exits non-zero unless all passed.
// The last line is always `selftest: N passed, M failed`.
//
// Environment: CHROMIUM (default /usr/bin/chromium), DIST (default dist),
// SELFTEST_TIMEOUT_MS (default 600000), SCREENSHOT (default
// tests/e2e/screenshots/selftest.png), SELFTEST_ORIGIN (test a server that is
// already running, e.g. http://127.0.0.1:8080 from scripts/serve.sh, instead
// of serving DIST).

import { createServer } from 'node:http';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const root = path.resolve(process.env.DIST ?? 'dist');
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const timeout = Number(process.env.SELFTEST_TIMEOUT_MS ?? 600_000);
const screenshot = process.env.SCREENSHOT ?? 'tests/e2e/screenshots/selftest.png';
const externalOrigin = process.env.SELFTEST_ORIGIN;

// The flags this machine needs (see MACHINE.md): software WebGPU is only
// exposed with --enable-unsafe-webgpu; the rest keep Chromium off the network.
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--enable-unsafe-webgpu',
];

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

/** A static file server for `root` on 127.0.0.1, on a free port. */
async function serve() {
  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://127.0.0.1');
      let file = path.normalize(path.join(root, decodeURIComponent(url.pathname)));
      if (file !== root && !file.startsWith(root + path.sep)) {
        res.writeHead(403).end('forbidden');
        return;
      }
      if ((await stat(file).catch(() => null))?.isDirectory()) file = path.join(file, 'index.html');
      const body = await readFile(file);
      res.writeHead(200, {
        'content-type': MIME[path.extname(file)] ?? 'application/octet-stream',
        'cache-control': 'no-store',
      });
      res.end(body);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    }
  });
  await new Promise((ok, fail) => server.once('error', fail).listen(0, '127.0.0.1', ok));
  return server;
}

async function main() {
  if (!externalOrigin && !(await stat(path.join(root, 'index.html')).catch(() => null))) {
    console.error(`${root}/index.html is missing: run \`trunk build --release\` first`);
    return { passed: 0, failed: 1 };
  }
  const server = externalOrigin ? null : await serve();
  const origin = externalOrigin ?? `http://127.0.0.1:${server.address().port}`;
  const userDataDir = mkdtempSync(path.join(tmpdir(), 'iclora-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      args: FLAGS,
      viewport: { width: 1280, height: 900 },
    });
    const page = context.pages()[0] ?? (await context.newPage());
    const log = [];
    page.on('console', (m) => log.push(`console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => log.push(`page error: ${e.message}`));
    page.on('requestfailed', (r) => log.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`));

    const t0 = Date.now();
    await page.goto(`${origin}/?selftest`);
    let timedOut = false;
    try {
      await page.waitForFunction(() => ['pass', 'fail'].includes(document.body.dataset.selftest), null, {
        timeout,
        polling: 500,
      });
    } catch {
      timedOut = true;
    }
    const seconds = ((Date.now() - t0) / 1000).toFixed(1);

    const state = await page.evaluate(() => ({
      marker: document.body.dataset.selftest ?? '(none)',
      status: document.getElementById('status')?.textContent ?? '',
      adapter: [...document.querySelectorAll('#adapter tr')].map((tr) => tr.innerText.replace(/\s+/g, ' ').trim()),
      summary: document.getElementById('selftest-summary')?.textContent ?? '',
      // Case rows, each followed by a "detail" row when it failed.
      rows: [...document.querySelectorAll('#selftest-rows tr:not(.detail)')].map((tr) => ({
        state: tr.className,
        cells: [...tr.cells].map((td) => td.textContent),
        details: tr.nextElementSibling?.classList.contains('detail') ? tr.nextElementSibling.textContent : '',
      })),
    }));
    mkdirSync(path.dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });

    console.log(`status: ${state.status}`);
    for (const line of state.adapter) console.log(`  ${line}`);
    for (const { state: s, cells, details } of state.rows) {
      const [kernel, shape, err, tol, , time] = cells;
      const mark = s === 'pass' ? 'ok  ' : s === 'fail' ? 'FAIL' : '... ';
      console.log(`${mark} ${kernel.padEnd(22)} ${shape.padEnd(14)} err ${err.padStart(9)} (tol ${tol}) ${time.padStart(7)}${details ? '  ' + details : ''}`);
    }
    console.log(`page: ${state.summary}`);
    console.log(`marker: ${state.marker} after ${seconds} s; screenshot: ${screenshot}`);

    const passed = state.rows.filter((r) => r.state === 'pass').length;
    let failed = state.rows.length - passed;
    const ok = !timedOut && state.marker === 'pass' && failed === 0 && passed > 0;
    if (timedOut) console.log(`timed out after ${timeout} ms waiting for the selftest marker`);
    if (!ok) {
      // Count a run that could not start (or found no cases) as one failure.
      failed = Math.max(failed, 1);
      // The browser's console, each message once (GPU errors repeat for every later use).
      const unique = [...new Set(log)];
      for (const line of unique.slice(0, 40)) console.log(line);
      if (unique.length > 40) console.log(`... and ${unique.length - 40} more console messages`);
    }
    return { passed, failed };
  } finally {
    await context?.close().catch(() => {});
    server?.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

let result = { passed: 0, failed: 1 };
try {
  result = await main();
} catch (err) {
  console.error(`selftest driver error: ${err?.stack ?? err}`);
}
console.log(`selftest: ${result.passed} passed, ${result.failed} failed`);
process.exit(result.failed === 0 && result.passed > 0 ? 0 : 1);
