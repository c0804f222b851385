// The engine's worker (src/app/worker.rs): loads the same wasm module as the
// page (the page passes Trunk's hashed file names in the query) and hands
// over to Rust. Messages that arrive while the module compiles are kept and
// replayed once the Rust handler is installed.
const early = [];
self.onmessage = (e) => early.push(e);
const q = new URL(self.location.href).searchParams;
try {
  const mod = await import(q.get('js'));
  await mod.default({ module_or_path: q.get('wasm') });
  mod.worker_main();
  for (const e of early) self.onmessage(e);
} catch (err) {
  self.postMessage({ json: JSON.stringify({ type: 'error', job: 0, kind: 'no-engine', message: `the engine could not start in a worker: ${err}` }), bufs: [] });
}
