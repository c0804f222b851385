//! One file's download into the OPFS cache: `fetch` with `Range: bytes=N-`,
//! the streamed body written chunk by chunk at its offset through the file's
//! sync access handle (straight from the JavaScript buffer).
//!
//! Faults (the rules of `http.rs`): a body that ends early or breaks, a stall
//! (no byte for `stall_ms`: the request is aborted through its
//! `AbortController`), and 408/429/5xx answers are retried from the last byte
//! written, with exponential backoff; `retries` bounds the consecutive
//! attempts that bring no new byte. Every `206` must start where we asked; a
//! different size or ETag than the partial file's means the file changed on
//! the server, so the download starts again from byte 0. A host that ignores
//! ranges (`200`) is downloaded whole from byte 0 (no resume there).

use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AbortController, FileSystemDirectoryHandle, FileSystemReadWriteOptions, FileSystemSyncAccessHandle, Headers, ReadableStreamDefaultReader,
    RequestCache, RequestInit, Response,
};

use super::cache::{write_meta, CacheEntry, DownloadOptions};
use super::{js, network_error, Cancel, DownloadProgress, HIDDEN_HINT};
use crate::error::{Error, Result};
use crate::weights::range::{check_partial, parse_content_range, status_fail, Asked, Fail, Failures};

const STALL: &str = "iclora-stall";

enum Raced {
    Value(JsValue),
    Stalled,
    Rejected(JsValue),
}

/// `p`, or `Stalled` when it does not settle within `ms`.
async fn race(p: Promise, ms: f64) -> Raced {
    let (t, id) = js::timer(ms, STALL);
    let r = JsFuture::from(Promise::race(&Array::of2(&p, &t))).await;
    js::clear_timer(&id);
    match r {
        Ok(v) if v.as_string().as_deref() == Some(STALL) => Raced::Stalled,
        Ok(v) => Raced::Value(v),
        Err(e) => Raced::Rejected(e),
    }
}

/// Starts `GET url` with a `Range` header and an abort signal.
fn start_fetch(url: &str, range: &str, ctrl: &AbortController) -> std::result::Result<Promise, JsValue> {
    let headers = Headers::new()?;
    headers.set("Range", range)?;
    let init = RequestInit::new();
    init.set_method("GET");
    init.set_headers(&headers);
    init.set_signal(Some(&ctrl.signal()));
    // Partial answers must come from the server, not from a half-filled HTTP cache entry.
    init.set_cache(RequestCache::NoStore);
    Ok(js::call(&js::global(), "fetch", &[JsValue::from_str(url), init.into()])?.unchecked_into())
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers().get(name).ok().flatten()
}

/// The size and ETag the server reports now (one `Range: bytes=0-0` request,
/// aborted once the headers arrive), for checking a cached copy.
pub(super) async fn remote_info(url: &str, opts: &DownloadOptions, cancel: &Cancel) -> Result<(Option<u64>, Option<String>)> {
    let ctrl = AbortController::new().map_err(|e| Error::Io { file: url.into(), message: js::error_text(&e) })?;
    cancel.attach(&ctrl);
    let raced = match start_fetch(url, "bytes=0-0", &ctrl) {
        Ok(p) => race(p, opts.stall_ms).await,
        Err(e) => Raced::Rejected(e),
    };
    ctrl.abort();
    cancel.detach();
    let resp: Response = match raced {
        _ if cancel.is_cancelled() => return Err(Error::Cancelled),
        Raced::Value(v) => v.unchecked_into(),
        Raced::Stalled => return Err(Error::Timeout { url: url.into(), what: "waiting for an answer from".into() }),
        Raced::Rejected(e) => return Err(network_error(url, &js::error_text(&e))),
    };
    let etag = header(&resp, "etag");
    match resp.status() {
        206 => Ok((header(&resp, "content-range").and_then(|v| parse_content_range(&v)).map(|(_, size)| size), etag)),
        200 => Ok((header(&resp, "content-length").and_then(|v| v.trim().parse().ok()), etag)),
        status => Err(Error::Http { url: url.into(), status }),
    }
}

/// The state of one download.
pub(super) struct Download<'a> {
    url: &'a str,
    opts: &'a DownloadOptions,
    cancel: &'a Cancel,
    on_progress: &'a mut dyn FnMut(&DownloadProgress),
    dir: &'a FileSystemDirectoryHandle,
    handle: FileSystemSyncAccessHandle,
    /// Bytes in the file so far.
    pos: u64,
    total: Option<u64>,
    etag: Option<String>,
    /// What the metadata file says (to rewrite it only on a change).
    written: Option<(Option<u64>, Option<String>)>,
    resumed_from: u64,
    retries: u32,
    /// Whether any request got an HTTP answer (else a failure may be CORS).
    answered: bool,
    started_ms: f64,
    received: u64,
    last_event_ms: f64,
}

impl<'a> Download<'a> {
    /// Continues `resume` (a partial entry of the same URL) when its bytes are
    /// plausible, else starts with an empty file.
    pub(super) fn new(
        url: &'a str,
        opts: &'a DownloadOptions,
        cancel: &'a Cancel,
        on_progress: &'a mut dyn FnMut(&DownloadProgress),
        dir: &'a FileSystemDirectoryHandle,
        handle: FileSystemSyncAccessHandle,
        resume: Option<CacheEntry>,
    ) -> Download<'a> {
        let size = handle.get_size().map_or(0, |s| s as u64);
        let resume = resume.filter(|m| size <= m.bytes);
        let mut d = Download {
            url,
            opts,
            cancel,
            on_progress,
            dir,
            handle,
            pos: 0,
            total: None,
            etag: None,
            written: None,
            resumed_from: 0,
            retries: 0,
            answered: false,
            started_ms: js::now_ms(),
            received: 0,
            last_event_ms: 0.0,
        };
        match resume {
            Some(m) => {
                d.written = Some((Some(m.bytes), m.etag.clone()));
                (d.pos, d.total, d.etag, d.resumed_from) = (size, Some(m.bytes), m.etag, size);
            }
            None => {
                let _ = d.handle.truncate_with_f64(0.0);
            }
        }
        d
    }

    /// The sync handle back (the caller flushes and closes it).
    pub(super) fn finish(self) -> FileSystemSyncAccessHandle {
        self.handle
    }

    /// Downloads the rest; returns `(size, etag, resumed_from, retries)`.
    pub(super) async fn run(&mut self) -> Result<(u64, Option<String>, u64, u32)> {
        let mut failures = Failures::new(self.opts.retries);
        loop {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let before = self.pos;
            let last = match self.attempt().await {
                Ok(()) => {
                    self.progress(true);
                    return Ok((self.pos, self.etag.clone(), self.resumed_from, self.retries));
                }
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::Retry(e)) => e,
            };
            let Some(failures) = failures.failed(self.pos > before) else { return Err(last) };
            self.retries += 1;
            let wait = self.opts.backoff_ms * f64::from(1u32 << failures.saturating_sub(1).min(16));
            js::sleep(wait.min(self.opts.max_backoff_ms)).await;
        }
    }

    /// One request, from `pos` to the end of the file.
    async fn attempt(&mut self) -> std::result::Result<(), Fail> {
        let ctrl = AbortController::new().map_err(|e| Fail::Fatal(self.io(js::error_text(&e))))?;
        self.cancel.attach(&ctrl);
        let r = self.attempt_with(&ctrl).await;
        // Drops a body we stopped reading (a stall, a refused answer).
        ctrl.abort();
        self.cancel.detach();
        r
    }

    async fn attempt_with(&mut self, ctrl: &AbortController) -> std::result::Result<(), Fail> {
        let range = format!("bytes={}-", self.pos);
        let raced = match start_fetch(self.url, &range, ctrl) {
            Ok(p) => race(p, self.opts.stall_ms).await,
            Err(e) => Raced::Rejected(e),
        };
        let resp: Response = match raced {
            Raced::Value(v) => v.unchecked_into(),
            Raced::Stalled => return Err(Fail::Retry(Error::Timeout { url: self.url.into(), what: "waiting for an answer from".into() })),
            Raced::Rejected(e) => return Err(self.rejected(&e)),
        };
        self.answered = true;
        let etag = header(&resp, "etag");
        let content_range = header(&resp, "content-range").map(|v| parse_content_range(&v));
        match resp.status() {
            206 => {
                // A changed size or ETag restarts the download (below) rather than failing.
                let asked = Asked { url: self.url, range: &range, start: self.pos, total: None, etag: None, hidden_hint: HIDDEN_HINT };
                let size = check_partial(&asked, content_range, None)?;
                if self.pos > 0 && (self.total != Some(size) || (etag.is_some() && self.etag.is_some() && etag != self.etag)) {
                    return Err(self.restart("the file changed on the server since the partial download; starting again"));
                }
                (self.total, self.etag) = (Some(size), etag);
            }
            // The host ignores ranges: this body is the whole file.
            200 => {
                if self.pos > 0 {
                    let _ = self.restart("");
                }
                let length = header(&resp, "content-length").and_then(|v| v.trim().parse().ok());
                // A compressed body's length is not the file's.
                let length = length.filter(|_| header(&resp, "content-encoding").is_none_or(|e| e == "identity"));
                (self.total, self.etag) = (length, etag);
            }
            // Nothing after `pos`: complete if the size still matches.
            416 => {
                if matches!(content_range, Some(Some((None, size))) if Some(size) == self.total && size == self.pos) {
                    return Ok(());
                }
                return Err(self.restart("the server refused the range (416): the file changed; starting again"));
            }
            status => return Err(status_fail(self.url, status)),
        }
        if self.written != Some((self.total, self.etag.clone())) {
            let meta = CacheEntry { url: self.url.into(), bytes: self.total.unwrap_or(0), etag: self.etag.clone(), complete: false, stored: self.pos };
            write_meta(self.dir, &meta).await.map_err(Fail::Fatal)?;
            self.written = Some((self.total, self.etag.clone()));
        }
        if let Some(body) = resp.body() {
            let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
            self.read_body(&reader).await?;
        }
        match self.total {
            Some(t) if self.pos == t => Ok(()),
            Some(t) if self.pos > t => Err(Fail::Fatal(self.io(format!("the server sent {} bytes of a {t}-byte file", self.pos)))),
            Some(t) => Err(Fail::Retry(self.io(format!("the body ended after {} of {t} bytes; retries did not help", self.pos)))),
            None => {
                self.total = Some(self.pos);
                Ok(())
            }
        }
    }

    /// Writes the body's chunks at `pos` until it ends.
    async fn read_body(&mut self, reader: &ReadableStreamDefaultReader) -> std::result::Result<(), Fail> {
        loop {
            let step = match race(reader.read(), self.opts.stall_ms).await {
                Raced::Value(v) => v,
                Raced::Stalled => {
                    let _ = reader.cancel();
                    let what = format!("(no data for {:.0} s after {} bytes) reading", self.opts.stall_ms / 1000.0, self.pos);
                    return Err(Fail::Retry(Error::Timeout { url: self.url.into(), what }));
                }
                Raced::Rejected(e) => return Err(self.rejected(&e)),
            };
            if js::get(&step, "done").and_then(|d| d.as_bool()).unwrap_or(true) {
                return Ok(());
            }
            let Some(chunk) = js::get(&step, "value").and_then(|v| v.dyn_into::<Uint8Array>().ok()) else { continue };
            self.write(&chunk)?;
        }
    }

    fn write(&mut self, chunk: &Uint8Array) -> std::result::Result<(), Fail> {
        let n = u64::from(chunk.length());
        let needed = self.total.unwrap_or(self.pos + n);
        let quota = Fail::Fatal(Error::Quota { url: self.url.into(), needed, available: 0 });
        if self.opts.quota_bytes.is_some_and(|q| self.pos + n > q) {
            return Err(quota);
        }
        let at = FileSystemReadWriteOptions::new();
        at.set_at(self.pos as f64);
        match self.handle.write_with_js_u8_array_and_options(chunk, &at) {
            Ok(w) if w as u64 == n => {}
            Ok(w) => return Err(Fail::Fatal(self.io(format!("the cache wrote {w} of {n} bytes at {}", self.pos)))),
            Err(e) if js::error_name(&e) == "QuotaExceededError" => return Err(quota),
            Err(e) => return Err(Fail::Fatal(self.io(format!("writing the cache failed: {}", js::error_text(&e))))),
        }
        self.pos += n;
        self.received += n;
        self.progress(false);
        Ok(())
    }

    /// Empties the file; the next attempt starts from byte 0.
    fn restart(&mut self, why: &str) -> Fail {
        if let Err(e) = self.handle.truncate_with_f64(0.0) {
            return Fail::Fatal(self.io(format!("cannot empty the cache file: {}", js::error_text(&e))));
        }
        (self.pos, self.total, self.etag, self.resumed_from) = (0, None, None, 0);
        Fail::Retry(self.io(why.to_string()))
    }

    /// A rejected `fetch` or body read.
    fn rejected(&self, e: &JsValue) -> Fail {
        if self.cancel.is_cancelled() {
            return Fail::Fatal(Error::Cancelled);
        }
        if !self.answered {
            return Fail::Retry(network_error(self.url, &js::error_text(e)));
        }
        Fail::Retry(self.io(format!("the connection broke at byte {} ({}); retries did not help", self.pos, js::error_text(e))))
    }

    fn progress(&mut self, last: bool) {
        let now = js::now_ms();
        if !last && now - self.last_event_ms < self.opts.progress_ms {
            return;
        }
        self.last_event_ms = now;
        let rate = self.received as f64 / ((now - self.started_ms) / 1000.0).max(1e-3);
        let total = self.total.unwrap_or(0);
        let eta_s = (rate > 0.0 && total > 0).then(|| total.saturating_sub(self.pos) as f64 / rate);
        let p = DownloadProgress { bytes: self.pos, total, rate, eta_s, resumed_from: self.resumed_from, retries: self.retries };
        (self.on_progress)(&p);
    }

    fn io(&self, message: String) -> Error {
        Error::Io { file: self.url.into(), message }
    }
}
