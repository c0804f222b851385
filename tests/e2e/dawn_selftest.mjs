// The kernel self-test under Node on Chrome's own WebGPU implementation, Dawn (npm `webgpu`, the
// dawn.node addon): the wasm module Trunk built (dist/) gets `navigator.gpu` from Dawn, the same
// web/gpu_bridge.js the page loads, and runs its `selftest_headless` export (src/app/selftest.rs):
// every kernel against its CPU reference, the reducing kernels on their subgroup and
// workgroup-memory paths. No browser, so it also runs on a GPU machine that has Node and the
// addon but no Chromium (the H200 machine: see BENCHMARKS.md).
//
// On this CPU machine Dawn runs on Chromium's SwiftShader (VK_ICD_FILENAMES set to it when neither
// VK_ICD_FILENAMES nor VK_DRIVER_FILES is set: Dawn rejects Debian 12's lavapipe). Environment:
// DIST (default dist), DAWN_FLAGS (comma-separated dawn.node flags, e.g.
// `enable-dawn-features=allow_unsafe_apis` for subgroup matrices), DAWN_REPORT (write the JSON
// report there). The last line is `dawn selftest: N passed, M failed`.

import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { report } from './lib.mjs';

const SWIFTSHADER = '/usr/lib/chromium/vk_swiftshader_icd.json';
const dist = path.resolve(process.env.DIST ?? 'dist');

async function main() {
  const js = readdirSync(dist).find((f) => /^iclora-[0-9a-f]+\.js$/.test(f));
  if (!js) {
    console.error(`${dist} has no iclora-*.js: run \`trunk build --release\` first`);
    return { passed: 0, failed: 1 };
  }
  if (!process.env.VK_ICD_FILENAMES && !process.env.VK_DRIVER_FILES && existsSync(SWIFTSHADER)) {
    process.env.VK_ICD_FILENAMES = SWIFTSHADER;
  }
  // Dawn reads the Vulkan variables when it creates its instance, so import it only now.
  const { create, globals } = await import('webgpu');
  Object.assign(globalThis, globals);
  const flags = (process.env.DAWN_FLAGS ?? '').split(',').filter(Boolean);
  Object.defineProperty(globalThis, 'navigator', { value: { gpu: create(flags) }, configurable: true });
  // wgpu's WebGPU backend finds navigator.gpu only where a `Window` (or `WorkerGlobalScope`)
  // constructor exists (wgpu 30.0.2, src/backend/webgpu.rs, get_browser_gpu_property).
  globalThis.Window ??= class Window {};
  await import(path.join(dist, 'gpu_bridge.js'));
  const engine = await import(path.join(dist, js));
  await engine.default({ module_or_path: readFileSync(path.join(dist, js.replace(/\.js$/, '_bg.wasm'))) });

  const t0 = Date.now();
  const result = JSON.parse(await engine.selftest_headless());
  const { runs, ...facts } = result;
  console.log(`dawn.node ${flags.length ? `(${flags.join(' ')}) ` : ''}on ${process.env.VK_ICD_FILENAMES ?? process.env.VK_DRIVER_FILES ?? 'the system Vulkan driver'}`);
  console.log(JSON.stringify(facts));
  for (const r of runs) {
    const mark = r.result === 'pass' ? 'ok  ' : r.result === 'fail' ? 'FAIL' : 'n/a ';
    const name = r.path ? `${r.kernel} · ${r.path}` : r.kernel;
    const err = r.max_err == null ? '—' : r.max_err.toExponential(2);
    console.log(`${mark} ${name.padEnd(44)} ${r.shape.padEnd(34)} err ${err.padStart(9)} ${r.ms.toFixed(1).padStart(8)} ms${r.detail ? '  ' + r.detail : ''}`);
  }
  console.log(`${runs.length} runs in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  if (process.env.DAWN_REPORT) writeFileSync(process.env.DAWN_REPORT, JSON.stringify(result, null, 1));
  const passed = runs.filter((r) => r.result === 'pass').length;
  const failed = runs.filter((r) => r.result === 'fail').length;
  // Subgroup paths must run wherever Dawn offers subgroups (SwiftShader does).
  const notOffered = runs.filter((r) => r.result === 'not offered').length;
  if (facts.subgroups === false && notOffered === 0) return { passed, failed: failed + 1 };
  return { passed, failed };
}

await report('dawn selftest', main);
