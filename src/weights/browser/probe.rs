//! Test hooks for tests/e2e/weights.mjs: `#[wasm_bindgen]` functions the test's
//! worker calls. Each answers a JSON string; a failure rejects with a JSON
//! string `{kind, message, status?}` (`kind` = the `Error` variant).
//! Checksums are FNV-1a 64 (hex) of the bytes read back, which the test
//! recomputes from the files it served.

use serde_json::{json, Value};
use wasm_bindgen::prelude::*;

use super::{cache, js, xhr, CacheStatus, Cancel, DownloadOptions, DownloadProgress, Handles};
use crate::error::Error;
use crate::weights::load::ByteSource;
use crate::weights::range::Validator;

/// The `Error` variant's name, for the test's assertions.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::Http { .. } => "Http",
        Error::Cors { .. } => "Cors",
        Error::Quota { .. } => "Quota",
        Error::Cancelled => "Cancelled",
        Error::NoRangeSupport { .. } => "NoRangeSupport",
        Error::Timeout { .. } => "Timeout",
        Error::Io { .. } => "Io",
        Error::FileChanged { .. } => "FileChanged",
        Error::RangesNotShown { .. } => "RangesNotShown",
        _ => "Other",
    }
}

fn error_json(e: &Error) -> Value {
    let status = match e {
        Error::Http { status, .. } => Some(*status),
        _ => None,
    };
    json!({ "kind": kind(e), "message": e.to_string(), "status": status })
}

fn fail(e: Error) -> JsValue {
    JsValue::from_str(&error_json(&e).to_string())
}

/// Reads a whole source in 1 MiB reads: `(bytes, fnv hex)`.
fn hash_source(src: &mut dyn ByteSource) -> Result<(u64, String), Error> {
    let (len, mut h, mut at) = (src.len(), js::Fnv::default(), 0u64);
    while at < len {
        let n = (len - at).min(1 << 20) as usize;
        h.update(&src.read_range(at, n)?);
        at += n as u64;
    }
    Ok((len, h.hex()))
}

/// `ensure_cached_with(url)`, then the file read back through `prepare` +
/// `open` (OPFS when cached, else XHR). `options` (JSON, all optional):
/// `stall_ms`, `retries`, `backoff_ms`, `quota_bytes`, `flush_bytes`, and `cancel_after_bytes`
/// (cancels from the progress callback once that many bytes are stored).
#[wasm_bindgen]
pub async fn weights_probe_download(url: String, options: String) -> Result<String, JsValue> {
    let o: Value = serde_json::from_str(&options).unwrap_or(Value::Null);
    let num = |k: &str| o.get(k).and_then(Value::as_f64);
    let mut opts = DownloadOptions { progress_ms: 0.0, ..DownloadOptions::default() };
    opts.stall_ms = num("stall_ms").unwrap_or(opts.stall_ms);
    opts.backoff_ms = num("backoff_ms").unwrap_or(opts.backoff_ms);
    opts.retries = num("retries").map_or(opts.retries, |r| r as u32);
    opts.quota_bytes = num("quota_bytes").map(|q| q as u64);
    opts.flush_bytes = num("flush_bytes").map_or(opts.flush_bytes, |b| b as u64);
    let cancel_after = num("cancel_after_bytes").map(|b| b as u64);

    let cancel = Cancel::new();
    let (mut events, mut monotonic, mut last): (u64, bool, Option<DownloadProgress>) = (0, true, None);
    let mut max_unflushed = 0u64;
    let mut on_progress = |p: &DownloadProgress| {
        events += 1;
        max_unflushed = max_unflushed.max(p.bytes.saturating_sub(p.flushed));
        // Bytes only go down when a changed file restarts from 0.
        monotonic &= last.is_none_or(|l| p.bytes >= l.bytes || p.bytes < p.resumed_from.max(1));
        last = Some(*p);
        if cancel_after.is_some_and(|n| p.bytes >= n) {
            cancel.cancel();
        }
    };
    let handles = Handles::default();
    let status = cache::ensure_cached_with(&url, &handles, &opts, &mut on_progress, &cancel).await.map_err(fail)?;
    let mut out = match &status {
        CacheStatus::Hit { bytes, verified } => json!({ "status": "hit", "bytes": bytes, "verified": verified }),
        CacheStatus::Downloaded { bytes, resumed_from, retries } => {
            json!({ "status": "downloaded", "bytes": bytes, "resumed_from": resumed_from, "resumed": *resumed_from > 0, "retries": retries })
        }
        CacheStatus::NotCached { reason } => json!({ "status": "not_cached", "reason": error_json(reason) }),
    };
    let prepared = handles.prepare(&url).await.map_err(fail)?;
    let mut src = handles.open(&url).map_err(fail)?;
    let (bytes_read, hash) = hash_source(src.as_mut()).map_err(fail)?;
    handles.release(&url);
    out["source"] = json!(if prepared { "opfs" } else { "xhr" });
    out["bytes_read"] = json!(bytes_read);
    out["hash"] = json!(hash);
    out["progress_events"] = json!(events);
    out["progress_monotonic"] = json!(monotonic);
    out["max_unflushed"] = json!(max_unflushed);
    if let Some(p) = last {
        out["last_progress"] = json!({ "bytes": p.bytes, "total": p.total, "rate": p.rate, "eta_s": p.eta_s, "retries": p.retries, "restarts": p.restarts });
    }
    Ok(out.to_string())
}

/// The validator's value when it is an ETag (what the test's server sends).
fn etag(v: Option<&Validator>) -> Option<&str> {
    v.filter(|v| v.header == "etag").map(|v| v.value.as_str())
}

/// `XhrSource::open_with(url)` then `read_range(offset, len)`, or `read_range_async` (through
/// `fetch`) with `async: true`. `options` (JSON, optional): `timeout_ms` and `min_rate`
/// (`XhrOptions`), `async`.
#[wasm_bindgen]
pub async fn weights_probe_xhr(url: String, offset: f64, len: u32, options: Option<String>) -> Result<String, JsValue> {
    let o: Value = options.and_then(|o| serde_json::from_str(&o).ok()).unwrap_or(Value::Null);
    let mut opts = xhr::XhrOptions::default();
    opts.timeout_ms = o.get("timeout_ms").and_then(Value::as_f64).unwrap_or(opts.timeout_ms);
    opts.min_rate = o.get("min_rate").and_then(Value::as_f64).unwrap_or(opts.min_rate);
    let mut src = xhr::XhrSource::open_with(&url, opts).map_err(fail)?;
    let bytes = match o.get("async").and_then(Value::as_bool) {
        Some(true) => src.read_range_async(offset as u64, len as usize).await,
        _ => src.read_range(offset as u64, len as usize),
    }
    .map_err(fail)?;
    let mut h = js::Fnv::default();
    h.update(&bytes);
    Ok(json!({ "total": src.len(), "etag": etag(src.validator()), "len": bytes.len(), "hash": h.hex(), "retries": src.retries() }).to_string())
}

/// `read_all(url)`.
#[wasm_bindgen]
pub fn weights_probe_read_all(url: String) -> Result<String, JsValue> {
    let bytes = xhr::read_all(&url).map_err(fail)?;
    let mut h = js::Fnv::default();
    h.update(&bytes);
    Ok(json!({ "len": bytes.len(), "hash": h.hex() }).to_string())
}

/// `exists(url)`.
#[wasm_bindgen]
pub fn weights_probe_exists(url: String) -> Result<String, JsValue> {
    Ok(json!({ "exists": xhr::exists(&url).map_err(fail)? }).to_string())
}

/// `list()`.
#[wasm_bindgen]
pub async fn weights_probe_list() -> Result<String, JsValue> {
    let entries = cache::list().await.map_err(fail)?;
    let v: Vec<Value> = entries
        .iter()
        .map(|e| json!({ "url": e.url, "bytes": e.bytes, "etag": etag(e.validator.as_ref()), "validator": e.validator.as_ref().map(|v| v.to_string()), "complete": e.complete, "stored": e.stored }))
        .collect();
    Ok(Value::Array(v).to_string())
}

/// `delete(url)`.
#[wasm_bindgen]
pub async fn weights_probe_delete(url: String) -> Result<String, JsValue> {
    Ok(json!({ "existed": cache::delete(&url, &Handles::default()).await.map_err(fail)? }).to_string())
}

/// `clear()`.
#[wasm_bindgen]
pub async fn weights_probe_clear() -> Result<String, JsValue> {
    cache::clear(&Handles::default()).await.map_err(fail)?;
    Ok("{}".into())
}

/// `usage()`.
#[wasm_bindgen]
pub async fn weights_probe_usage() -> Result<String, JsValue> {
    let u = cache::usage().await.map_err(fail)?;
    Ok(json!({ "usage": u.usage, "quota": u.quota }).to_string())
}
