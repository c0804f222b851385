// Loads the wasm-bindgen module Trunk built (file names come from the
// pattern_script attributes in Trunk.toml). A file, not an inline script, so
// the Content-Security-Policy in index.html can forbid inline scripts.
const tag = document.querySelector('script[data-iclora-js]');

try {
  // Before the engine opens a device: adds the features wgpu cannot request (gpu_bridge.js).
  await import('./gpu_bridge.js');
  const { default: init } = await import(tag.dataset.icloraJs);
  await init({ module_or_path: tag.dataset.icloraWasm });
} catch (err) {
  const status = document.getElementById('status');
  status.className = 'status error';
  status.textContent = `The app could not start: ${err}`;
  if (new URLSearchParams(location.search).has('selftest')) {
    document.getElementById('selftest-summary').textContent = `selftest could not run: ${err}`;
    document.body.dataset.selftest = 'fail';
  }
  throw err;
}
