//! One file's download into the OPFS cache: `fetch` with `Range: bytes=N-`,
//! the streamed body written chunk by chunk at its offset through the file's
//! sync access handle (straight from the JavaScript buffer).
//!
//! Faults (the rules of `range.rs`): a body that ends early or breaks, a stall
//! (no byte for `stall_ms`: the request is aborted through its
//! `AbortController`), and 408/429/5xx answers are retried from the last byte
//! written, with exponential backoff; `retries` bounds the consecutive
//! attempts that bring no new byte. A host that ignores ranges (`200`) is
//! downloaded whole from byte 0 (no resume there): the body goes to disk.
//!
//! One version per file: the first answer pins the validator (`X-Linked-Etag`,
//! else `ETag`, else `Last-Modified`; stored in the metadata for a later
//! resume) and the final URL after redirects, where resumes after a fault go.
//! Every `206` must start where we asked, with the pinned size and validator
//! (`range::same_version`); otherwise the file changed on the server, and the
//! download starts again from byte 0 (counted in `DownloadProgress::restarts`,
//! the reason logged). A partial file whose metadata has no validator is not
//! resumed (nothing could tell its bytes from a newer version's). No
//! `If-Range` is sent: it is not a CORS-safelisted header, and Hugging Face's
//! CDN does not allow it in a preflight; the answer's validator is compared
//! instead, before any of its bytes are written.
//!
//! The data is flushed every `flush_bytes` (256 MiB), so a crash or a killed
//! tab loses at most that much of a partial file.

use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AbortController, FileSystemDirectoryHandle, FileSystemReadWriteOptions, FileSystemSyncAccessHandle, Headers,
    ReadableStreamDefaultReader, RequestCache, RequestInit, Response,
};

use super::cache::{write_meta, CacheEntry, DownloadOptions};
use super::{js, network_error, Cancel, DownloadProgress, HIDDEN_HINT};
use crate::error::{Error, Result};
use crate::weights::range::{
    check_partial, parse_content_range, same_version, status_fail, Asked, Fail, Failures, Pin, Validator,
};

const STALL: &str = "iclora-stall";

pub(super) enum Raced {
    Value(JsValue),
    Stalled,
    Rejected(JsValue),
}

/// `p`, or `Stalled` when it does not settle within `ms`.
pub(super) async fn race(p: Promise, ms: f64) -> Raced {
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
pub(super) fn start_fetch(url: &str, range: &str, ctrl: &AbortController) -> std::result::Result<Promise, JsValue> {
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

pub(super) fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers().get(name).ok().flatten()
}

pub(super) fn validator(resp: &Response) -> Option<Validator> {
    Validator::from_headers(|h| header(resp, h))
}

/// The size and validator the server reports now (one `Range: bytes=0-0`
/// request, aborted once the headers arrive), for checking a cached copy.
pub(super) async fn remote_info(
    url: &str,
    opts: &DownloadOptions,
    cancel: &Cancel,
) -> Result<(Option<u64>, Option<Validator>)> {
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
    let v = validator(&resp);
    match resp.status() {
        206 => Ok((header(&resp, "content-range").and_then(|v| parse_content_range(&v)).map(|(_, size)| size), v)),
        200 => Ok((header(&resp, "content-length").and_then(|v| v.trim().parse().ok()), v)),
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
    /// The final URL and the validator (pinned by the first answer, or the
    /// partial file's metadata).
    pin: Pin,
    /// What the metadata file says (to rewrite it only on a change).
    written: Option<(Option<u64>, Option<Validator>)>,
    resumed_from: u64,
    retries: u32,
    /// Restarts from byte 0 because the file changed on the server.
    restarts: u32,
    /// Bytes of the file flushed to disk (what a crash keeps).
    flushed: u64,
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
        if resume.as_ref().is_some_and(|m| m.validator.is_none() && size > 0) {
            web_sys::console::warn_1(&format!("{url}: the partial download has no validator (ETag or Last-Modified) to prove the server still has the same file; starting again from the first byte").into());
        }
        let resume = resume.filter(|m| m.validator.is_some());
        let mut d = Download {
            url,
            opts,
            cancel,
            on_progress,
            dir,
            handle,
            pos: 0,
            total: None,
            pin: Pin::default(),
            written: None,
            resumed_from: 0,
            retries: 0,
            restarts: 0,
            flushed: 0,
            answered: false,
            started_ms: js::now_ms(),
            received: 0,
            last_event_ms: 0.0,
        };
        match resume {
            Some(m) => {
                d.written = Some((Some(m.bytes), m.validator.clone()));
                (d.pos, d.total, d.resumed_from, d.flushed) = (size, Some(m.bytes), size, size);
                (d.pin.validator, d.pin.pinned) = (m.validator, true);
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

    /// Downloads the rest; returns `(size, validator, resumed_from, retries)`.
    pub(super) async fn run(&mut self) -> Result<(u64, Option<Validator>, u64, u32)> {
        let mut failures = Failures::new(self.opts.retries);
        loop {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let before = self.pos;
            let last = match self.attempt().await {
                Ok(()) => {
                    self.progress(true);
                    return Ok((self.pos, self.pin.validator.clone(), self.resumed_from, self.retries));
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
        let target = self.pin.target(self.url).to_string();
        let raced = match start_fetch(&target, &range, ctrl) {
            Ok(p) => race(p, self.opts.stall_ms).await,
            Err(e) => Raced::Rejected(e),
        };
        let resp: Response = match raced {
            Raced::Value(v) => v.unchecked_into(),
            Raced::Stalled => {
                return Err(Fail::Retry(Error::Timeout {
                    url: self.url.into(),
                    what: "waiting for an answer from".into(),
                }))
            }
            Raced::Rejected(e) => return Err(self.rejected(&e)),
        };
        self.answered = true;
        if self.pin.expired(self.url, resp.status()) {
            return Err(Fail::Retry(Error::Http { url: target, status: resp.status() }));
        }
        let now = validator(&resp);
        let final_url = Some(resp.url()).filter(|u| !u.is_empty());
        let content_range = header(&resp, "content-range").map(|v| parse_content_range(&v));
        match resp.status() {
            206 => {
                // A changed size or validator restarts the download (below) rather than failing.
                let asked = Asked {
                    url: self.url,
                    range: &range,
                    start: self.pos,
                    total: None,
                    validator: None,
                    if_range: false,
                    hidden_hint: HIDDEN_HINT,
                };
                let size = check_partial(&asked, content_range, None)?;
                if self.pos > 0 {
                    if let Err(changed) =
                        same_version(self.url, self.total, size, self.pin.validator.as_ref(), now.as_ref())
                    {
                        return Err(self.restart(changed));
                    }
                }
                self.total = Some(size);
            }
            // The host ignores ranges: this body is the whole file.
            200 => {
                if self.pos > 0 {
                    let why = Error::Io {
                        file: self.url.into(),
                        message: "the server sent the whole file instead of the rest".into(),
                    };
                    let _ = self.restart(why);
                }
                let length = header(&resp, "content-length").and_then(|v| v.trim().parse().ok());
                // A compressed body's length is not the file's.
                self.total = length.filter(|_| header(&resp, "content-encoding").is_none_or(|e| e == "identity"));
            }
            // Nothing after `pos`: complete if the size still matches.
            416 => {
                if matches!(content_range, Some(Some((None, size))) if Some(size) == self.total && size == self.pos) {
                    return Ok(());
                }
                let what = "the server refused the range (416)".to_string();
                return Err(self.restart(Error::FileChanged { url: self.url.into(), what }));
            }
            status => return Err(status_fail(self.url, status)),
        }
        // Byte 0 of this version: pin it (after a restart too); later answers were checked above.
        if self.pos == 0 {
            (self.pin.validator, self.pin.pinned) = (now, true);
        }
        if final_url.is_some() {
            self.pin.url = final_url;
        }
        if self.written != Some((self.total, self.pin.validator.clone())) {
            let meta = CacheEntry {
                url: self.url.into(),
                bytes: self.total.unwrap_or(0),
                validator: self.pin.validator.clone(),
                complete: false,
                stored: self.pos,
            };
            write_meta(self.dir, &meta).await.map_err(Fail::Fatal)?;
            self.written = Some((self.total, self.pin.validator.clone()));
        }
        if let Some(body) = resp.body() {
            let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
            self.read_body(&reader).await?;
        }
        match self.total {
            Some(t) if self.pos == t => Ok(()),
            Some(t) if self.pos > t => {
                Err(Fail::Fatal(self.io(format!("the server sent {} bytes of a {t}-byte file", self.pos))))
            }
            Some(t) => Err(Fail::Retry(
                self.io(format!("the body ended after {} of {t} bytes; retries did not help", self.pos)),
            )),
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
                    let what =
                        format!("(no data for {:.0} s after {} bytes) reading", self.opts.stall_ms / 1000.0, self.pos);
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
        if self.pos - self.flushed >= self.opts.flush_bytes {
            self.handle
                .flush()
                .map_err(|e| Fail::Fatal(self.io(format!("flushing the cache failed: {}", js::error_text(&e)))))?;
            self.flushed = self.pos;
        }
        self.progress(false);
        Ok(())
    }

    /// Empties the file and forgets the pinned version (the next attempt
    /// starts from byte 0 at the original URL); logs `why` and reports the
    /// restart in the progress (`restarts` counts those of a changed file).
    fn restart(&mut self, why: Error) -> Fail {
        if let Err(e) = self.handle.truncate_with_f64(0.0) {
            return Fail::Fatal(self.io(format!("cannot empty the cache file: {}", js::error_text(&e))));
        }
        web_sys::console::warn_1(&format!("{why}; downloading it again from the first byte").into());
        (self.pos, self.total, self.pin, self.resumed_from, self.flushed) = (0, None, Pin::default(), 0, 0);
        // A host that ignores ranges is not a new version of the file.
        self.restarts += u32::from(matches!(why, Error::FileChanged { .. }));
        self.progress(true);
        Fail::Retry(why)
    }

    /// A rejected `fetch` or body read.
    fn rejected(&self, e: &JsValue) -> Fail {
        if self.cancel.is_cancelled() {
            return Fail::Fatal(Error::Cancelled);
        }
        if !self.answered {
            return Fail::Retry(network_error(self.url, &js::error_text(e)));
        }
        Fail::Retry(self.io(format!(
            "the connection broke at byte {} ({}); retries did not help",
            self.pos,
            js::error_text(e)
        )))
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
        let p = DownloadProgress {
            bytes: self.pos,
            total,
            rate,
            eta_s,
            resumed_from: self.resumed_from,
            retries: self.retries,
            restarts: self.restarts,
            flushed: self.flushed,
        };
        (self.on_progress)(&p);
    }

    fn io(&self, message: String) -> Error {
        Error::Io { file: self.url.into(), message }
    }
}
