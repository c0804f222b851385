//! Synchronous range reads over HTTP in a Web Worker: `XMLHttpRequest` with
//! `async = false` and `responseType = "arraybuffer"` (allowed in workers only;
//! on a page's main thread the browser refuses, and that is reported as such).
//! This is the no-cache path: the loaders' `ByteSource` reads are synchronous.
//!
//! The rules are `range.rs`'s, shared with `http.rs` (native): every read is one `Range: bytes=a-b`
//! `GET` that must come back `206` with a `Content-Range` starting where we
//! asked, from the version of the file the first answer pinned (its validator
//! and size), sent to the final URL of the first answer's redirects; another
//! version is `FileChanged` (fatal). A `200` means the host ignores ranges:
//! `NoRangeSupport`. Network errors, short bodies, timeouts and 408/429/5xx are
//! retried from the last byte received; `retries` bounds the consecutive
//! attempts that bring no new byte. A worker cannot sleep without blocking, so
//! the backoff between retries is a short spin (≤ 0.8 s each).
//!
//! A synchronous XHR fires no event before its body is complete (Chromium's
//! `XMLHttpRequest::DispatchReadyStateChangeEvent` skips HEADERS_RECEIVED and
//! LOADING when not async), so a `200` with a whole 12 GB file could not be
//! refused before it is held. `open` therefore first sends a `HEAD` (with
//! `Range: bytes=0-0`; no body can come back) and reads only from a host that
//! shows it serves ranges or whose file is small (`range::check_head`). Every
//! request has a timeout (allowed on synchronous requests in workers, not on a
//! page): `timeout_ms` plus the time the asked bytes take at `min_rate`, so a
//! stalled host fails, and is retried, instead of blocking the worker and its
//! Cancel forever. No `If-Range` is sent: it is not a CORS-safelisted header (a
//! preflight that hosts such as Hugging Face's CDN do not allow), and its `200`
//! would be a whole body; the validator is compared on each answer instead.
//!
//! A network error on another origin is indistinguishable from a CORS refusal
//! (the browser hides both); once retries run out it is reported as `Cors`.
//!
//! Memory: a read holds its own bytes twice at most (the response's
//! `ArrayBuffer` and the returned `Vec`), plus the `FIRST_FETCH` head kept from
//! `open`, which serves the header parse without a second request. But the
//! renderer keeps synchronous XHRs' response buffers while a worker reads in a
//! loop (measured: its memory grows with the file, BENCHMARKS.md), so a caller
//! that awaits (a paced upload) reads through `read_range_async` instead: the
//! same requests and checks with `fetch`, which yields to the event loop, and
//! a whole-file `200` is refused from its status before any body is read.

use js_sys::{ArrayBuffer, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{AbortController, ReadableStreamDefaultReader, Response, XmlHttpRequest, XmlHttpRequestResponseType};

use super::download::{header, race, start_fetch, validator, Raced};
use super::{js, network_error, HIDDEN_HINT};
use crate::error::{Error, Result};
use crate::weights::bytes::ReadFuture;
use crate::weights::load::{ByteSource, CHUNK_BYTES, FIRST_FETCH};
use crate::weights::range::{
    check_answer, check_head, fetch_resuming, parse_content_range, read_in_head, status_fail, Asked, ContentRange,
    Fail, Failures, Pin, Validator,
};
use crate::weights::upload::now;

/// Consecutive attempts without a new byte before a read gives up.
pub const XHR_RETRIES: u32 = 3;

/// Retries and timeouts of synchronous reads.
#[derive(Clone, Copy, Debug)]
pub struct XhrOptions {
    /// Consecutive failed attempts without a new byte before giving up.
    pub retries: u32,
    /// The timeout of a request without a body; one with a body gets the time
    /// its bytes take at `min_rate` on top (an XHR's timeout covers the whole
    /// request, not one stalled read).
    pub timeout_ms: f64,
    /// Bytes per second below which a read counts as stalled.
    pub min_rate: f64,
}

impl Default for XhrOptions {
    fn default() -> Self {
        XhrOptions { retries: XHR_RETRIES, timeout_ms: 30_000.0, min_rate: 128.0 * 1024.0 }
    }
}

impl XhrOptions {
    /// The timeout of a request for `bytes` bytes.
    fn timeout_for(&self, bytes: u64) -> u32 {
        (self.timeout_ms + bytes as f64 / self.min_rate.max(1.0) * 1000.0).min(f64::from(u32::MAX)) as u32
    }
}

/// One synchronous answer.
struct Reply {
    status: u16,
    body: Vec<u8>,
    /// `Some(None)`: a header that does not parse.
    content_range: Option<Option<ContentRange>>,
    validator: Option<Validator>,
    /// The URL that answered, after redirects (`responseURL`).
    final_url: Option<String>,
    content_type: Option<String>,
    accept_ranges: Option<String>,
    content_length: Option<u64>,
}

/// One synchronous request with a timeout; `Retry` for network failures
/// (status 0) and timeouts.
fn request(method: &str, url: &str, range: Option<&str>, timeout_ms: u32) -> std::result::Result<Reply, Fail> {
    let io = |what: String| Error::Io { file: url.to_string(), message: what };
    let xhr = XmlHttpRequest::new()
        .map_err(|e| Fail::Fatal(io(format!("XMLHttpRequest is not available: {}", js::error_text(&e)))))?;
    xhr.open_with_async(method, url, false)
        .map_err(|e| Fail::Fatal(io(format!("not a valid URL ({})", js::error_text(&e)))))?;
    if let Some(r) = range {
        xhr.set_request_header("Range", r).map_err(|e| Fail::Fatal(io(js::error_text(&e))))?;
    }
    // Throws on a page's main thread (sync binary XHR is worker-only), and the
    // property setter reports that only through an exception we cannot catch
    // here, so check the scope first.
    if js::get(&js::global(), "document").is_some() {
        return Err(Fail::Fatal(io(
            "synchronous weight reads only work in a Web Worker (the engine's worker), not on the page".into(),
        )));
    }
    xhr.set_response_type(XmlHttpRequestResponseType::Arraybuffer);
    xhr.set_timeout(timeout_ms);
    if let Err(e) = xhr.send() {
        let name = js::error_name(&e);
        if name == "TimeoutError" {
            let what = format!("(no complete answer within {:.0} s) waiting for", f64::from(timeout_ms) / 1000.0);
            return Err(Fail::Retry(Error::Timeout { url: url.to_string(), what }));
        }
        return Err(Fail::Retry(network_error(url, &format!("{name} ({})", js::error_text(&e)))));
    }
    let status = xhr.status().unwrap_or(0);
    if status == 0 {
        return Err(Fail::Retry(network_error(url, "no answer")));
    }
    let header = |name: &str| xhr.get_response_header(name).ok().flatten();
    let body = match xhr.response() {
        Ok(v) if method != "HEAD" => {
            v.dyn_into::<ArrayBuffer>().map(|ab| Uint8Array::new(&ab).to_vec()).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    Ok(Reply {
        status,
        body,
        content_range: header("content-range").map(|v| parse_content_range(&v)),
        validator: Validator::from_headers(header),
        final_url: Some(xhr.response_url()).filter(|u| !u.is_empty()),
        content_type: header("content-type"),
        accept_ranges: header("accept-ranges"),
        content_length: header("content-length").and_then(|v| v.trim().parse().ok()),
    })
}

/// The asynchronous twin of `request` for a range `GET` of `want` bytes, through `fetch`: the
/// same `Reply`, the whole request bounded by `timeout_ms`; a body is read only from a `206` (a
/// `200` would be the whole file), and what is left unread is dropped (the request is aborted).
async fn request_async(url: &str, range: &str, want: u64, timeout_ms: u32) -> std::result::Result<Reply, Fail> {
    let io = |what: String| Error::Io { file: url.to_string(), message: what };
    let ctrl = AbortController::new()
        .map_err(|e| Fail::Fatal(io(format!("AbortController is not available: {}", js::error_text(&e)))))?;
    let reply = fetch_reply(url, range, want, &ctrl, f64::from(timeout_ms)).await;
    ctrl.abort();
    reply
}

async fn fetch_reply(
    url: &str,
    range: &str,
    want: u64,
    ctrl: &AbortController,
    timeout_ms: f64,
) -> std::result::Result<Reply, Fail> {
    let deadline = js::now_ms() + timeout_ms;
    let timeout = || {
        let what = format!("(no complete answer within {:.0} s) waiting for", timeout_ms / 1000.0);
        Fail::Retry(Error::Timeout { url: url.to_string(), what })
    };
    let rejected = |e: JsValue| Fail::Retry(network_error(url, &js::error_text(&e)));
    let resp: Response = match start_fetch(url, range, ctrl) {
        Ok(p) => match race(p, timeout_ms).await {
            Raced::Value(v) => v.unchecked_into(),
            Raced::Stalled => return Err(timeout()),
            Raced::Rejected(e) => return Err(rejected(e)),
        },
        Err(e) => return Err(rejected(e)),
    };
    let status = resp.status();
    // The body is copied into wasm memory chunk by chunk as it streams (small chunks the
    // browser's collector frees young), never held whole as one large ArrayBuffer, and no
    // further than the `want` bytes asked for (the request is aborted after).
    let mut body = Vec::with_capacity(usize::try_from(want).unwrap_or(usize::MAX).min(CHUNK_BYTES));
    if let Some(stream) = resp.body().filter(|_| status == 206) {
        let reader: ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
        loop {
            let step = match race(reader.read(), deadline - js::now_ms()).await {
                Raced::Value(v) => v,
                Raced::Stalled => return Err(timeout()),
                Raced::Rejected(e) => return Err(rejected(e)),
            };
            if js::get(&step, "done").and_then(|d| d.as_bool()).unwrap_or(true) {
                break;
            }
            if let Some(chunk) = js::get(&step, "value").and_then(|v| v.dyn_into::<Uint8Array>().ok()) {
                let at = body.len();
                body.resize(at + chunk.length() as usize, 0);
                chunk.copy_to(&mut body[at..]);
            }
            if body.len() as u64 >= want {
                break;
            }
        }
    }
    Ok(Reply {
        status,
        body,
        content_range: header(&resp, "content-range").map(|v| parse_content_range(&v)),
        validator: validator(&resp),
        final_url: Some(resp.url()).filter(|u| !u.is_empty()),
        content_type: header(&resp, "content-type"),
        accept_ranges: header(&resp, "accept-ranges"),
        content_length: header(&resp, "content-length").and_then(|v| v.trim().parse().ok()),
    })
}

/// Busy-waits `ms` (a worker has no synchronous sleep without SharedArrayBuffer).
fn spin(ms: f64) {
    let until = js::now_ms() + ms;
    while js::now_ms() < until {}
}

/// The wait before a retry, `failures` in a row: 200, 400, then 800 ms (100 ms
/// after an attempt that brought bytes).
fn backoff_ms(failures: u32) -> f64 {
    (100.0 * f64::from(1u32 << failures.min(3))).min(800.0)
}

/// Runs `attempt` until it succeeds, fails fatally, or fails `retries + 1` times in a row.
fn with_retries<T>(retries: u32, mut attempt: impl FnMut() -> std::result::Result<T, Fail>) -> Result<T> {
    let mut failures = Failures::new(retries);
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(Fail::Fatal(e)) => return Err(e),
            Err(Fail::Retry(e)) => match failures.failed(false) {
                Some(n) => spin(backoff_ms(n)),
                None => return Err(e),
            },
        }
    }
}

/// A weights file behind a URL, read with synchronous single-range requests.
pub struct XhrSource {
    url: String,
    len: u64,
    /// The final URL and validator of the first answers.
    pin: Pin,
    /// The file's first bytes, fetched by `open` (≤ `FIRST_FETCH`).
    head: Vec<u8>,
    opts: XhrOptions,
    retried: u64,
}

impl XhrSource {
    /// `open_with` and default options.
    pub fn open(url: &str) -> Result<XhrSource> {
        XhrSource::open_with(url, XhrOptions::default())
    }

    /// Checks with a `HEAD` that a range read cannot bring the whole file
    /// (`range::check_head`), then fetches the first `FIRST_FETCH` bytes (one
    /// request): the size (from `Content-Range`), the validator, and usually
    /// the whole header.
    pub fn open_with(url: &str, opts: XhrOptions) -> Result<XhrSource> {
        let mut src =
            XhrSource { url: url.to_string(), len: 0, pin: Pin::default(), head: Vec::new(), opts, retried: 0 };
        let head = with_retries(opts.retries, || {
            let reply = request("HEAD", url, Some("bytes=0-0"), opts.timeout_for(0))?;
            let length = reply.content_length.filter(|_| reply.status != 206);
            check_head(url, reply.status, reply.accept_ranges.as_deref(), length, FIRST_FETCH as u64)?;
            Ok(reply.final_url)
        })?;
        // Later requests skip the redirects (the validator is pinned by the first `GET`).
        src.pin.url = head;
        let (head, total) = now(src.fetch(0, FIRST_FETCH as u64, None, true))?;
        src.head = head;
        src.len = total;
        Ok(src)
    }

    /// The file's validator (`X-Linked-Etag`, `ETag` or `Last-Modified`), if the server names one.
    pub fn validator(&self) -> Option<&Validator> {
        self.pin.validator.as_ref()
    }

    /// Retries made so far (every fault recovered from counts one).
    pub fn retries(&self) -> u64 {
        self.retried
    }

    /// `len` bytes from `offset` (fewer when `total` is unknown and the file ends
    /// first), resuming after faults (`range::fetch_resuming`). Returns the
    /// bytes and the file size. `blocking`: synchronous XHRs and spun backoffs
    /// (the future never waits, so `now` runs it); else `fetch` and timers.
    async fn fetch(&mut self, offset: u64, len: u64, total: Option<u64>, blocking: bool) -> Result<(Vec<u8>, u64)> {
        let mut retried = 0u64;
        let wait = async |failures: u32| {
            retried += 1;
            if blocking {
                spin(backoff_ms(failures));
            } else {
                js::sleep(backoff_ms(failures)).await;
            }
        };
        let (url, retries) = (self.url.clone(), self.opts.retries);
        let attempt = async |start: u64, end: u64, total, out: &mut Vec<u8>| {
            let range = format!("bytes={start}-{}", end.saturating_sub(1));
            let target = self.pin.target(&self.url).to_string();
            let want = end.saturating_sub(start);
            let reply = if blocking {
                request("GET", &target, Some(&range), self.opts.timeout_for(want))?
            } else {
                request_async(&target, &range, want, self.opts.timeout_for(want)).await?
            };
            if self.pin.expired(&self.url, reply.status) {
                return Err(Fail::Retry(Error::Http { url: target, status: reply.status }));
            }
            let asked = Asked {
                url: &self.url,
                range: &range,
                start,
                total,
                validator: self.pin.validator.as_ref(),
                if_range: false,
                hidden_hint: HIDDEN_HINT,
            };
            let size = check_answer(&asked, reply.status, reply.content_range, reply.validator.as_ref())?;
            self.pin.answer(&self.url, reply.final_url, reply.validator).map_err(Fail::Fatal)?;
            let Some(size) = size else { return Ok(0) };
            let want = end.min(size).saturating_sub(start) as usize;
            out.extend_from_slice(&reply.body[..reply.body.len().min(want)]);
            Ok(size)
        };
        let r = fetch_resuming(&url, offset, len, total, retries, attempt, wait).await;
        self.retried += retried;
        r
    }
}

impl ByteSource for XhrSource {
    fn name(&self) -> &str {
        &self.url
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_range(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        if let Some(bytes) = read_in_head(&self.url, self.len, &self.head, offset, len)? {
            return Ok(bytes);
        }
        Ok(now(self.fetch(offset, len as u64, Some(self.len), true))?.0)
    }
    fn read_range_async(&mut self, offset: u64, len: usize) -> ReadFuture<'_> {
        Box::pin(async move {
            if let Some(bytes) = read_in_head(&self.url, self.len, &self.head, offset, len)? {
                return Ok(bytes);
            }
            Ok(self.fetch(offset, len as u64, Some(self.len), false).await?.0)
        })
    }
}

/// A whole small file (a config, a tokenizer), with one plain `GET` (retried on
/// network errors and 408/429/5xx). Do not use it for weights: it holds the file.
pub fn read_all(url: &str) -> Result<Vec<u8>> {
    let opts = XhrOptions::default();
    with_retries(opts.retries, || {
        // Small files: the base timeout plus 16 MiB's worth.
        let reply = request("GET", url, None, opts.timeout_for(16 << 20))?;
        match reply.status {
            200..=299 => Ok(reply.body),
            s => Err(status_fail(url, s)),
        }
    })
}

/// Whether `url` exists (a `HEAD`): 2xx → true, 404/410 → false, any other
/// status or a network/CORS failure → an error.
pub fn exists(url: &str) -> Result<bool> {
    let opts = XhrOptions::default();
    with_retries(opts.retries, || {
        let reply = request("HEAD", url, None, opts.timeout_for(0))?;
        // Static hosts with a single-page-app fallback answer any missing path with their
        // index.html; no weights, config or tokenizer file is HTML.
        let html = reply.content_type.as_deref().is_some_and(|t| t.trim_start().starts_with("text/html"));
        match reply.status {
            200..=299 => Ok(!html),
            404 | 410 => Ok(false),
            s => Err(status_fail(url, s)),
        }
    })
}
