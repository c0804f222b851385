//! The weights cache in the Origin Private File System (async; the engine's
//! worker). Layout: a directory `iclora-cache/` with, per URL, `<h>.bin` (the
//! file's bytes) and `<h>.json` (`{url, bytes, validator, complete}`), where
//! `<h>` is the FNV-1a hash of the URL. An entry is valid for a URL while the
//! server still reports the same size and validator (`range::Validator`).
//!
//! The metadata is replaced atomically: the new text is written and flushed to
//! `<h>.json.tmp`, which then takes the place of `<h>.json`
//! (`FileSystemFileHandle.move()`; Chromium 156 has it in workers and it
//! replaces an existing file; where it does not, the old `<h>.json` is
//! removed first). At every
//! point of a crash one of the two holds a complete entry: readers take
//! `<h>.json`, else `<h>.json.tmp`. Without `move()` the file is rewritten in
//! place (the old behaviour: a crash mid-write loses the entry, and the file
//! is downloaded again).
//!
//! `ensure_cached` downloads with `fetch` (see `download.rs`), resuming a
//! partial file; when the storage quota runs out it deletes the partial file
//! and answers `NotCached` (the caller then streams with `XhrSource`), and so
//! it does where there is no OPFS or no sync access handle (not a worker).

use js_sys::Object;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Blob, FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions, FileSystemGetFileOptions,
    FileSystemReadWriteOptions, FileSystemRemoveOptions, FileSystemSyncAccessHandle,
};

use super::download::{remote_info, Download};
use super::{js, Cancel, DownloadProgress, Handles};
use crate::error::{Error, Result};
use crate::weights::range::Validator;

/// The cache's directory in the origin's private file system.
pub const CACHE_DIR: &str = "iclora-cache";

/// One cached file (complete or partial).
#[derive(Clone, Debug, PartialEq)]
pub struct CacheEntry {
    pub url: String,
    /// The file's size on the server (0 while unknown).
    pub bytes: u64,
    /// The version of the file these bytes are from.
    pub validator: Option<Validator>,
    /// Whether every byte is in the cache.
    pub complete: bool,
    /// Bytes stored so far.
    pub stored: u64,
}

/// What `ensure_cached` did.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheStatus {
    /// Already cached. `verified`: the server confirmed the same size and validator
    /// (false when it could not be asked, e.g. offline: the cached copy is used).
    Hit { bytes: u64, verified: bool },
    /// Downloaded now (`resumed_from` > 0 when a partial file was continued).
    Downloaded { bytes: u64, resumed_from: u64, retries: u32 },
    /// Not cached (no OPFS here, or the storage quota is full): stream the file
    /// with `XhrSource` instead, and tell the user why (`reason`'s message).
    NotCached { reason: Error },
}

/// Retries, timeouts and limits of a download.
#[derive(Clone, Debug)]
pub struct DownloadOptions {
    /// Consecutive failed attempts without a new byte before giving up.
    pub retries: u32,
    /// A request with no byte for this long is aborted and resumed.
    pub stall_ms: f64,
    /// First wait before a retry; doubled each further retry, up to `max_backoff_ms`.
    pub backoff_ms: f64,
    pub max_backoff_ms: f64,
    /// Shortest interval between progress events (the last one always comes).
    pub progress_ms: f64,
    /// A cache budget: storing more than this many bytes of one file is treated
    /// like the browser's QuotaExceededError (the e2e test uses it to exercise
    /// that path). `None`: only the browser's quota.
    pub quota_bytes: Option<u64>,
    /// The data is flushed to disk after every this many bytes (and at the end).
    pub flush_bytes: u64,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            retries: 5,
            stall_ms: 30_000.0,
            backoff_ms: 500.0,
            max_backoff_ms: 8_000.0,
            progress_ms: 100.0,
            quota_bytes: None,
            flush_bytes: 256 << 20,
        }
    }
}

/// `navigator.storage.estimate()`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StorageUsage {
    pub usage: u64,
    pub quota: u64,
}

fn io(file: &str, e: &JsValue) -> Error {
    Error::Io { file: file.to_string(), message: js::error_text(e) }
}

/// The metadata's temporary name (see the module comment).
fn tmp_name(json: &str) -> String {
    format!("{json}.tmp")
}

/// `<h>.bin` and `<h>.json` for a URL.
pub(super) fn file_names(url: &str) -> (String, String) {
    let mut h = js::Fnv::default();
    h.update(url.as_bytes());
    (format!("{}.bin", h.hex()), format!("{}.json", h.hex()))
}

/// `iclora-cache/`, or why there is none.
pub(super) async fn cache_dir() -> std::result::Result<FileSystemDirectoryHandle, String> {
    let storage = js::get(&js::global(), "navigator").and_then(|n| js::get(&n, "storage"));
    let Some(storage) = storage.filter(|s| js::get(s, "getDirectory").is_some()) else {
        return Err("this browser has no Origin Private File System (navigator.storage.getDirectory)".into());
    };
    let root = match js::call(&storage, "getDirectory", &[]) {
        Ok(p) => js::await_value(p).await,
        Err(e) => Err(e),
    };
    let root: FileSystemDirectoryHandle = root
        .map_err(|e| format!("the Origin Private File System is not available ({})", js::error_text(&e)))?
        .unchecked_into();
    let opts = FileSystemGetDirectoryOptions::new();
    opts.set_create(true);
    let dir = JsFuture::from(root.get_directory_handle_with_options(CACHE_DIR, &opts)).await;
    dir.map(JsCast::unchecked_into)
        .map_err(|e| format!("cannot create `{CACHE_DIR}` in the Origin Private File System ({})", js::error_text(&e)))
}

/// A file of `dir`; `None` when it does not exist and `create` is false.
pub(super) async fn file_handle(
    dir: &FileSystemDirectoryHandle,
    name: &str,
    create: bool,
) -> std::result::Result<Option<FileSystemFileHandle>, JsValue> {
    let opts = FileSystemGetFileOptions::new();
    opts.set_create(create);
    match JsFuture::from(dir.get_file_handle_with_options(name, &opts)).await {
        Ok(h) => Ok(Some(h.unchecked_into())),
        Err(e) if js::error_name(&e) == "NotFoundError" => Ok(None),
        Err(e) => Err(e),
    }
}

/// A file's exclusive sync access handle (workers only).
pub(super) async fn sync_handle(fh: &FileSystemFileHandle) -> std::result::Result<FileSystemSyncAccessHandle, JsValue> {
    if js::get(fh, "createSyncAccessHandle").is_none() {
        return Err(JsValue::from_str("FileSystemSyncAccessHandle is only available in a Web Worker"));
    }
    Ok(JsFuture::from(fh.create_sync_access_handle()).await?.unchecked_into())
}

/// Bytes in a file of `dir` (0 when missing).
async fn stored_len(dir: &FileSystemDirectoryHandle, name: &str) -> u64 {
    let Ok(Some(fh)) = file_handle(dir, name, false).await else { return 0 };
    JsFuture::from(fh.get_file()).await.ok().map_or(0, |f| f.unchecked_into::<Blob>().size() as u64)
}

/// The entry stored for `url` (`None` if absent, unreadable, or another URL's).
pub(super) async fn read_meta(dir: &FileSystemDirectoryHandle, url: &str) -> Option<CacheEntry> {
    let (bin, json) = file_names(url);
    let e = read_meta_file(dir, &json).await?;
    if e.url != url {
        return None;
    }
    let stored = stored_len(dir, &bin).await;
    Some(CacheEntry { stored, ..e })
}

/// The entry in `<h>.json`, else in `<h>.json.tmp` (a crash between removing
/// the one and moving the other in place; see the module comment).
async fn read_meta_file(dir: &FileSystemDirectoryHandle, json: &str) -> Option<CacheEntry> {
    match read_entry(dir, json).await {
        Some(e) => Some(e),
        None => read_entry(dir, &tmp_name(json)).await,
    }
}

async fn read_entry(dir: &FileSystemDirectoryHandle, name: &str) -> Option<CacheEntry> {
    let fh = file_handle(dir, name, false).await.ok()??;
    let file: Blob = JsFuture::from(fh.get_file()).await.ok()?.unchecked_into();
    let text = JsFuture::from(file.text()).await.ok()?.as_string()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    // Entries written before validators were kept name an `etag` only.
    let validator = match (text("validator_header"), text("validator")) {
        (Some(header), Some(value)) => Some(Validator { header, value }),
        _ => text("etag").map(|value| Validator { header: "etag".into(), value }),
    };
    Some(CacheEntry {
        url: text("url")?,
        bytes: v.get("bytes")?.as_u64()?,
        validator,
        complete: v.get("complete")?.as_bool()?,
        stored: 0,
    })
}

/// Writes `name` of `dir` whole (created if missing) and flushes it.
async fn write_file(
    dir: &FileSystemDirectoryHandle,
    name: &str,
    bytes: &[u8],
) -> std::result::Result<FileSystemFileHandle, JsValue> {
    let fh =
        file_handle(dir, name, true).await?.ok_or_else(|| JsValue::from_str("could not create the cache entry"))?;
    let h = sync_handle(&fh).await?;
    let at = FileSystemReadWriteOptions::new();
    at.set_at(0.0);
    let r =
        h.truncate_with_f64(0.0).and_then(|_| h.write_with_u8_array_and_options(bytes, &at)).and_then(|_| h.flush());
    h.close();
    r.map(|_| fh)
}

/// `fh.move(name)` (a promise); `Err` where there is no `move()`.
async fn move_to(fh: &FileSystemFileHandle, name: &str) -> std::result::Result<(), JsValue> {
    js::await_value(js::call(fh, "move", &[JsValue::from_str(name)])?).await.map(|_| ())
}

/// Replaces `<h>.json` with `e`, atomically where `move()` exists (module comment).
pub(super) async fn write_meta(dir: &FileSystemDirectoryHandle, e: &CacheEntry) -> Result<()> {
    let (_, json) = file_names(&e.url);
    let (header, value) = e.validator.as_ref().map(|v| (v.header.as_str(), v.value.as_str())).unzip();
    let text = serde_json::json!({ "url": e.url, "bytes": e.bytes, "validator_header": header, "validator": value, "complete": e.complete }).to_string();
    let fail = |err: JsValue| io(&e.url, &err);
    let tmp = tmp_name(&json);
    if js::get(&js::global(), "FileSystemFileHandle")
        .and_then(|c| js::get(&c, "prototype"))
        .and_then(|p| js::get(&p, "move"))
        .is_none()
    {
        return write_file(dir, &json, text.as_bytes()).await.map(|_| ()).map_err(fail);
    }
    let fh = write_file(dir, &tmp, text.as_bytes()).await.map_err(fail)?;
    if move_to(&fh, &json).await.is_ok() {
        return Ok(());
    }
    // `move()` that does not replace: the complete `.tmp` stands in while `<h>.json` is gone.
    remove(dir, &json, &e.url).await?;
    move_to(&fh, &json).await.map_err(fail)
}

/// Removes a file of `dir` (absent is fine).
async fn remove(dir: &FileSystemDirectoryHandle, name: &str, url: &str) -> Result<()> {
    match JsFuture::from(dir.remove_entry(name)).await {
        Ok(_) => Ok(()),
        Err(e) if js::error_name(&e) == "NotFoundError" => Ok(()),
        Err(e) => Err(Error::Io {
            file: url.to_string(),
            message: format!("cannot delete the cached file ({}); is it open in another tab?", js::error_text(&e)),
        }),
    }
}

/// `ensure_cached_with` and default options.
pub async fn ensure_cached(
    url: &str,
    handles: &Handles,
    on_progress: &mut dyn FnMut(&DownloadProgress),
    cancel: &Cancel,
) -> Result<CacheStatus> {
    ensure_cached_with(url, handles, &DownloadOptions::default(), on_progress, cancel).await
}

/// Makes sure `url` is completely in the cache: a `Hit` when it already is (and
/// the server reports the same size and ETag), else downloads it (resuming a
/// partial file). Errors: the download failed (the partial file stays for a
/// later resume), `Cancelled`, or the server's answer (404, CORS...).
pub async fn ensure_cached_with(
    url: &str,
    handles: &Handles,
    opts: &DownloadOptions,
    on_progress: &mut dyn FnMut(&DownloadProgress),
    cancel: &Cancel,
) -> Result<CacheStatus> {
    let not_cached = |why: String| CacheStatus::NotCached {
        reason: Error::Io { file: url.to_string(), message: format!("{why}; the file is streamed without caching") },
    };
    let dir = match cache_dir().await {
        Ok(d) => d,
        Err(why) => return Ok(not_cached(why)),
    };
    // A prepared read handle would lock the file.
    handles.release(url);
    let (bin, json) = file_names(url);
    let meta = read_meta(&dir, url).await;
    if let Some(m) = meta.as_ref().filter(|m| m.complete && m.stored == m.bytes) {
        match remote_info(url, opts, cancel).await {
            Ok((size, validator)) if size == Some(m.bytes) && validator == m.validator => {
                return Ok(CacheStatus::Hit { bytes: m.bytes, verified: true })
            }
            Ok(_) => {} // changed on the server: download again
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            // Offline or the host is down: the cached copy is what we have.
            Err(_) => return Ok(CacheStatus::Hit { bytes: m.bytes, verified: false }),
        }
    }
    let fh = match file_handle(&dir, &bin, true).await {
        Ok(Some(fh)) => fh,
        Ok(None) => return Ok(not_cached("the cache file could not be created".into())),
        Err(e) => return Ok(not_cached(format!("the cache file could not be created ({})", js::error_text(&e)))),
    };
    let handle = match sync_handle(&fh).await {
        Ok(h) => h,
        Err(e) if js::error_name(&e) == "NoModificationAllowedError" => {
            return Err(Error::Io { file: url.to_string(), message: "the cached file is in use (being downloaded or read elsewhere, e.g. in another tab); wait for it or close the other tab".into() })
        }
        Err(e) => return Ok(not_cached(format!("the cache file cannot be written here ({})", js::error_text(&e)))),
    };
    // Resume only a partial file of the same URL whose size and validator are known.
    let resume = meta.filter(|m| !m.complete && m.bytes > 0);
    let mut dl = Download::new(url, opts, cancel, on_progress, &dir, handle, resume);
    let result = dl.run().await;
    let handle = dl.finish();
    match result {
        Ok((bytes, validator, resumed_from, retries)) => {
            let r = handle.flush();
            handle.close();
            r.map_err(|e| io(url, &e))?;
            write_meta(&dir, &CacheEntry { url: url.to_string(), bytes, validator, complete: true, stored: bytes })
                .await?;
            Ok(CacheStatus::Downloaded { bytes, resumed_from, retries })
        }
        Err(Error::Quota { needed, .. }) => {
            handle.close();
            remove(&dir, &bin, url).await?;
            remove(&dir, &json, url).await?;
            remove(&dir, &tmp_name(&json), url).await?;
            let available = usage().await.map_or(0, |u| u.quota.saturating_sub(u.usage));
            let available = opts.quota_bytes.map_or(available, |q| q.min(available));
            Ok(CacheStatus::NotCached { reason: Error::Quota { url: url.to_string(), needed, available } })
        }
        Err(e) => {
            let _ = handle.flush();
            handle.close();
            Err(e)
        }
    }
}

/// Every entry of the cache (none where there is no OPFS).
pub async fn list() -> Result<Vec<CacheEntry>> {
    let Ok(dir) = cache_dir().await else { return Ok(Vec::new()) };
    let keys = dir.keys();
    let mut out = Vec::new();
    loop {
        let next = keys.next().map_err(|e| io(CACHE_DIR, &e))?;
        let step = JsFuture::from(next).await.map_err(|e| io(CACHE_DIR, &e))?;
        if js::get(&step, "done").and_then(|d| d.as_bool()).unwrap_or(true) {
            break;
        }
        let Some(name) = js::get(&step, "value").and_then(|v| v.as_string()) else { continue };
        // `<h>.json`, or a `<h>.json.tmp` standing in for it.
        let Some(json) = name.strip_suffix(".tmp").unwrap_or(&name).strip_suffix(".json").map(|h| format!("{h}.json"))
        else {
            continue;
        };
        if let Some(e) = read_meta_file(&dir, &json).await {
            let stored = stored_len(&dir, &file_names(&e.url).0).await;
            out.push(CacheEntry { stored, ..e });
        }
    }
    out.sort_by(|a, b| a.url.cmp(&b.url));
    out.dedup_by(|a, b| a.url == b.url);
    Ok(out)
}

/// Deletes `url`'s entry (closing a prepared handle on it); `Ok(false)` if there was none.
pub async fn delete(url: &str, handles: &Handles) -> Result<bool> {
    let Ok(dir) = cache_dir().await else { return Ok(false) };
    handles.release(url);
    let (bin, json) = file_names(url);
    let existed = file_handle(&dir, &json, false).await.ok().flatten().is_some()
        || file_handle(&dir, &bin, false).await.ok().flatten().is_some();
    remove(&dir, &bin, url).await?;
    remove(&dir, &json, url).await?;
    remove(&dir, &tmp_name(&json), url).await?;
    Ok(existed)
}

/// Deletes the whole cache (closing every prepared handle first).
pub async fn clear(handles: &Handles) -> Result<()> {
    handles.release_all();
    let storage = js::get(&js::global(), "navigator").and_then(|n| js::get(&n, "storage"));
    let Some(storage) = storage.filter(|s| js::get(s, "getDirectory").is_some()) else { return Ok(()) };
    let root = js::call(&storage, "getDirectory", &[]).map_err(|e| io(CACHE_DIR, &e))?;
    let root: FileSystemDirectoryHandle = js::await_value(root).await.map_err(|e| io(CACHE_DIR, &e))?.unchecked_into();
    let opts = FileSystemRemoveOptions::new();
    opts.set_recursive(true);
    match JsFuture::from(root.remove_entry_with_options(CACHE_DIR, &opts)).await {
        Ok(_) => Ok(()),
        Err(e) if js::error_name(&e) == "NotFoundError" => Ok(()),
        Err(e) => Err(io(CACHE_DIR, &e)),
    }
}

/// The origin's storage use and quota (`navigator.storage.estimate()`).
pub async fn usage() -> Result<StorageUsage> {
    let storage = js::get(&js::global(), "navigator").and_then(|n| js::get(&n, "storage"));
    let fail = |e: JsValue| io("navigator.storage", &e);
    let storage = storage.ok_or_else(|| fail(JsValue::from_str("navigator.storage is not available")))?;
    let est: Object =
        js::await_value(js::call(&storage, "estimate", &[]).map_err(fail)?).await.map_err(fail)?.unchecked_into();
    let num = |k: &str| js::get(&est, k).and_then(|v| v.as_f64()).unwrap_or(0.0) as u64;
    Ok(StorageUsage { usage: num("usage"), quota: num("quota") })
}
