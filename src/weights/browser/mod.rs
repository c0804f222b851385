//! Weight files in the browser (wasm32 only), for the engine's Web Worker.
//!
//! The model loaders read synchronously through `ByteSource`, so in the worker
//! every byte must be readable synchronously:
//! - `cache` (async): downloads a URL into the Origin Private File System
//!   (`iclora-cache/`) with `fetch` and a streamed body, resuming, retrying,
//!   timing out stalls, reporting progress, cancellable; keyed by URL + size + validator (`X-Linked-Etag`,
//!   `ETag` or `Last-Modified`).
//! - `opfs`: `prepare(url)` (async) opens a cached file's sync access handle;
//!   `open(url)` (sync) then returns it as a `ByteSource` (`OpfsSource`), or an
//!   `XhrSource` when the file is not cached.
//! - `xhr`: the no-cache path, synchronous `XMLHttpRequest` range reads.
//! - `probe`: `#[wasm_bindgen]` hooks for the browser test (tests/e2e/weights.mjs).
//!
//! Memory bound: a download holds one body chunk at a time (the browser's
//! stream chunk, well under `CHUNK_BYTES` = 16 MiB), written to OPFS straight
//! from the JavaScript buffer, never copied into wasm memory; reading holds the
//! loader's read (≤ `CHUNK_BYTES`) plus `FIRST_FETCH` (1 MiB) per `XhrSource`.

pub mod cache;
mod download;
mod js;
pub mod opfs;
pub mod probe;
pub mod upload_probe;
pub mod xhr;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use web_sys::AbortController;

use crate::error::Error;

pub use cache::{
    clear, delete, ensure_cached, ensure_cached_with, list, usage, CacheEntry, CacheStatus, DownloadOptions,
    StorageUsage,
};
pub use opfs::{Handles, OpfsSource};
pub use xhr::{exists, read_all, XhrSource};
// The `Content-Range` grammar, shared with the native reader.
pub use super::range::{parse_content_range, ContentRange};

/// One progress event of a download.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DownloadProgress {
    /// Bytes of the file in the cache so far (including what a resumed
    /// download already had).
    pub bytes: u64,
    /// The file's size (0 while unknown: a server that sends neither
    /// `Content-Range` nor `Content-Length`).
    pub total: u64,
    /// Bytes per second received by this call.
    pub rate: f64,
    /// Seconds left at `rate` (`None` while the rate or the size is unknown).
    pub eta_s: Option<f64>,
    /// Where this call started (> 0 when it resumed a partial file).
    pub resumed_from: u64,
    /// Faults recovered from so far (truncated or reset bodies, stalls, 5xx).
    pub retries: u32,
    /// Times the file changed on the server during this download, each of
    /// which restarted it from byte 0 (`bytes` went back to 0).
    pub restarts: u32,
    /// Bytes of the file flushed to disk so far (what a crash would keep);
    /// less than `DownloadOptions::flush_bytes` behind `bytes` between chunks.
    pub flushed: u64,
}

/// Cancels a download: `cancel()` sets a flag and aborts the request in flight
/// (its `AbortController`), so the download stops at once, keeping the partial
/// file for a later resume. Clones share the same flag.
#[derive(Clone, Default)]
pub struct Cancel(Rc<CancelInner>);

#[derive(Default)]
struct CancelInner {
    flag: Cell<bool>,
    controller: RefCell<Option<AbortController>>,
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }
    pub fn cancel(&self) {
        self.0.flag.set(true);
        if let Some(c) = self.0.controller.borrow().as_ref() {
            c.abort();
        }
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.flag.get()
    }
    /// Lets `cancel()` abort this request (replacing the previous one).
    fn attach(&self, c: &AbortController) {
        *self.0.controller.borrow_mut() = Some(c.clone());
    }
    fn detach(&self) {
        self.0.controller.borrow_mut().take();
    }
}

/// A request that got no answer: on another origin that is what a CORS refusal
/// looks like (the browser hides which), so it is reported as `Cors`.
fn network_error(url: &str, what: &str) -> Error {
    if js::is_cross_origin(url) {
        Error::Cors { url: url.to_string() }
    } else {
        Error::Io {
            file: url.to_string(),
            message: format!(
                "network error ({what}); the connection failed and retries did not help, check the network"
            ),
        }
    }
}

/// Why a `206` may seem to lack its `Content-Range` here (`range::Asked::hidden_hint`).
const HIDDEN_HINT: &str =
    " this page may read (a server on another origin must list Content-Range in Access-Control-Expose-Headers)";
