//! The engine's side of the page: runs in a dedicated Web Worker (web/worker.js loads this same
//! wasm module there and calls [`worker_main`]), so downloads, weight conversion, tokenization
//! and the GPU loop never block the page. Model loaders read bytes synchronously, which a worker
//! may do: from the OPFS cache (a sync access handle) or by synchronous Range requests.
//!
//! One job runs at a time; the page queues. A job's cancel flag is checked between files,
//! stages and steps. A failed job leaves the worker usable; a lost device is dropped and the
//! next job opens a new one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use super::protocol::{envelope, open_envelope, CachedFile, FromWorker, GenerateRequest, ToWorker};
use super::run::{export, run_job, Finished};
use crate::error::Error;
use crate::gpu::{Gpu, GpuOptions};
use crate::pipeline::generate::Session;
use crate::pipeline::store::ModelStore;
use crate::weights::browser::{cache, Cancel};

fn scope() -> Option<DedicatedWorkerGlobalScope> {
    js_sys::global().dyn_into::<DedicatedWorkerGlobalScope>().ok()
}

/// Whether this code runs in a dedicated worker (the page's `start` does nothing there).
pub fn in_worker() -> bool {
    scope().is_some()
}

/// Posts `msg` with `bufs` (transferred, not copied) to the page.
pub fn post(msg: &FromWorker, bufs: Vec<Vec<u8>>) {
    let Some(scope) = scope() else { return };
    let json = serde_json::to_string(msg)
        .unwrap_or_else(|e| format!("{{\"type\":\"error\",\"job\":0,\"kind\":\"internal\",\"message\":\"{e}\"}}"));
    if let Ok((obj, transfer)) = envelope(&json, bufs) {
        if scope.post_message_with_transfer(&obj, &transfer).is_err() {
            let _ = scope.post_message(&obj);
        }
    }
}

/// A short machine-readable kind for an error, so the page can suggest the right fix.
pub fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Cancelled => "cancelled",
        Error::Cors { .. } => "cors",
        Error::Http { status: 404 | 410, .. } => "not-found",
        Error::Http { .. }
        | Error::NoRangeSupport { .. }
        | Error::RangesNotShown { .. }
        | Error::FileChanged { .. }
        | Error::InsecureRedirect { .. }
        | Error::Timeout { .. } => "http",
        Error::Quota { .. } => "quota",
        Error::OutOfMemory(_) => "out-of-memory",
        Error::DeviceLost(_) => "device-lost",
        Error::Lora { .. } => "lora",
        Error::NoAdapter(_) | Error::DeviceRequest(_) => "no-gpu",
        _ => "error",
    }
}

#[derive(Default)]
struct Engine {
    gpu: Option<Rc<Gpu>>,
    cancel: HashMap<u32, Cancel>,
    finished: HashMap<u32, Finished>,
    /// Models kept loaded between sets (taken out while a job runs).
    session: Session,
    /// Where files come from: the cache's read handles and the files the user dropped.
    store: Rc<ModelStore>,
    busy: bool,
    queue: Vec<ToWorker>,
}

type Shared = Rc<RefCell<Engine>>;

/// Entry point of the worker: installs the message handler and tells the page it is listening.
#[wasm_bindgen]
pub fn worker_main() {
    console_error_panic_hook::set_once();
    let Some(scope) = scope() else { return };
    let engine: Shared = Rc::default();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        let (text, bufs) = open_envelope(&ev.data());
        match serde_json::from_str::<ToWorker>(&text) {
            Ok(msg) => receive(engine.clone(), msg, bufs),
            Err(e) => post(
                &FromWorker::Error {
                    job: 0,
                    kind: "internal".into(),
                    message: format!("bad message to the worker: {e}"),
                },
                vec![],
            ),
        }
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
}

fn receive(engine: Shared, msg: ToWorker, bufs: Vec<Vec<u8>>) {
    match msg {
        // Cancel acts at once, even while a job runs.
        ToWorker::Cancel { job } => {
            if let Some(flag) = engine.borrow().cancel.get(&job) {
                flag.cancel();
            }
        }
        ToWorker::Generate { job, request } => {
            engine.borrow_mut().cancel.insert(job, Cancel::new());
            enqueue(engine, ToWorker::Generate { job, request }, bufs);
        }
        // A dropped file is kept at once (a queued message would lose its bytes).
        ToWorker::AddFile { name } => {
            if let Some(bytes) = bufs.into_iter().next() {
                engine.borrow().store.add_file(&name, bytes);
            }
        }
        other => enqueue(engine, other, bufs),
    }
}

/// Runs `msg` now if the worker is idle, else after the jobs before it (pixels of queued
/// requests are not kept: a page queues at most one generation).
fn enqueue(engine: Shared, msg: ToWorker, bufs: Vec<Vec<u8>>) {
    if engine.borrow().busy {
        engine.borrow_mut().queue.push(msg);
        return;
    }
    engine.borrow_mut().busy = true;
    wasm_bindgen_futures::spawn_local(async move {
        handle(&engine, msg, bufs).await;
        loop {
            let next = {
                let mut e = engine.borrow_mut();
                if e.queue.is_empty() {
                    e.busy = false;
                    None
                } else {
                    Some(e.queue.remove(0))
                }
            };
            let Some(next) = next else { break };
            handle(&engine, next, Vec::new()).await;
        }
    });
}

async fn gpu(engine: &Shared) -> Result<Rc<Gpu>, Error> {
    if let Some(g) = engine.borrow().gpu.clone() {
        return Ok(g);
    }
    let g = Rc::new(Gpu::new(&GpuOptions::default()).await?);
    engine.borrow_mut().gpu = Some(g.clone());
    Ok(g)
}

fn report(job: u32, e: &Error) {
    post(&FromWorker::Error { job, kind: error_kind(e).into(), message: e.to_string() }, vec![]);
}

async fn handle(engine: &Shared, msg: ToWorker, bufs: Vec<Vec<u8>>) {
    match msg {
        ToWorker::Init => match gpu(engine).await {
            Ok(g) => {
                let i = g.info();
                post(
                    &FromWorker::Ready {
                        adapter: i.name.clone(),
                        paths: crate::kernels::describe_paths(&g, super::run::PRECISION),
                        max_binding: i.max_storage_binding,
                        max_buffer: i.max_buffer_size,
                    },
                    vec![],
                );
            }
            Err(e) => report(0, &e),
        },
        ToWorker::Plan { job, model, loras } => {
            let store = engine.borrow().store.clone();
            let planned = store.plan(&model, &loras).await;
            store.release();
            match planned {
                Ok(files) => post(&FromWorker::Plan { job, files }, vec![]),
                Err(e) => report(job, &e),
            }
        }
        ToWorker::Generate { job, request } => {
            let flag = engine.borrow().cancel.get(&job).cloned().unwrap_or_default();
            let result = generate(engine, job, &request, bufs, &flag).await;
            engine.borrow_mut().cancel.remove(&job);
            match result {
                Ok(done) => {
                    engine.borrow_mut().finished.insert(job, done);
                }
                Err(e) => {
                    if matches!(e, Error::DeviceLost(_)) {
                        engine.borrow_mut().gpu = None;
                    }
                    report(job, &e);
                }
            }
        }
        ToWorker::Export { job, zip } => {
            let out = engine.borrow().finished.get(&job).map(|f| export(f, job, zip));
            match out {
                Some(Ok((names, files))) => post(&FromWorker::Exported { job, names }, files),
                Some(Err(e)) => report(job, &e),
                None => report(
                    job,
                    &Error::InvalidArgument(format!("set {job} is no longer in this tab's memory; generate it again")),
                ),
            }
        }
        ToWorker::CacheList => send_cache_list(String::new()).await,
        ToWorker::CacheDelete { url } => {
            let store = engine.borrow().store.clone();
            let note = match store.delete_cached(&url).await {
                Ok(true) => format!("deleted {url}"),
                Ok(false) => format!("{url} was not in the cache"),
                Err(e) => e.to_string(),
            };
            send_cache_list(note).await
        }
        ToWorker::AddFile { .. } | ToWorker::Cancel { .. } => {}
    }
}

async fn send_cache_list(note: String) {
    match cache::list().await {
        Ok(entries) => {
            let files =
                entries.into_iter().map(|e| CachedFile { url: e.url, bytes: e.bytes, complete: e.complete }).collect();
            post(&FromWorker::Cache { files, note }, vec![]);
        }
        Err(e) => report(0, &e),
    }
}

async fn generate(
    engine: &Shared,
    job: u32,
    req: &GenerateRequest,
    bufs: Vec<Vec<u8>>,
    cancel: &Cancel,
) -> Result<Finished, Error> {
    let store = engine.borrow().store.clone();
    let out = download_and_run(engine, &store, job, req, bufs, cancel).await;
    // Sync access handles lock their files: close them whatever happened.
    store.release();
    out
}

async fn download_and_run(
    engine: &Shared,
    store: &Rc<ModelStore>,
    job: u32,
    req: &GenerateRequest,
    bufs: Vec<Vec<u8>>,
    cancel: &Cancel,
) -> Result<Finished, Error> {
    let gpu = gpu(engine).await?;
    post(&FromWorker::Stage { job, stage: "download".into(), what: "checking the files".into() }, vec![]);
    let files = store.plan(&req.model, &req.loras).await?;
    super::run::download(store, job, &files, cancel).await?;
    let mut session = std::mem::take(&mut engine.borrow_mut().session);
    let out = run_job(&gpu, store, &mut session, job, req, bufs, cancel).await;
    engine.borrow_mut().session = session;
    out
}
