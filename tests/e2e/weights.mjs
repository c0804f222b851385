// Browser end-to-end test of the weights loading path (src/weights/browser/):
// the OPFS download cache, sync OPFS reads and sync XHR range reads, run in a
// module Web Worker in headless Chromium, as the engine's worker runs them.
//
// A Node server on 127.0.0.1 serves dist/ (the app's wasm-bindgen JS and wasm,
// built by `trunk build`), a blank test page and the worker script (test-only,
// not in dist), and generated files with Range + ETag support and fault
// injection (`?fault=truncate|reset|stall|slow|norange|ignorerange`, on the
// first answer longer than 64 KiB of each URL; `norange` says
// `Accept-Ranges: none`, `ignorerange` says nothing), `?validator=lm|none`
// (Last-Modified instead of the ETag, or neither), and `?change_after=1` (the
// file gets a new version, same size, once one GET of that URL was answered);
// it counts the body bytes it sent per URL (`sent`). A second server on another port is another
// origin: `/cors/...` sends CORS headers, `/nocors/...` sends none.
// The worker calls the `weights_probe_*` hooks (src/weights/browser/probe.rs);
// checksums are FNV-1a 64 of the bytes read back, compared with the served bytes.
// The last line is always `weights: N passed, M failed`.
//
// Environment: CHROMIUM (default /usr/bin/chromium), DIST (default dist),
// WEIGHTS_VERBOSE=1 (print the browser's console messages even when all pass).

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { browser, listen, MIME, report, staticHandler } from './lib.mjs';

const root = path.resolve(process.env.DIST ?? 'dist');
const MIB = 1 << 20;

/** FNV-1a 64 as 16 hex digits (the probes' checksum), on two 32-bit halves. */
function fnv(bytes) {
  let hi = 0xcbf29ce4, lo = 0x84222325;
  for (let i = 0; i < bytes.length; i++) {
    lo = (lo ^ bytes[i]) >>> 0;
    // h * (2^40 + 0x1b3) mod 2^64
    const l = lo * 0x1b3;
    const carry = Math.floor(l / 0x100000000);
    hi = (Math.imul(hi, 0x1b3) + carry + ((lo << 8) >>> 0)) >>> 0;
    lo = l >>> 0;
  }
  return hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
}

/** Deterministic pseudo-random bytes (xorshift32). */
function makeBytes(n, seed) {
  const out = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

// The served files. `changing*` get new bytes (same size, new ETag) on `bump`.
const version = new Map();
const FILES = {
  'plain.bin': () => makeBytes(3 * MIB + 12345, 1),
  'small.json': () => Buffer.from(JSON.stringify({ model: 'test', dims: [1, 2, 3] })),
  'changing.bin': () => makeBytes(2 * MIB + 7, 100 + (version.get('changing.bin') ?? 0)),
  'changing2.bin': () => makeBytes(3 * MIB + 1, 200 + (version.get('changing2.bin') ?? 0)),
  'changing3.bin': () => makeBytes(3 * MIB + 3, 300 + (version.get('changing3.bin') ?? 0)),
  'changing4.bin': () => makeBytes(2 * MIB + 5, 400 + (version.get('changing4.bin') ?? 0)),
  'changing5.bin': () => makeBytes(2 * MIB + 9, 500 + (version.get('changing5.bin') ?? 0)),
};
const cache = new Map();
function file(name) {
  const key = `${name}@${version.get(name) ?? 0}`;
  if (!cache.has(key) && FILES[name]) cache.set(key, FILES[name]());
  return cache.get(key);
}
const bump = (name) => version.set(name, (version.get(name) ?? 0) + 1);
const etagOf = (name) => `"${fnv(file(name)).slice(0, 12)}-${version.get(name) ?? 0}"`;
const lastModifiedOf = (name) => new Date(Date.UTC(2026, 0, 1 + (version.get(name) ?? 0))).toUTCString();
/** Body bytes sent per URL (path + query). */
const sent = new Map();
const count = (key, n) => sent.set(key, (sent.get(key) ?? 0) + n);
const changed = new Set();

const WORKER = `
const q = new URL(self.location.href).searchParams;
let mod;
const ready = (async () => {
  mod = await import(q.get('js'));
  // The app's #[wasm_bindgen(start)] runs page boot code, which may fail in a worker.
  try { await mod.default({ module_or_path: q.get('wasm') }); } catch (e) { console.warn('init: ' + e); }
})();
self.onmessage = async ({ data: { id, fn, args } }) => {
  try {
    await ready;
    self.postMessage({ id, ok: true, value: await mod[fn](...args) });
  } catch (e) {
    self.postMessage({ id, ok: false, error: typeof e === 'string' ? e : String(e && e.stack || e) });
  }
};
`;

const faulted = new Map();

/** Serves /files/<name> (Range, ETag, faults); `cors` adds CORS headers. */
function serveFile(req, res, name, url, cors) {
  const extra = cors ? {
    'access-control-allow-origin': '*',
    'access-control-expose-headers': 'Content-Range, ETag, Content-Length, Accept-Ranges',
  } : {};
  if (req.method === 'OPTIONS') {
    res.writeHead(204, { ...extra, 'access-control-allow-headers': 'Range', 'access-control-allow-methods': 'GET, HEAD' }).end();
    return;
  }
  const body = file(name);
  if (!body) {
    res.writeHead(404, { 'content-type': 'text/plain', ...extra }).end('not found');
    return;
  }
  const fault = url.searchParams.get('fault');
  const key = url.pathname + url.search + (cors ? '#x' : '');
  const validators = { lm: { 'last-modified': lastModifiedOf(name) }, none: {} }[url.searchParams.get('validator')] ?? { etag: etagOf(name) };
  const headers = { 'content-type': 'application/octet-stream', 'cache-control': 'no-store', ...validators, ...extra };
  if (req.method === 'GET' && url.searchParams.get('change_after') === '1' && !changed.has(key)) {
    // Once this answer has been sent (whole or cut), the file is a new version.
    changed.add(key);
    let done = false;
    const next = () => { if (!done) { done = true; bump(name); } };
    res.on('finish', next);
    res.on('close', next);
  }
  let [start, end, status] = [0, body.length - 1, 200];
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  const ignoresRanges = fault === 'norange' || fault === 'ignorerange';
  if (m && !ignoresRanges) {
    start = Number(m[1]);
    end = m[2] ? Math.min(Number(m[2]), body.length - 1) : body.length - 1;
    if (start >= body.length) {
      res.writeHead(416, { ...headers, 'content-range': `bytes */${body.length}` }).end();
      return;
    }
    status = 206;
    headers['content-range'] = `bytes ${start}-${end}/${body.length}`;
  }
  if (fault !== 'ignorerange') headers['accept-ranges'] = fault === 'norange' ? 'none' : 'bytes';
  const part = body.subarray(start, end + 1);
  if (req.method === 'HEAD') {
    res.writeHead(status, { ...headers, 'content-length': part.length }).end();
    return;
  }
  const fire = fault && !ignoresRanges && part.length > 64 * 1024 && !faulted.has(key);
  if (!fire) {
    count(key, part.length);
    res.writeHead(status, { ...headers, 'content-length': part.length }).end(part);
    return;
  }
  count(key, part.length >> 1);
  if (fault !== 'slow') faulted.set(key, true);
  const half = part.subarray(0, part.length >> 1);
  if (fault === 'truncate') {
    // Chunked, ending cleanly after half: a body shorter than its Content-Range.
    res.writeHead(status, headers);
    res.end(half);
  } else if (fault === 'reset') {
    res.writeHead(status, { ...headers, 'content-length': part.length });
    // A TCP reset (Node ≥ 18.3), else a plain close.
    res.write(half, () => setTimeout(() => (req.socket.resetAndDestroy ?? req.socket.destroy).call(req.socket), 50));
  } else if (fault === 'stall') {
    res.writeHead(status, { ...headers, 'content-length': part.length });
    res.write(half);
    const t = setTimeout(() => req.socket.destroy(), 60_000);
    req.socket.on('close', () => clearTimeout(t));
  } else if (fault === 'slow') {
    // 64 KiB every 5 ms (the cancel test stops it midway).
    res.writeHead(status, { ...headers, 'content-length': part.length });
    let at = 0;
    const step = () => {
      if (res.destroyed) return;
      const next = Math.min(at + 64 * 1024, part.length);
      res.write(part.subarray(at, next));
      at = next;
      if (at < part.length) setTimeout(step, 5); else res.end();
    };
    step();
  }
}

/** The test page, its worker and the generated files (true when it answered);
 * `staticHandler` serves the rest from dist/. */
function serveTest(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname === '/__weights/probe.html') {
    res.writeHead(200, { 'content-type': MIME['.html'] }).end('<!doctype html><title>weights probe</title>');
  } else if (url.pathname === '/__weights/worker.mjs') {
    res.writeHead(200, { 'content-type': MIME['.js'], 'cache-control': 'no-store' }).end(WORKER);
  } else if (url.pathname.startsWith('/files/')) {
    serveFile(req, res, url.pathname.slice(7), url, false);
  } else {
    return false;
  }
  return true;
}

function serveOther(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  const m = /^\/(cors|nocors)\/(.+)$/.exec(url.pathname);
  if (!m) return res.writeHead(404).end();
  serveFile(req, res, m[2], url, m[1] === 'cors');
}

async function main() {
  const indexHtml = await readFile(path.join(root, 'index.html'), 'utf8').catch(() => null);
  const js = indexHtml && /data-iclora-js="([^"]+)"/.exec(indexHtml)?.[1];
  const wasm = indexHtml && /data-iclora-wasm="([^"]+)"/.exec(indexHtml)?.[1];
  if (!js || !wasm) {
    console.error(`${root}/index.html is missing or has no data-iclora-js/-wasm: run \`trunk build\` first`);
    return { passed: 0, failed: 1 };
  }
  const [a, origin] = await listen(staticHandler({ '/': root }, serveTest));
  const [b, other] = await listen(serveOther);
  let chrome;
  const log = [];
  let passed = 0, failed = 0;
  try {
    chrome = await browser();
    const { context } = chrome;
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('console', (m) => log.push(`console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => log.push(`page error: ${e.message}`));
    page.on('worker', (w) => w.on('console', (m) => log.push(`worker console.${m.type()}: ${m.text()}`)));
    await page.goto(`${origin}/__weights/probe.html`);
    await page.evaluate(([js, wasm]) => {
      const w = new Worker(`/__weights/worker.mjs?js=${encodeURIComponent(js)}&wasm=${encodeURIComponent(wasm)}`, { type: 'module' });
      const pending = new Map();
      let next = 1;
      w.onmessage = ({ data }) => { pending.get(data.id)?.(data); pending.delete(data.id); };
      w.onerror = (e) => console.error(`worker error: ${e.message}`);
      window.callProbe = (fn, args) => new Promise((ok) => { const id = next++; pending.set(id, ok); w.postMessage({ id, fn, args }); });
    }, [js, wasm]);

    /** Calls a probe: `{ ok, value }` (parsed JSON) or `{ ok: false, error }` (parsed when JSON). */
    const call = async (fn, ...args) => {
      const r = await page.evaluate(([fn, args]) => window.callProbe(fn, args), [fn, args]);
      const parse = (s) => { try { return JSON.parse(s); } catch { return s; } };
      return r.ok ? { ok: true, value: parse(r.value) } : { ok: false, error: parse(r.error) };
    };
    const value = (r) => { if (!r.ok) throw new Error(`probe failed: ${JSON.stringify(r.error)}`); return r.value; };
    const errorOf = (r) => { if (r.ok) throw new Error(`expected an error, got ${JSON.stringify(r.value)}`); return r.error; };
    const check = (cond, what) => { if (!cond) throw new Error(what); };
    const t = async (name, body) => {
      const t0 = Date.now();
      try {
        const detail = await body();
        passed++;
        console.log(`ok   ${name.padEnd(44)} ${((Date.now() - t0) / 1000).toFixed(1).padStart(5)} s  ${detail ?? ''}`);
      } catch (e) {
        failed++;
        console.log(`FAIL ${name}: ${e.message}`);
      }
    };
    const dl = (url, opts = {}) => call('weights_probe_download', url, JSON.stringify({ backoff_ms: 50, ...opts }));
    const full = (name) => ({ len: file(name).length, hash: fnv(file(name)) });
    const sameFile = (v, name) => {
      const want = full(name);
      check(v.bytes_read === want.len && v.hash === want.hash, `read back ${v.bytes_read} bytes, hash ${v.hash}; want ${want.len}, ${want.hash}`);
    };

    value(await call('weights_probe_clear'));
    const plain = `${origin}/files/plain.bin`;

    await t('download, then read back through OPFS', async () => {
      const v = value(await dl(plain));
      check(v.status === 'downloaded' && v.source === 'opfs', JSON.stringify(v));
      sameFile(v, 'plain.bin');
      const p = v.last_progress;
      check(v.progress_events > 0 && v.progress_monotonic && p.bytes === p.total && p.total === full('plain.bin').len && p.rate > 0, `progress ${JSON.stringify(p)}`);
      return `${v.progress_events} progress events, ${(p.rate / MIB).toFixed(1)} MiB/s`;
    });
    await t('second call is a verified cache hit', async () => {
      const v = value(await dl(plain));
      check(v.status === 'hit' && v.verified === true && v.source === 'opfs', JSON.stringify(v));
      sameFile(v, 'plain.bin');
    });
    for (const fault of ['truncate', 'reset', 'stall']) {
      await t(`download survives a ${fault} fault (resumes)`, async () => {
        const v = value(await dl(`${plain}?fault=${fault}`, { stall_ms: 1500 }));
        check(v.status === 'downloaded' && v.retries >= 1, JSON.stringify(v));
        sameFile(v, 'plain.bin');
        return `retries ${v.retries}`;
      });
    }
    await t('download from a host without Range support', async () => {
      const v = value(await dl(`${plain}?fault=norange`));
      check(v.status === 'downloaded', JSON.stringify(v));
      sameFile(v, 'plain.bin');
    });
    await t('cancel keeps the partial file; the next call resumes', async () => {
      const url = `${plain}?fault=slow&case=cancel`;
      const e = errorOf(await dl(url, { cancel_after_bytes: MIB }));
      check(e.kind === 'Cancelled', JSON.stringify(e));
      const entry = value(await call('weights_probe_list')).find((x) => x.url === url);
      check(entry && !entry.complete && entry.stored >= MIB && entry.stored < entry.bytes, `entry ${JSON.stringify(entry)}`);
      const v = value(await dl(url));
      check(v.status === 'downloaded' && v.resumed && v.resumed_from === entry.stored, JSON.stringify(v));
      sameFile(v, 'plain.bin');
      return `resumed from ${v.resumed_from}`;
    });
    await t('a file changed on the server is downloaded again', async () => {
      const url = `${origin}/files/changing.bin`;
      sameFile(value(await dl(url)), 'changing.bin');
      bump('changing.bin');
      const v = value(await dl(url));
      check(v.status === 'downloaded', `after the change: ${JSON.stringify(v)}`);
      sameFile(v, 'changing.bin');
    });
    await t('a partial file changed on the server restarts', async () => {
      const url = `${origin}/files/changing2.bin?fault=slow`;
      check(errorOf(await dl(url, { cancel_after_bytes: MIB })).kind === 'Cancelled', 'cancel');
      bump('changing2.bin');
      const v = value(await dl(url));
      check(v.status === 'downloaded' && !v.resumed, JSON.stringify(v));
      sameFile(v, 'changing2.bin');
    });
    await t('a file that changes between ranges restarts from zero', async () => {
      // Last-Modified only, so no ETag can tell the versions apart; the first answer is cut
      // after half the file, and the resume comes from the new version.
      const url = `${origin}/files/changing4.bin?fault=truncate&validator=lm&change_after=1`;
      const v = value(await dl(url));
      check(v.status === 'downloaded' && v.last_progress.restarts >= 1 && !v.resumed, JSON.stringify(v));
      sameFile(v, 'changing4.bin');
      check(log.some((l) => /changed on the server/.test(l)), 'no message about the change in the log');
      return `restarts ${v.last_progress.restarts}`;
    });
    await t('a partial file without a validator is not resumed', async () => {
      const url = `${plain}?fault=slow&validator=none&case=novalidator`;
      check(errorOf(await dl(url, { cancel_after_bytes: MIB })).kind === 'Cancelled', 'cancel');
      const entry = value(await call('weights_probe_list')).find((x) => x.url === url);
      check(entry && !entry.complete && entry.stored >= MIB && !entry.validator, `entry ${JSON.stringify(entry)}`);
      const v = value(await dl(url));
      check(v.status === 'downloaded' && !v.resumed, JSON.stringify(v));
      sameFile(v, 'plain.bin');
    });
    await t('metadata is moved in place, and read back from its temporary file', async () => {
      const url = `${origin}/files/changing5.bin`;
      check(value(await dl(url)).status === 'downloaded', 'download');
      const h = fnv(Buffer.from(url));
      // What a crash between removing `<h>.json` and moving `<h>.json.tmp` in place leaves.
      const names = await page.evaluate(async (h) => {
        const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('iclora-cache');
        const before = [];
        for await (const k of dir.keys()) if (k.startsWith(h)) before.push(k);
        const text = await (await (await dir.getFileHandle(`${h}.json`)).getFile()).text();
        const w = await (await dir.getFileHandle(`${h}.json.tmp`, { create: true })).createWritable();
        await w.write(text);
        await w.close();
        await dir.removeEntry(`${h}.json`);
        return { before: before.sort(), move: typeof FileSystemFileHandle.prototype.move === 'function' };
      }, h);
      // This Chromium has move(), so the temporary file was moved over `<h>.json`.
      check(names.move && JSON.stringify(names.before) === JSON.stringify([`${h}.bin`, `${h}.json`]), `files after the download: ${names.before}, move ${names.move}`);
      const entry = value(await call('weights_probe_list')).find((x) => x.url === url);
      check(entry && entry.complete && entry.stored === full('changing5.bin').len, `entry ${JSON.stringify(entry)}`);
      const v = value(await dl(url));
      check(v.status === 'hit' && v.verified, JSON.stringify(v));
      sameFile(v, 'changing5.bin');
    });
    await t('data is flushed every flush_bytes while downloading', async () => {
      const v = value(await dl(`${plain}?case=flush`, { flush_bytes: 256 * 1024 }));
      check(v.status === 'downloaded', JSON.stringify(v));
      sameFile(v, 'plain.bin');
      // Each body chunk is written, then flushed once flush_bytes have piled up.
      check(v.max_unflushed < 256 * 1024, `up to ${v.max_unflushed} bytes were not flushed`);
      return `at most ${(v.max_unflushed / 1024).toFixed(0)} KiB unflushed`;
    });
    await t('quota exceeded: partial deleted, streamed via XHR', async () => {
      const url = `${plain}?case=quota`;
      const v = value(await dl(url, { quota_bytes: MIB }));
      check(v.status === 'not_cached' && v.reason.kind === 'Quota' && /quota/i.test(v.reason.message) && v.source === 'xhr', JSON.stringify(v));
      sameFile(v, 'plain.bin');
      const left = value(await call('weights_probe_list')).filter((x) => x.url === url);
      check(left.length === 0, `left in the cache: ${JSON.stringify(left)}`);
      return v.reason.message.slice(0, 90) + '…';
    });

    const body = file('plain.bin');
    const ranges = [[0, 1], [1000, 5000], [MIB - 100, 300], [2 * MIB, MIB], [body.length - 10, 10]];
    // Each read of an XhrSource both ways: a synchronous XHR (the loaders' reads) and `fetch`
    // (`read_range_async`, the reads of paced uploads), same requests and checks.
    for (const mode of ['xhr', 'fetch']) {
      // Fetch mode asks for other URLs, so the server's per-URL faults and versions start afresh.
      const u = (url) => (mode === 'xhr' ? url : `${url}${url.includes('?') ? '&' : '?'}mode=fetch`);
      const xr = (url, off, len, opts = {}) =>
        call('weights_probe_xhr', u(url), off, len, JSON.stringify({ ...opts, async: mode === 'fetch' }));
      await t(`${mode}: ranges match the file`, async () => {
        for (const [off, len] of ranges) {
          const v = value(await xr(plain, off, len));
          check(v.total === body.length && v.len === len && v.hash === fnv(body.subarray(off, off + len)) && v.etag === etagOf('plain.bin'), `${off}+${len}: ${JSON.stringify(v)}`);
        }
        return `${ranges.length} ranges`;
      });
      for (const fault of ['truncate', 'reset']) {
        await t(`${mode}: survives a ${fault} fault`, async () => {
          const v = value(await xr(`${plain}?fault=${fault}&case=xhr`, 2 * MIB, MIB));
          check(v.hash === fnv(body.subarray(2 * MIB, 3 * MIB)) && v.retries >= 1, JSON.stringify(v));
          return `retries ${v.retries}`;
        });
      }
      await t(`${mode}: a stalled host times out and is retried`, async () => {
        const t0 = Date.now();
        const v = value(await xr(`${plain}?fault=stall&case=xhrstall`, 2 * MIB, MIB, { timeout_ms: 1000, min_rate: 64 * MIB }));
        const s = (Date.now() - t0) / 1000;
        // The server stalls for 60 s before it closes the connection.
        check(v.hash === fnv(body.subarray(2 * MIB, 3 * MIB)) && v.retries >= 1 && s < 20, `${s} s: ${JSON.stringify(v)}`);
        return `${s.toFixed(1)} s, retries ${v.retries}`;
      });
      for (const validator of ['etag', 'lm']) {
        await t(`${mode}: a file that changes between ranges (${validator}): FileChanged`, async () => {
          const url = `${origin}/files/changing3.bin?validator=${validator}&change_after=1`;
          const e = errorOf(await xr(url, 2 * MIB, MIB));
          check(e.kind === 'FileChanged' && /changed on the server/.test(e.message) && /Retry/.test(e.message), JSON.stringify(e));
          return e.message.slice(0, 100) + '…';
        });
      }
      for (const fault of ['norange', 'ignorerange']) {
        await t(`${mode}: a host that ignores ranges (${fault}) is refused unread`, async () => {
          const url = `${plain}?fault=${fault}&case=xhrwhole`;
          const e = errorOf(await xr(url, 0, 10));
          const want = fault === 'norange' ? 'NoRangeSupport' : 'RangesNotShown';
          const key = new URL(u(url)).pathname + new URL(u(url)).search;
          check(e.kind === want && /Range/.test(e.message), JSON.stringify(e));
          check((sent.get(key) ?? 0) === 0, `the server sent ${sent.get(key)} body bytes`);
          return e.message.slice(0, 90) + '…';
        });
      }
      await t(`${mode}: read past the end is an Io error`, async () => {
        const e = errorOf(await xr(plain, body.length - 5, 10));
        check(e.kind === 'Io' && /past the end/.test(e.message), JSON.stringify(e));
      });
    }
    const missing = `${origin}/files/missing.bin`;
    await t('404: Http errors, exists() is false', async () => {
      const x = errorOf(await call('weights_probe_xhr', missing, 0, 10));
      const d = errorOf(await dl(missing));
      check(x.kind === 'Http' && x.status === 404 && d.kind === 'Http' && d.status === 404 && /no such file/.test(x.message), `${JSON.stringify(x)} ${JSON.stringify(d)}`);
      check(value(await call('weights_probe_exists', missing)).exists === false, 'exists(missing)');
      check(value(await call('weights_probe_exists', plain)).exists === true, 'exists(plain)');
    });
    await t('read_all of a small file', async () => {
      const v = value(await call('weights_probe_read_all', `${origin}/files/small.json`));
      check(v.len === full('small.json').len && v.hash === full('small.json').hash, JSON.stringify(v));
    });
    const host = other.replace('http://', '');
    await t('cross-origin without CORS headers: Cors', async () => {
      const url = `${other}/nocors/plain.bin`;
      const x = errorOf(await call('weights_probe_xhr', url, 0, 10));
      const d = errorOf(await dl(url, { retries: 1 }));
      for (const e of [x, d]) check(e.kind === 'Cors' && e.message.includes(host) && /CORS/.test(e.message) && /Access-Control-Allow-Origin/.test(e.message), JSON.stringify(e));
      return x.message.slice(0, 80) + '…';
    });
    await t('cross-origin with CORS headers works', async () => {
      const url = `${other}/cors/plain.bin`;
      const v = value(await dl(url));
      check(v.status === 'downloaded' && v.source === 'opfs', JSON.stringify(v));
      sameFile(v, 'plain.bin');
      const h = value(await dl(url));
      check(h.status === 'hit' && h.verified, `second call: ${JSON.stringify(h)}`);
      const x = value(await call('weights_probe_xhr', url, 2 * MIB, 1000));
      check(x.hash === fnv(body.subarray(2 * MIB, 2 * MIB + 1000)), JSON.stringify(x));
    });
    await t('list, usage, delete, clear', async () => {
      const list = value(await call('weights_probe_list'));
      const e = list.find((x) => x.url === plain);
      check(e && e.complete && e.bytes === body.length && e.stored === body.length && e.etag === etagOf('plain.bin'), `entry ${JSON.stringify(e)}`);
      const u = value(await call('weights_probe_usage'));
      check(u.usage >= body.length && u.quota > u.usage, `usage ${JSON.stringify(u)}`);
      check(value(await call('weights_probe_delete', plain)).existed === true, 'delete');
      check(!value(await call('weights_probe_list')).some((x) => x.url === plain), 'still listed after delete');
      check(value(await call('weights_probe_delete', plain)).existed === false, 'second delete');
      const v = value(await dl(plain));
      check(v.status === 'downloaded', `after delete: ${JSON.stringify(v)}`);
      value(await call('weights_probe_clear'));
      const after = value(await call('weights_probe_list'));
      check(after.length === 0, `after clear: ${JSON.stringify(after)}`);
      return `${list.length} entries, usage ${(u.usage / MIB).toFixed(1)} MiB`;
    });
  } catch (e) {
    failed++;
    console.log(`driver error: ${e?.stack ?? e}`);
  } finally {
    if (failed > 0 || process.env.WEIGHTS_VERBOSE) for (const line of [...new Set(log)].slice(0, 40)) console.log(line);
    await chrome?.close();
    a.close();
    b.close();
    a.closeAllConnections?.();
    b.closeAllConnections?.();
  }
  return { passed, failed };
}

await report('weights', main);
