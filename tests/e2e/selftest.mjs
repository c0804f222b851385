// Browser end-to-end test: serves dist/ (built by `trunk build --release`) on
// 127.0.0.1, opens /?selftest in headless Chromium with software WebGPU,
// waits for the app's marker (document.body.dataset.selftest = pass|fail),
// prints every row, saves a screenshot and exits non-zero unless all passed.
// It runs the page twice: as shipped (SwiftShader offers `subgroups`, which
// web/gpu_bridge.js requests, so the reducing kernels run on both paths), and
// with web/gpu_bridge.js answered empty, as a browser without subgroups would
// be: then every subgroup row must say "not offered" and the rest still pass.
// The last line is always `selftest: N passed, M failed`.
//
// Environment: CHROMIUM (default /usr/bin/chromium), DIST (default dist),
// SELFTEST_TIMEOUT_MS (default 600000), SCREENSHOT (default
// tests/e2e/screenshots/selftest.png), SELFTEST_ORIGIN (test a server that is
// already running, e.g. http://127.0.0.1:8080 from scripts/serve.sh, instead
// of serving DIST).

import { mkdirSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { browser, listen, report, staticHandler } from './lib.mjs';

const root = path.resolve(process.env.DIST ?? 'dist');
const timeout = Number(process.env.SELFTEST_TIMEOUT_MS ?? 600_000);
const screenshot = process.env.SCREENSHOT ?? 'tests/e2e/screenshots/selftest.png';
const externalOrigin = process.env.SELFTEST_ORIGIN;

async function runPage(context, origin, withBridge) {
  const page = await context.newPage();
  if (!withBridge) {
    await page.route('**/gpu_bridge.js', (r) => r.fulfill({ body: '', contentType: 'text/javascript' }));
  }
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
  if (withBridge) await page.screenshot({ path: screenshot, fullPage: true });

  console.log(`\n-- ${withBridge ? 'as shipped' : 'without web/gpu_bridge.js (no subgroups)'}`);
  console.log(`status: ${state.status}`);
  for (const line of state.adapter) console.log(`  ${line}`);
  for (const { state: s, cells, details } of state.rows) {
    const [kernel, shape, err, tol, , time] = cells;
    const mark = s === 'pass' ? 'ok  ' : s === 'fail' ? 'FAIL' : s === 'skip' ? 'n/a ' : '... ';
    console.log(`${mark} ${kernel.padEnd(40)} ${shape.padEnd(14)} err ${err.padStart(9)} (tol ${tol}) ${time.padStart(7)}${details ? '  ' + details : ''}`);
  }
  console.log(`page: ${state.summary}`);
  console.log(`marker: ${state.marker} after ${seconds} s; screenshot: ${screenshot}`);

  // "not offered": the adapter lacks the feature a path needs (e.g. subgroups); never a pass.
  const passed = state.rows.filter((r) => r.state === 'pass').length;
  const skipped = state.rows.filter((r) => r.state === 'skip').length;
  let failed = state.rows.length - passed - skipped;
  // With the bridge the adapter's subgroups are used and nothing may be skipped; without it
  // every subgroup row (and only those) must be "not offered".
  const sgRows = state.rows.filter((r) => r.cells[0].endsWith('· subgroups')).length;
  const expectSkipped = withBridge ? 0 : sgRows;
  if (sgRows === 0 || skipped !== expectSkipped) {
    console.log(`expected ${expectSkipped} "not offered" rows (of ${sgRows} subgroup rows), got ${skipped}`);
    failed += 1;
  }
  await page.close();
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
}

async function main() {
  if (!externalOrigin && !(await stat(path.join(root, 'index.html')).catch(() => null))) {
    console.error(`${root}/index.html is missing: run \`trunk build --release\` first`);
    return { passed: 0, failed: 1 };
  }
  const [server, origin] = externalOrigin ? [null, externalOrigin] : await listen(staticHandler({ '/': root }));
  let chrome;
  try {
    chrome = await browser();
    const a = await runPage(chrome.context, origin, true);
    const b = await runPage(chrome.context, origin, false);
    return { passed: a.passed + b.passed, failed: a.failed + b.failed };
  } finally {
    await chrome?.close();
    server?.close();
  }
}

await report('selftest', main);
