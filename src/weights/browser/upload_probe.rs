//! Benchmark hook for benches/browser_memory.mjs: streams every tensor of a weights file at a
//! URL (from the browser's cache when it is there, else by synchronous XHR Range reads: as the
//! engine's worker opens files, `Handles::prepare` + `Handles::open`) into GPU buffers through the
//! loader's planned uploads (`weights::load::Uploads`, the path `FluxModel::load_paced` takes),
//! paced (reads awaited: `fetch` when not cached) or not (synchronous reads), so the tab's memory can be sampled against the file's size. Each tensor is
//! dropped after it is written (its buffer is reused by the next of the same size): on a software
//! adapter GPU buffers are process memory, and keeping them would hide the staging memory.

use serde_json::json;
use wasm_bindgen::prelude::*;

use crate::clock::Stopwatch;
use crate::error::Error;
use crate::gpu::{Gpu, GpuOptions};
use crate::weights::load::{read_header, Convert, Pacer, Uploads, CHUNK_BYTES};

fn fail(e: Error) -> JsValue {
    JsValue::from_str(&e.to_string())
}

/// Answers `{tensors, bytes, waits, secs}`; `pace_bytes` 0 means no pacing (never wait), below 0
/// that nothing goes to the GPU (the reads alone).
#[wasm_bindgen]
pub async fn weights_probe_upload(url: String, pace_bytes: f64) -> Result<String, JsValue> {
    let gpu = Gpu::new(&GpuOptions::default()).await.map_err(fail)?;
    let handles = super::Handles::default();
    handles.prepare(&url).await.map_err(fail)?;
    let mut src = handles.open(&url).map_err(fail)?;
    let header = read_header(src.as_mut()).map_err(fail)?;
    let mut pace = if pace_bytes > 0.0 { Pacer::every(pace_bytes as usize) } else { Pacer::never() };
    let cached = handles.is_prepared(&url);
    let t = Stopwatch::start();
    let mut bytes = 0u64;
    for info in &header.tensors {
        if pace_bytes < 0.0 {
            // Reads only (a control: the transport's own memory, without the GPU).
            let mut at = 0;
            while at < info.size {
                let n = (info.size - at).min(CHUNK_BYTES as u64);
                src.read_range(info.offset + at, n as usize).map_err(fail)?;
                at += n;
            }
            bytes += info.size;
            continue;
        }
        let mut uploads = Uploads::new(&header);
        let tensor = uploads.tensor_as(&gpu, src.as_mut(), &header, info, Convert::Keep).map_err(fail)?;
        pace = uploads.run(&gpu, src.as_mut(), CHUNK_BYTES, pace).await.map_err(fail)?;
        bytes += info.size;
        drop(tensor);
    }
    gpu.done().await.map_err(fail)?;
    Ok(json!({ "cached": cached, "tensors": header.tensors.len(), "bytes": bytes, "waits": pace.waits, "secs": t.secs() }).to_string())
}
