// The engine's worker (src/app/worker.rs): loads the same wasm module as the
// page (the page passes Trunk's hashed file names in the query) and hands
// over to Rust. Messages that arrive while the module compiles are kept and
// replayed once the Rust handler is installed.
//
// A panic or an allocation failure in the wasm module traps; inside an async
// task that surfaces as a rejected promise, which (unlike an uncaught error)
// does not reach the page's `worker.onerror`. Both are reported to the page as
// `crashed`, and the page replaces this worker (src/app/client.rs): the wasm
// instance cannot be trusted after a trap.
const early = [];
self.onmessage = (e) => early.push(e);
const crashed = (message) => {
  try {
    self.postMessage({ json: JSON.stringify({ type: 'crashed', message: String(message) }), bufs: [] });
  } catch {
    // Nothing else can be done from here; the page's onerror may still fire.
  }
};
self.addEventListener('unhandledrejection', (e) => crashed(e.reason?.stack ?? e.reason));
const q = new URL(self.location.href).searchParams;
try {
  await import('./gpu_bridge.js'); // before the engine opens its device
  const mod = await import(q.get('js'));
  await mod.default({ module_or_path: q.get('wasm') });
  mod.worker_main();
  for (const e of early) self.onmessage(e);
} catch (err) {
  self.postMessage({ json: JSON.stringify({ type: 'error', job: 0, kind: 'no-engine', message: `the engine could not start in a worker: ${err}` }), bufs: [] });
}
