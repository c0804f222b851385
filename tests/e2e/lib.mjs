// Shared pieces of the browser tests: Chromium's flags on this machine, a
// static file server with HTTP Range support (the app's worker reads weights
// in byte ranges), a persistent Chromium context with software WebGPU, and the
// `name: N passed, M failed` ending.

import { createServer } from 'node:http';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

// Software WebGPU is only exposed with --enable-unsafe-webgpu (without it requestAdapter() returns null);
// the rest keep Chromium off the network.
export const FLAGS = [
  '--headless', '--no-sandbox', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--enable-unsafe-webgpu',
];

export const MIME = {
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

// Every answer may be read from another origin (as Hugging Face's are, 404s included).
const CORS = { 'access-control-allow-origin': '*' };

/** Serves `mounts` ({ '/url/prefix/': '/dir' }, longest prefix wins) with
 * Range, HEAD and ETag, CORS for every origin; `hook(req, res)` may answer
 * first (return true when it did). */
export function staticHandler(mounts, hook = () => false) {
  const prefixes = Object.keys(mounts).sort((a, b) => b.length - a.length);
  return async (req, res) => {
    try {
      if (await hook(req, res)) return;
      // CORS preflight (a cross-origin Range request may need one).
      if (req.method === 'OPTIONS') {
        return void res.writeHead(204, {
          'access-control-allow-origin': '*',
          'access-control-allow-methods': 'GET, HEAD',
          'access-control-allow-headers': 'range',
          'access-control-max-age': '600',
        }).end();
      }
      const url = new URL(req.url, 'http://127.0.0.1');
      const prefix = prefixes.find((p) => url.pathname.startsWith(p));
      if (!prefix) return void res.writeHead(404, CORS).end('not found');
      const root = path.resolve(mounts[prefix]);
      let file = path.normalize(path.join(root, decodeURIComponent(url.pathname.slice(prefix.length))));
      if (file !== root && !file.startsWith(root + path.sep)) return void res.writeHead(403, CORS).end('forbidden');
      let st = await stat(file).catch(() => null);
      if (st?.isDirectory()) {
        file = path.join(file, 'index.html');
        st = await stat(file).catch(() => null);
      }
      if (!st?.isFile()) return void res.writeHead(404, { 'content-type': 'text/plain', ...CORS }).end('not found');
      const etag = `"${createHash('sha1').update(`${file}:${st.size}:${st.mtimeMs}`).digest('hex').slice(0, 16)}"`;
      const headers = {
        'content-type': MIME[path.extname(file)] ?? 'application/octet-stream',
        'cache-control': 'no-store',
        'accept-ranges': 'bytes',
        etag,
        'access-control-allow-origin': '*',
        'access-control-expose-headers': 'content-range, content-length, etag, accept-ranges',
      };
      let [start, end, status] = [0, st.size - 1, 200];
      const m = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
      if (m && st.size > 0) {
        start = m[1] === '' ? Math.max(0, st.size - Number(m[2])) : Number(m[1]);
        end = m[1] !== '' && m[2] !== '' ? Math.min(Number(m[2]), st.size - 1) : st.size - 1;
        if (start > end || start >= st.size) {
          return void res.writeHead(416, { ...headers, 'content-range': `bytes */${st.size}` }).end();
        }
        status = 206;
        headers['content-range'] = `bytes ${start}-${end}/${st.size}`;
      }
      headers['content-length'] = String(st.size === 0 ? 0 : end - start + 1);
      res.writeHead(status, headers);
      if (req.method === 'HEAD' || st.size === 0) return void res.end();
      const fh = await open(file);
      const stream = fh.createReadStream({ start, end });
      stream.on('close', () => fh.close().catch(() => {}));
      stream.pipe(res);
    } catch (err) {
      if (!res.headersSent) res.writeHead(500).end(String(err));
    }
  };
}

/** An HTTP server for `handler` (sync or async; a throw answers 500) on
 * 127.0.0.1 at a free port; returns [server, origin]. */
export async function listen(handler) {
  const server = createServer((req, res) => {
    Promise.resolve().then(() => handler(req, res)).catch((e) => {
      if (!res.headersSent) res.writeHead(500).end(String(e));
    });
  });
  await new Promise((ok, fail) => server.once('error', fail).listen(0, '127.0.0.1', ok));
  return [server, `http://127.0.0.1:${server.address().port}`];
}

/** A persistent Chromium context (WebGPU needs the flags) in a fresh profile;
 * `close()` also removes the profile. */
export async function browser(executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium') {
  const dir = mkdtempSync(path.join(tmpdir(), 'iclora-chromium-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath, headless: true, args: FLAGS, viewport: { width: 1280, height: 900 }, acceptDownloads: true,
  });
  const close = async () => {
    await context.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  };
  return { context, close };
}

/** Runs a test's `main` (→ { passed, failed }), prints `name: N passed, M
 * failed` as the last line and exits non-zero unless all passed. */
export async function report(name, main) {
  let result = { passed: 0, failed: 1 };
  try {
    result = await main();
  } catch (err) {
    console.error(`${name} driver error: ${err?.stack ?? err}`);
  }
  console.log(`${name}: ${result.passed} passed, ${result.failed} failed`);
  process.exit(result.failed === 0 && result.passed > 0 ? 0 : 1);
}
