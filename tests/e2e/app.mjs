// Browser end-to-end test of the studio (issue #7): serves dist/ (trunk build
// --release) and the golden fixtures on 127.0.0.1, drives headless Chromium
// with software WebGPU, and checks against the native CLI
// (target/release/iclora, built by `cargo test --release`):
//   - the bundled tiny model generates a film-storyboard-shaped set whose
//     canvas matches `iclora generate` on the same recipe (PSNR >= 40 dB);
//   - no main-thread long task over 200 ms while generating (Long Tasks API);
//   - the share link, opened in a fresh browser, asks for the hosts, and after
//     the OK gives the same image; the PNG's recipe restores the form; the link
//     and the PNG given to `iclora generate --recipe` give the same set natively;
//   - a reference-conditioned run matches the native run with --reference;
//   - a LoRA by URL matches native --lora; a 404 LoRA and a LoRA for another
//     model show their errors and the page generates again afterwards;
//   - a share link whose adapter URL hides its host behind a backslash never
//     contacts that host; a crashed engine worker (uncaught error, rejected
//     promise, unreadable message) ends the job with a message, is restarted,
//     and the next Generate works with the form and gallery kept;
//   - a model on another host: nothing is contacted before an explicit click
//     in the hosts dialog (Ctrl+Enter does not confirm), then the sizes, then
//     a second click downloads and the image matches native.
//   - the "Faster (step cache)" control matches native --step-cache, the
//     progress line counts computed/skipped steps, and a share link carries it;
//   - the "Speed" choice stacks the few-step LoRA on the task's (form only);
//   - "Sharp live preview" decodes previews with TAEF1 at the canvas size and leaves the result
//     unchanged;
//   - axe-core finds no accessibility violation in the main states (studio open, a set shown,
//     the hosts dialog, an error).
// Screenshots of the main states go to tests/e2e/screenshots/. The last line
// is `app: N passed, M failed`.

import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync, mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import path from 'node:path';
import { browser, listen, staticHandler } from './lib.mjs';

const dist = path.resolve(process.env.DIST ?? 'dist');
const cli = path.resolve(process.env.ICLORA ?? 'target/release/iclora');
const shots = 'tests/e2e/screenshots';
const tmp = mkdtempSync(path.join(tmpdir(), 'iclora-app-'));
const TIMEOUT = Number(process.env.APP_TIMEOUT_MS ?? 300_000);

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ': ' + detail : ''}`);
  ok ? passed++ : failed++;
  return ok;
}

// axe-core (npm, pinned in package.json) in the page: injected through the DevTools protocol
// (page.evaluate is not subject to the page's CSP), run on the whole document with its default
// rules (WCAG 2.x A/AA and best practices); every violation is listed with its first nodes.
const AXE = readFileSync(path.resolve('node_modules/axe-core/axe.min.js'), 'utf8');
async function accessible(page, state) {
  await page.evaluate(AXE);
  const violations = await page.evaluate(async () => (await window.axe.run(document)).violations.map((v) =>
    `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`));
  return check(`axe-core finds no accessibility violation: ${state}`, violations.length === 0, violations.join('; '));
}

/** PSNR in dB of two equal-length RGB(A) byte arrays (alpha ignored when rgba). */
function psnr(a, b, stride) {
  let se = 0;
  let n = 0;
  for (let i = 0; i < a.length; i += stride) {
    for (let c = 0; c < 3; c++) {
      const d = a[i + c] - b[i + c];
      se += d * d;
      n++;
    }
  }
  return se === 0 ? Infinity : 10 * Math.log10((255 * 255) / (se / n));
}

/** The result canvas as RGBA bytes. */
async function canvasPixels(page) {
  const b64 = await page.evaluate(() => {
    const c = document.getElementById('result-canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let s = '';
    for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode(...d.subarray(i, i + 8192));
    return btoa(s);
  });
  return Buffer.from(b64, 'base64');
}

/** A PNG file decoded by the page's browser (RGBA). */
async function pngPixels(page, file) {
  const b64 = await page.evaluate(async (data) => {
    const bytes = Uint8Array.from(atob(data), (ch) => ch.charCodeAt(0));
    const bmp = await createImageBitmap(new Blob([bytes], { type: 'image/png' }));
    const c = document.createElement('canvas');
    [c.width, c.height] = [bmp.width, bmp.height];
    const g = c.getContext('2d');
    g.drawImage(bmp, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let s = '';
    for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode(...d.subarray(i, i + 8192));
    return btoa(s);
  }, readFileSync(file).toString('base64'));
  return Buffer.from(b64, 'base64');
}

/** Clicks Generate and waits for the set (or an error); returns the state and the time window. */
async function generate(page) {
  const t0 = await page.evaluate(() => performance.now());
  await page.evaluate(() => { document.body.dataset.state = ''; });
  await page.click('#generate');
  await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state), null, { timeout: TIMEOUT, polling: 100 });
  const t1 = await page.evaluate(() => performance.now());
  const state = await page.evaluate(() => ({
    state: document.body.dataset.state,
    kind: document.body.dataset.errorKind ?? '',
    error: document.getElementById('error').textContent,
  }));
  return { ...state, t0, t1 };
}

/** The form's recipe fields as `iclora generate` arguments. */
async function cliArgs(page) {
  const f = await page.evaluate(() => Object.fromEntries(['prompt', 'width', 'height', 'steps', 'guidance', 'seed', 'rows', 'cols']
    .map((id) => [id, document.getElementById(id).value])));
  return [['--model', 'web/demo/tiny-flux', '--prompt', f.prompt, '--width', f.width, '--height', f.height,
    '--steps', f.steps, '--guidance', f.guidance, '--seed', f.seed], f];
}

function native(args, out) {
  execFileSync(cli, ['generate', ...args, '--out', out], { stdio: ['ignore', 'ignore', 'pipe'] });
  return out;
}

/** `native` for runs that read from this process's own test server: the event loop must keep serving. */
async function nativeAsync(args, out) {
  await promisify(execFile)(cli, ['generate', ...args, '--out', out]);
  return out;
}

/** `link` with its recipe's adapters replaced (the wire format of src/recipe/share.rs). */
function withAdapters(link, adapters) {
  const [page, frag] = link.split('#r=');
  const wire = JSON.parse(inflateRawSync(Buffer.from(frag, 'base64url')).toString());
  wire[2] = adapters;
  return `${page}#r=${deflateRawSync(Buffer.from(JSON.stringify(wire))).toString('base64url')}`;
}

/** The engine worker of `page` (a module worker named iclora-engine). */
async function engineWorker(page, previous = null) {
  for (let i = 0; i < 200; i++) {
    const w = page.workers().find((w) => w !== previous && w.url().includes('worker.js'));
    if (w) return w;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('no engine worker');
}

async function addAdapter(page, url) {
  await page.click('#adapter-add');
  await page.locator('#adapters .adapter-url').last().fill(url);
}

async function clearAdapters(page) {
  while (await page.locator('#adapters .adapter-remove').count()) await page.locator('#adapters .adapter-remove').first().click();
}

async function main() {
  for (const [what, p] of [['the app (trunk build --release)', path.join(dist, 'index.html')], ['the native CLI (cargo build --release)', cli]]) {
    if (!existsSync(p)) return check(`${what} is built`, false, `${p} is missing`);
  }
  mkdirSync(shots, { recursive: true });
  const [server, origin] = await listen(staticHandler({ '/': dist, '/fixtures/': 'tests/fixtures/golden' }));
  const first = await browser();
  const log = [];
  try {
    await first.context.addInitScript(() => {
      window.__long = [];
      new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push([e.startTime, e.duration]); })
        .observe({ type: 'longtask', buffered: true });
    });
    const page = first.context.pages()[0] ?? (await first.context.newPage());
    page.on('console', (m) => m.type() === 'error' && log.push(`console: ${m.text()}`));
    page.on('pageerror', (e) => log.push(`page error: ${e.message}`));
    await page.goto(`${origin}/`);
    await page.waitForFunction(() => document.body.dataset.engine === 'ready', null, { timeout: 120_000 });
    await page.screenshot({ path: `${shots}/studio.png`, fullPage: true });
    await accessible(page, 'the studio as it opens');
    // The worker's device got `subgroups` through web/gpu_bridge.js (SwiftShader offers them), and
    // the status line names the paths generation runs.
    const ready = await page.textContent('#status');
    check('the engine names its kernel paths, with subgroup reductions in the worker', /\(f32 tiles, subgroup reductions\)/.test(ready), ready);

    // 1. A film-storyboard set on the bundled tiny model, vs the native CLI.
    await page.selectOption('#model-preset', 'tiny');
    await page.selectOption('#task-preset', 'film-storyboard');
    await page.fill('#seed', '7');
    const run1 = await generate(page);
    if (!check('tiny model generates a 3-panel storyboard set', run1.state === 'done', run1.error)) throw new Error('no set');
    await page.screenshot({ path: `${shots}/result.png`, fullPage: true });
    await accessible(page, 'a set generated (canvas, gallery, share link)');
    const [args, form] = await cliArgs(page);
    check('the tiny preset scaled the storyboard canvas', form.width === '64' && form.height === '96' && form.rows === '3', `${form.width}×${form.height}, ${form.rows}×${form.cols}`);
    const pixels1 = await canvasPixels(page);
    const want1 = await pngPixels(page, native(args, path.join(tmp, 'native.png')));
    const db1 = psnr(pixels1, want1, 4);
    check('browser canvas vs `iclora generate` (PSNR >= 40 dB)', pixels1.length === want1.length && db1 >= 40, `${db1.toFixed(1)} dB`);
    const longs = await page.evaluate(([a, b]) => window.__long.filter(([t]) => t >= a && t <= b).map(([, d]) => d), [run1.t0, run1.t1]);
    const worst = Math.max(0, ...longs);
    // The observer must see a long task when there is one, or the check above proves nothing.
    // (A task of the page's own: code run by page.evaluate is not reported as a long task.)
    const seen = await page.evaluate(async () => {
      const t = performance.now();
      setTimeout(() => { const t0 = performance.now(); while (performance.now() - t0 < 250); }, 0);
      await new Promise((r) => setTimeout(r, 600));
      return window.__long.some(([s, d]) => s >= t && d >= 240);
    });
    check('no main-thread task over 200 ms while generating', seen && worst <= 200, `${longs.length} long tasks, longest ${worst.toFixed(0)} ms (a deliberate 250 ms task was ${seen ? '' : 'NOT '}detected)`);
    const previews = await page.evaluate(() => Number(document.body.dataset.previews ?? 0));
    check('live previews arrive during the steps', previews >= 2, `${previews} previews for ${form.steps} steps`);

    // 2. PNG recipe: download the canvas, change the form, drop the PNG back.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-canvas')]);
    const pngFile = path.join(tmp, 'set.png');
    await download.saveAs(pngFile);
    await page.fill('#seed', '12345');
    await page.evaluate(async (data) => {
      const bytes = Uint8Array.from(atob(data), (ch) => ch.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], 'set.png', { type: 'image/png' }));
      document.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, readFileSync(pngFile).toString('base64'));
    await page.waitForFunction(() => document.body.dataset.restored === '7', null, { timeout: 10_000 }).catch(() => {});
    const restored = await page.evaluate(() => [document.getElementById('seed').value, document.getElementById('prompt').value]);
    check('a dropped PNG restores its recipe', restored[0] === '7' && restored[1] === form.prompt, `seed ${restored[0]}`);

    // 3. Share link in a fresh browser profile: hosts confirmation, then the same image.
    const link = await page.inputValue('#share-link');
    const second = await browser();
    try {
      const p2 = second.context.pages()[0] ?? (await second.context.newPage());
      await p2.goto(link);
      await p2.waitForFunction(() => document.body.dataset.confirm === 'open', null, { timeout: 60_000 });
      const hosts = await p2.evaluate(() => [...document.querySelectorAll('#confirm-hosts li')].map((li) => li.textContent));
      await p2.screenshot({ path: `${shots}/share-confirm.png` });
      await accessible(p2, 'the hosts dialog of a share link');
      const nothingYet = await p2.evaluate(() => !document.body.dataset.state);
      check('a share link lists its hosts and waits', nothingYet && hosts.some((h) => h.startsWith('127.0.0.1')), hosts.join(', '));
      await p2.click('#confirm-ok');
      await p2.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state), null, { timeout: TIMEOUT });
      const pixels2 = await canvasPixels(p2);
      const db2 = psnr(pixels1, pixels2, 4);
      check('the share link reproduces the set', pixels2.length === pixels1.length && db2 >= 40, `${db2 === Infinity ? 'identical' : db2.toFixed(1) + ' dB'}`);
    } finally {
      await second.close();
    }
    // The same link on the command line: `iclora generate --recipe LINK` reads the model from this
    // server (the link is its own base) and derives the run as the worker does; then the PNG the
    // page wrote, with `--recipe set.png --base PAGE`.
    for (const [what, args, file] of [['SHARE-LINK', ['--recipe', link], 'native-link.png'], ['set.png', ['--recipe', pngFile, '--base', `${origin}/`], 'native-png.png']]) {
      let got = Buffer.alloc(0);
      let why = '';
      try {
        got = await pngPixels(page, await nativeAsync(args, path.join(tmp, file)));
      } catch (e) {
        why = `the CLI failed: ${String(e.stderr ?? e).trim().split('\n').pop()}`;
      }
      const db = got.length ? psnr(pixels1, got, 4) : 0;
      check(`\`iclora generate --recipe ${what}\` gives the browser's set (PSNR >= 40 dB)`, db >= 40, why || `${db.toFixed(1)} dB`);
    }

    // 3b. A share link whose adapter URL hides another host behind a backslash: the browser
    // would fetch `http://127.0.0.1:EVIL\@127.0.0.1:OURS/...` from EVIL. It must never be
    // contacted unless the dialog lists it.
    let evilHits = 0;
    const [evil, evilOrigin] = await listen((req, res) => { evilHits++; res.writeHead(404, { 'access-control-allow-origin': '*' }).end(); });
    const third = await browser();
    try {
      const p3 = third.context.pages()[0] ?? (await third.context.newPage());
      const hidden = `${evilOrigin}\\@${origin.slice('http://'.length)}/fixtures/pipe_lora_a_diffusers.safetensors`;
      await p3.goto(withAdapters(link, [[hidden, 1]]));
      await p3.waitForFunction(() => document.body.dataset.engine === 'ready', null, { timeout: 120_000 });
      const shown = await p3.evaluate(() => ({
        confirm: document.body.dataset.confirm ?? '',
        hosts: [...document.querySelectorAll('#confirm-hosts li')].map((li) => li.textContent),
        error: document.getElementById('error').textContent,
      }));
      const evilHost = evilOrigin.slice('http://'.length);
      const listed = shown.confirm === 'open' && shown.hosts.some((h) => h.startsWith(evilHost));
      if (shown.confirm === 'open') {
        await p3.click('#confirm-ok');
        await p3.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state), null, { timeout: TIMEOUT }).catch(() => {});
      }
      check('a share link with a backslash-hidden host never contacts it unlisted', evilHits === 0 || listed,
        `${evilHits} requests to the hidden host; dialog: ${shown.confirm || 'none'} [${shown.hosts.join(', ')}]; ${shown.error.slice(0, 120)}`);
      check('...and the link is refused with a reason', shown.confirm !== 'open' && /backslash/.test(shown.error), shown.error.slice(0, 160));
    } finally {
      await third.close();
      evil.close();
    }

    // 4. Reference-conditioned: panel 1 kept from an exported panel, vs native --reference.
    const [panelDl] = await Promise.all([page.waitForEvent('download'), page.click('#download-panels')]);
    const refFile = path.join(tmp, 'reference.png');
    await panelDl.saveAs(refFile);
    await page.fill('#seed', '11');
    await page.evaluate(() => { document.getElementById('references-box').open = true; });
    await page.setInputFiles('.ref-zone[data-panel="0"] .ref-file', refFile);
    await page.waitForFunction(() => document.body.dataset.references === '1', null, { timeout: 10_000 });
    const run3 = await generate(page);
    check('a reference-conditioned set generates', run3.state === 'done', run3.error);
    await page.screenshot({ path: `${shots}/reference.png`, fullPage: true });
    const [args3] = await cliArgs(page);
    const want3 = await pngPixels(page, native([...args3, '--layout', '3x1', '--reference', `1=${refFile}`], path.join(tmp, 'native-ref.png')));
    const free3 = await pngPixels(page, native(args3, path.join(tmp, 'native-free.png')));
    const pixels3 = await canvasPixels(page);
    const db3 = psnr(pixels3, want3, 4);
    check('reference run vs `iclora generate --reference` (PSNR >= 40 dB)', db3 >= 40, `${db3.toFixed(1)} dB; vs the same seed without reference ${psnr(pixels3, free3, 4).toFixed(1)} dB`);
    await page.evaluate(() => [...document.querySelectorAll('.ref-zone button')].forEach((b) => b.click()));

    // 5. LoRAs by URL: one that fits (vs native --lora), a 404, one for another model.
    await addAdapter(page, `${origin}/fixtures/pipe_lora_a_diffusers.safetensors`);
    const run4 = await generate(page);
    const [args4] = await cliArgs(page);
    const want4 = await pngPixels(page, native([...args4, '--lora', 'tests/fixtures/golden/pipe_lora_a_diffusers.safetensors:1'], path.join(tmp, 'native-lora.png')));
    const pixels4 = run4.state === 'done' ? await canvasPixels(page) : Buffer.alloc(0);
    const db4 = run4.state === 'done' ? psnr(pixels4, want4, 4) : 0;
    const effect = run4.state === 'done' ? psnr(pixels4, free3, 4) : Infinity;
    check('LoRA by URL vs `iclora generate --lora` (PSNR >= 40 dB)', db4 >= 40 && effect < 40, run4.state === 'done' ? `${db4.toFixed(1)} dB; vs no LoRA ${effect.toFixed(1)} dB` : run4.error);
    const report = await page.evaluate(() => [...document.querySelectorAll('#adapter-report li')].map((li) => li.textContent));
    check('the adapter report is shown', report.length === 1 && /Diffusers format, rank \d+, [1-9]\d* transformer layers/.test(report[0]), report[0] ?? '(none)');
    await clearAdapters(page);
    await page.setInputFiles('#adapter-file', 'tests/fixtures/golden/pipe_lora_a_diffusers.safetensors');
    await page.waitForFunction(() => document.querySelectorAll('#adapters .adapter').length === 1, null, { timeout: 10_000 });
    const run4b = await generate(page);
    const db4b = run4b.state === 'done' ? psnr(await canvasPixels(page), want4, 4) : 0;
    check('a LoRA picked as a file works like the same LoRA by URL', db4b >= 40, run4b.state === 'done' ? `${db4b.toFixed(1)} dB vs native --lora` : run4b.error);
    await clearAdapters(page);
    await addAdapter(page, `${origin}/fixtures/missing.safetensors`);
    const run5 = await generate(page);
    await page.screenshot({ path: `${shots}/error.png`, fullPage: true });
    await accessible(page, 'an error shown');
    check('a 404 LoRA URL says so', run5.state === 'error' && run5.kind === 'not-found' && run5.error.includes('404'), run5.error.slice(0, 160));
    await clearAdapters(page);
    await addAdapter(page, `${origin}/fixtures/lora_a_diffusers.safetensors`);
    const run6 = await generate(page);
    check('a LoRA for another model is refused by name', run6.state === 'error' && run6.kind === 'lora', run6.error.slice(0, 160));
    await clearAdapters(page);
    const run7 = await generate(page);
    check('the page generates again after the errors', run7.state === 'done', run7.state === 'done' ? '' : run7.error);

    // 5b. Step cache: a threshold above every distance on 6 steps computes the first and the last
    // only; the same recipe natively with --step-cache; the progress line counts them; a share
    // link restores the control.
    await page.fill('#steps', '6');
    await page.check('#step-cache');
    await page.fill('#step-cache-threshold', '10');
    await page.fill('#step-cache-max-reuse', '');
    await page.evaluate(() => {
      window.__progress = [];
      new MutationObserver(() => window.__progress.push(document.getElementById('progress-text').textContent))
        .observe(document.getElementById('progress-text'), { childList: true, characterData: true, subtree: true });
    });
    const consoleLines = [];
    const onConsole = (m) => consoleLines.push(m.text());
    page.on('console', onConsole);
    const run9 = await generate(page);
    page.off('console', onConsole);
    const [args9] = await cliArgs(page);
    const want9 = await pngPixels(page, native([...args9, '--step-cache', '10'], path.join(tmp, 'native-cache.png')));
    const plain9 = await pngPixels(page, native(args9, path.join(tmp, 'native-nocache.png')));
    const pixels9 = run9.state === 'done' ? await canvasPixels(page) : Buffer.alloc(0);
    const db9 = run9.state === 'done' ? psnr(pixels9, want9, 4) : 0;
    check('step cache on vs `iclora generate --step-cache` (PSNR >= 40 dB)', db9 >= 40, run9.state === 'done' ? `${db9.toFixed(1)} dB; vs no cache ${psnr(pixels9, plain9, 4).toFixed(1)} dB` : run9.error);
    const progress9 = await page.evaluate(() => window.__progress);
    const last9 = progress9.filter((t) => t.startsWith('Step 6/6')).pop() ?? '';
    check('the progress line counts computed and skipped steps', /step cache: 2 computed, 4 skipped/.test(last9), last9 || progress9.slice(-3).join(' | '));
    check('the worker logs the step cache summary', consoleLines.includes('step cache: computed 2 of 6 steps'), consoleLines.filter((l) => l.startsWith('step cache')).join(' | ') || '(none)');
    const link9 = await page.inputValue('#share-link');
    const p3 = await first.context.newPage();
    try {
      await p3.goto(link9);
      await p3.waitForFunction(() => document.body.dataset.confirm === 'open', null, { timeout: 60_000 });
      const restored9 = await p3.evaluate(() => [document.getElementById('step-cache').checked, document.getElementById('step-cache-threshold').value, document.getElementById('steps').value]);
      check('a share link carries the step cache', restored9[0] === true && Number(restored9[1]) === 10 && restored9[2] === '6', JSON.stringify(restored9));
    } finally {
      await p3.close();
    }
    await page.uncheck('#step-cache');

    // 5b'. Sharp preview: the TAEF1 decoder (the width-16 golden fixture, a folder with its
    // config.json) is planned, downloaded and decodes every preview at the canvas's size; the
    // result is the same as without it (previews only).
    await page.fill('#steps', '3');
    const before10 = await generate(page);
    const plain10 = before10.state === 'done' ? await canvasPixels(page) : Buffer.alloc(0);
    await page.check('#preview-taef1');
    await page.fill('#preview-decoder-url', `${origin}/fixtures/taef1_tiny`);
    const lines10 = [];
    const onLine10 = (m) => lines10.push(m.text());
    page.on('console', onLine10);
    await page.evaluate(() => { document.body.dataset.previews = '0'; });
    const run10 = await generate(page);
    page.off('console', onLine10);
    const [, form10] = await cliArgs(page);
    const sharp10 = await page.evaluate(() => [Number(document.body.dataset.previews ?? 0), document.getElementById('preview').width, document.getElementById('preview').height]);
    check('sharp previews: TAEF1 decodes each step at the canvas size', run10.state === 'done' && sharp10[0] === 2 && sharp10[1] === Number(form10.width) && sharp10[2] === Number(form10.height),
      run10.state === 'done' ? `${JSON.stringify(sharp10)} for ${form10.width}×${form10.height}` : run10.error);
    check('the worker logs the preview decoder and its time per step', lines10.some((l) => l.startsWith('load: TAEF1 preview decoder')) && lines10.some((l) => /^preview: step 2 decoded by TAEF1 in /.test(l)),
      lines10.filter((l) => /TAEF1/.test(l)).join(' | ') || '(none)');
    const same10 = run10.state === 'done' && before10.state === 'done' && Buffer.compare(await canvasPixels(page), plain10) === 0;
    check('sharp previews leave the result unchanged', same10, run10.state === 'done' ? '' : run10.error);
    await page.uncheck('#preview-taef1');

    // 5c. Speed: a few-step preset adds its LoRA after the task's and sets steps and guidance (no
    // generation: the adapter is on huggingface.co); back to full steps removes it.
    await page.selectOption('#fast-preset', 'hyper-flux-8');
    const fast = await page.evaluate(() => [[...document.querySelectorAll('#adapters .adapter')].map((r) => [r.querySelector('.adapter-url').value, r.querySelector('.adapter-scale').value]), document.getElementById('steps').value, document.getElementById('guidance').value]);
    check('the Speed choice adds the few-step LoRA with its settings', fast[0].length === 1 && /Hyper-FLUX\.1-dev-8steps/.test(fast[0][0][0]) && fast[0][0][1] === '0.125' && fast[1] === '8' && fast[2] === '3.5', JSON.stringify(fast));
    await page.selectOption('#fast-preset', 'full');
    const none = await page.evaluate(() => document.querySelectorAll('#adapters .adapter').length);
    check('full steps removes it again', none === 0, `${none} adapter rows`);

    // 6. Cancel: a long run stops after the current step and the page stays usable.
    await page.fill('#steps', '60');
    await page.evaluate(() => { document.body.dataset.state = ''; });
    await page.click('#generate');
    await page.waitForFunction(() => /^Step \d+\/60/.test(document.getElementById('progress-text').textContent), null, { timeout: TIMEOUT });
    await page.screenshot({ path: `${shots}/progress.png`, fullPage: true });
    await page.click('#cancel');
    await page.waitForFunction(() => ['cancelled', 'done', 'error'].includes(document.body.dataset.state), null, { timeout: TIMEOUT });
    const after = await page.evaluate(() => [document.body.dataset.state, document.getElementById('progress-text').textContent, document.getElementById('generate').disabled]);
    check('Cancel stops a run and re-enables Generate', after[0] === 'cancelled' && !after[2], `${after[0]}: ${after[1]}`);

    // 6b. The engine worker dies (a wasm panic or a failed allocation ends as an uncaught error
    // or a rejected promise; a corrupt message is just as fatal): the job ends with a message,
    // a new worker starts, and the next Generate works with the form and the gallery kept.
    const kills = [
      ['an uncaught error', () => setTimeout(() => { throw new Error('test: engine crash'); }, 0)],
      ['a rejected promise', () => { Promise.reject(new Error('test: engine crash')); }],
      ['an unreadable message', () => self.postMessage({ json: '{"type":', bufs: [] })],
    ];
    const gallery = await page.evaluate(() => document.querySelectorAll('#gallery > *').length);
    for (const [how, kill] of kills) {
      await page.fill('#steps', '30');
      const worker = await engineWorker(page);
      await page.evaluate(() => { document.body.dataset.state = ''; });
      await page.click('#generate');
      await page.waitForFunction(() => /^Step \d+\/30/.test(document.getElementById('progress-text').textContent), null, { timeout: TIMEOUT });
      await worker.evaluate(kill).catch(() => {});
      await page.waitForFunction(() => ['error', 'done'].includes(document.body.dataset.state), null, { timeout: 60_000 });
      const crash = await page.evaluate(() => [document.body.dataset.state, document.body.dataset.errorKind, document.getElementById('error').textContent]);
      await page.waitForFunction(() => document.body.dataset.engine === 'ready', null, { timeout: 120_000 });
      const kept = await page.evaluate(() => [document.getElementById('steps').value, document.querySelectorAll('#gallery > *').length]);
      check(`a worker killed by ${how} is reported and replaced; the form and gallery are kept`,
        crash[0] === 'error' && crash[1] === 'crashed' && kept[0] === '30' && kept[1] === gallery && (await engineWorker(page)) !== worker,
        `${crash[1]}: ${crash[2].slice(0, 100)}; steps ${kept[0]}, gallery ${gallery} → ${kept[1]}`);
    }
    await page.fill('#steps', '2');
    const runAfter = await generate(page);
    check('the next Generate after the restarts works', runAfter.state === 'done', runAfter.state === 'done' ? '' : runAfter.error);
    await page.screenshot({ path: `${shots}/crashed.png`, fullPage: true });

    // 7. A model on another host (CORS) that, like many static hosts, answers missing paths with
    // its index.html (the sharded transformer's single-file probe must not take that for weights);
    // the first Generate only shows what will download.
    const spaFallback = (req, res) => {
      const file = path.join(dist, decodeURIComponent(new URL(req.url, 'http://x').pathname));
      if (existsSync(file)) return false;
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'access-control-allow-origin': '*' }).end('<!doctype html><title>app</title>');
      return true;
    };
    let otherHits = 0;
    const counted = staticHandler({ '/': dist }, spaFallback);
    const [other, otherOrigin] = await listen((req, res) => { otherHits++; return counted(req, res); });
    try {
      await page.fill('#steps', '4');
      await page.selectOption('#model-preset', 'custom');
      await page.fill('#model-root', `${otherOrigin}/tiny-flux`);
      await page.dispatchEvent('#model-preset', 'change');
      await page.evaluate(() => { document.body.dataset.state = ''; document.body.dataset.confirm = ''; });
      await page.click('#generate');
      await page.waitForFunction(() => document.body.dataset.confirm === 'open' || document.body.dataset.state === 'error', null, { timeout: 60_000 });
      const hostsAsk = await page.evaluate(() => [document.body.dataset.ask, [...document.querySelectorAll('#confirm-hosts li')].map((li) => li.textContent)]);
      // Ctrl+Enter while the dialog is open is not a confirmation.
      await page.keyboard.press('Control+Enter');
      await new Promise((r) => setTimeout(r, 500));
      const stillOpen = await page.evaluate(() => document.getElementById('confirm').open && document.body.dataset.confirm === 'open');
      check('another host: nothing is contacted before the hosts dialog is clicked (not by Ctrl+Enter)',
        hostsAsk[0] === 'hosts' && hostsAsk[1].some((h) => h.startsWith(otherOrigin.slice('http://'.length))) && stillOpen && otherHits === 0,
        `${otherHits} requests; ask ${hostsAsk[0]} [${hostsAsk[1].join(', ')}]; open after Ctrl+Enter: ${stillOpen}`);
      await page.click('#confirm-ok');
      await page.waitForFunction(() => (document.body.dataset.confirm === 'open' && document.body.dataset.ask === 'downloads') || document.body.dataset.state === 'error', null, { timeout: 60_000 });
      const asked = await page.evaluate(() => [document.body.dataset.state, document.getElementById('confirm-intro').textContent, document.getElementById('plan-table').rows.length, document.getElementById('error').textContent]);
      await page.screenshot({ path: `${shots}/download-plan.png`, fullPage: true });
      check('then the sizes are asked and the download waits for a second click', asked[0] === '' && /download \d/.test(asked[1]) && asked[2] >= 4, `${asked[2]} files; ${asked[1].slice(0, 90)}`);
      await page.evaluate(() => { document.body.dataset.state = ''; });
      await page.click('#confirm-ok');
      await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state), null, { timeout: TIMEOUT, polling: 100 });
      const run8 = await page.evaluate(() => ({ state: document.body.dataset.state, error: document.getElementById('error').textContent }));
      const want8 = await pngPixels(page, native((await cliArgs(page))[0], path.join(tmp, 'native-other.png')));
      const db8 = run8.state === 'done' ? psnr(await canvasPixels(page), want8, 4) : 0;
      check('the second Generate downloads from the other host (CORS) and matches native', db8 >= 40, run8.state === 'done' ? `${db8.toFixed(1)} dB` : run8.error);
    } finally {
      other.close();
    }
  } finally {
    if (failed) for (const l of [...new Set(log)].slice(0, 30)) console.log(l);
    await first.close();
    server.close();
  }
}

try {
  await main();
} catch (err) {
  check('app test driver', false, err?.stack ?? String(err));
}
console.log(`app: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
