// The tab's memory while a weights file streams into GPU buffers in headless Chromium, against
// the file's size, with and without the loader's pacing (a wait for the GPU's queue every
// PACE MiB, `weights::load::Pacer`), in the same run.
//
// Files: FLUX-shaped GGUFs (3072 wide; Q8_0 double blocks, Q4_0 single blocks) made by our GGUF
// writer (`iclora bench stream --make`), served on 127.0.0.1 with Range support. A worker of the
// test page (as the engine's worker) calls the `weights_probe_upload` hook
// (src/weights/browser/upload_probe.rs): the file is downloaded into the browser's cache (OPFS)
// first, as the studio does, then read back (OPFS sync reads into wasm memory) → `Uploads` → GPU
// buffers, each tensor dropped after it is written; "reads" rows read without uploading (a
// control), "http" rows read over HTTP when the file is not cached (the path when the cache is
// full): synchronous XHR without pacing and for "reads", `fetch` (`read_range_async`) when paced. Every 200 ms the script samples the browser's
// processes (descendants of this Node process; /proc/PID/status): the renderer (which hosts the
// worker and its wasm heap; RssShmem is the shared memory that `writeBuffer` stages uploads in)
// and the GPU process (SwiftShader: GPU buffers are its memory). Peaks are reported, and the
// worker's wasm memory at the end.
//
// Usage: node benches/browser_memory.mjs [GIB_A] [GIB_B] [PACE_MIB]   (defaults 1, 2, 64)
//   needs dist/ (trunk build --release) and target/release/iclora (cargo build --release).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { browser, listen, MIME, staticHandler } from '../tests/e2e/lib.mjs';

const [gibA, gibB, paceMib] = [Number(process.argv[2] ?? 1), Number(process.argv[3] ?? 2), Number(process.argv[4] ?? 64)];
const dist = path.resolve(process.env.DIST ?? 'dist');
const cli = path.resolve(process.env.ICLORA ?? 'target/release/iclora');
const MIB = 1 << 20;

const WORKER = `
const q = new URL(self.location.href).searchParams;
let mod, wasm;
const ready = (async () => {
  mod = await import(q.get('js'));
  try { wasm = await mod.default({ module_or_path: q.get('wasm') }); } catch (e) { console.warn('init: ' + e); }
})();
self.onmessage = async ({ data: { fn, args } }) => {
  try {
    await ready;
    const value = await mod[fn](...args);
    self.postMessage({ ok: true, value, wasmBytes: wasm?.memory?.buffer?.byteLength ?? 0 });
  } catch (e) {
    self.postMessage({ ok: false, error: String(e && e.stack || e) });
  }
};
`;

// Descendant PIDs of `root`, from the ppid in /proc/PID/stat.
function descendants(root) {
  const parent = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch { /* gone */ }
  }
  const out = [];
  const walk = (p) => { for (const [c, pp] of parent) if (pp === p) { out.push(c); walk(c); } };
  walk(root);
  return out;
}

/** `{ renderer: {rss, shmem}, gpu: {rss, shmem} }` in MiB, summed over processes of each type. */
function sample() {
  const acc = { renderer: { rss: 0, shmem: 0 }, gpu: { rss: 0, shmem: 0 } };
  for (const pid of descendants(process.pid)) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      const kind = cmd.includes('--type=renderer') ? 'renderer' : cmd.includes('--type=gpu-process') ? 'gpu' : null;
      if (!kind) continue;
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
      acc[kind].rss += kb('VmRSS') / 1024;
      acc[kind].shmem += kb('RssShmem') / 1024;
    } catch { /* gone */ }
  }
  return acc;
}

async function measure(origin, js, wasmUrl, url, pace, cached) {
  const b = await browser();
  try {
    const page = b.context.pages()[0] ?? (await b.context.newPage());
    await page.goto(`${origin}/__mem/page.html`);
    await page.evaluate(([js, wasm]) => {
      const w = new Worker(`/__mem/worker.mjs?js=${encodeURIComponent(js)}&wasm=${encodeURIComponent(wasm)}`, { type: 'module' });
      window.probe = (fn, args) => new Promise((ok) => {
        w.onmessage = ({ data }) => ok(data);
        w.onerror = (e) => ok({ ok: false, error: e.message });
        w.postMessage({ fn, args });
      });
    }, [js, wasmUrl]);
    if (cached) {
      // Into the browser's cache first (not measured): the engine reads weights from there.
      const d = await page.evaluate(([url]) => window.probe('weights_probe_download', [url, '{}']), [url]);
      if (!d.ok) throw new Error(d.error);
    }
    const base = sample();
    const peak = { renderer: { rss: 0, shmem: 0 }, gpu: { rss: 0, shmem: 0 } };
    const timer = setInterval(() => {
      const s = sample();
      for (const k of ['renderer', 'gpu']) for (const m of ['rss', 'shmem']) peak[k][m] = Math.max(peak[k][m], s[k][m]);
    }, 200);
    const r = await page.evaluate(([url, pace]) => window.probe('weights_probe_upload', [url, pace]), [url, pace]);
    clearInterval(timer);
    if (!r.ok) throw new Error(r.error);
    return { ...JSON.parse(r.value), wasmMib: r.wasmBytes / MIB, base, peak };
  } finally {
    await b.close();
  }
}

const html = readFileSync(path.join(dist, 'index.html'), 'utf8');
const js = /data-iclora-js="([^"]+)"/.exec(html)?.[1];
const wasmUrl = /data-iclora-wasm="([^"]+)"/.exec(html)?.[1];
const dir = mkdtempSync(path.join(tmpdir(), 'iclora-mem-'));
const serveTest = (req, res) => {
  const u = new URL(req.url, 'http://x');
  const body = { '/__mem/page.html': ['.html', '<!doctype html><title>memory</title>'], '/__mem/worker.mjs': ['.js', WORKER] }[u.pathname];
  if (!body) return false;
  res.writeHead(200, { 'content-type': MIME[body[0]] }).end(body[1]);
  return true;
};
const [server, origin] = await listen(staticHandler({ '/': dist, '/files/': dir }, serveTest));
try {
  const files = [];
  for (const gib of [gibA, gibB]) {
    const f = path.join(dir, `flux-${gib}.gguf`);
    execFileSync(cli, ['bench', 'stream', '--make', f, '--gib', String(gib)], { stdio: 'ignore' });
    files.push([f, statSync(f).size]);
  }
  console.log(`browser memory while streaming into GPU buffers (headless Chromium, SwiftShader); pacing: wait every ${paceMib} MiB`);
  console.log('file_GB source   pacing   waits  secs   renderer_peak_RSS  renderer_peak_shmem  gpu_peak_RSS  wasm_heap  (MiB; baseline renderer RSS)');
  for (const [f, size] of files) {
    for (const [source, pace] of [['cache', -1], ['cache', 0], ['cache', paceMib * MIB], ['http', -1], ['http', 0], ['http', paceMib * MIB]]) {
      const r = await measure(origin, js, wasmUrl, `${origin}/files/${path.basename(f)}`, pace, source === 'cache');
      if (r.cached !== (source === 'cache')) throw new Error(`read from ${r.cached ? 'the cache' : 'HTTP'}, meant ${source}`);
      console.log([(size / 1e9).toFixed(2).padStart(7), source.padStart(6), (pace > 0 ? `${paceMib} MiB` : pace < 0 ? 'reads' : 'none').padStart(8), String(r.waits).padStart(6), r.secs.toFixed(1).padStart(6),
        r.peak.renderer.rss.toFixed(0).padStart(18), r.peak.renderer.shmem.toFixed(0).padStart(20), r.peak.gpu.rss.toFixed(0).padStart(13),
        r.wasmMib.toFixed(0).padStart(10), `  (${r.base.renderer.rss.toFixed(0)})`].join(' '));
    }
  }
} finally {
  server.close();
  rmSync(dir, { recursive: true, force: true });
}
