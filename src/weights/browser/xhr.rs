//! Synchronous range reads over HTTP in a Web Worker: `XMLHttpRequest` with
//! `async = false` and `responseType = "arraybuffer"` (allowed in workers only;
//! on a page's main thread the browser refuses, and that is reported as such).
//! This is the no-cache path: the loaders' `ByteSource` reads are synchronous.
//!
//! The rules are `range.rs`'s, shared with `http.rs` (native): every read is one `Range: bytes=a-b`
//! `GET` that must come back `206` with a `Content-Range` starting where we
//! asked and naming the same total size (and the same `ETag`, when the server
//! sends one), else the file changed on the server (fatal). A `200` means the
//! host ignores ranges: `NoRangeSupport`. Network errors, short bodies and
//! 408/429/5xx are retried from the last byte received; `retries` bounds the
//! consecutive attempts that bring no new byte. A worker cannot sleep without
//! blocking, so the backoff between retries is a short spin (≤ 0.8 s each).
//!
//! A network error on another origin is indistinguishable from a CORS refusal
//! (the browser hides both); once retries run out it is reported as `Cors`.
//!
//! Memory: a read holds its own bytes twice at most (the response's
//! `ArrayBuffer` and the returned `Vec`), plus the `FIRST_FETCH` head kept from
//! `open`, which serves the header parse without a second request.

use js_sys::{ArrayBuffer, Uint8Array};
use wasm_bindgen::JsCast;
use web_sys::{XmlHttpRequest, XmlHttpRequestResponseType};

use super::{js, network_error, HIDDEN_HINT};
use crate::error::{Error, Result};
use crate::weights::load::{ByteSource, FIRST_FETCH};
use crate::weights::range::{check_answer, fetch_resuming, parse_content_range, read_in_head, status_fail, Asked, ContentRange, Fail, Failures};

/// Consecutive attempts without a new byte before a read gives up.
pub const XHR_RETRIES: u32 = 3;

/// One synchronous answer.
struct Reply {
    status: u16,
    body: Vec<u8>,
    /// `Some(None)`: a header that does not parse.
    content_range: Option<Option<ContentRange>>,
    etag: Option<String>,
    content_type: Option<String>,
}

/// One synchronous request; `Retry` for network failures (status 0).
fn request(method: &str, url: &str, range: Option<&str>) -> std::result::Result<Reply, Fail> {
    let io = |what: String| Error::Io { file: url.to_string(), message: what };
    let xhr = XmlHttpRequest::new().map_err(|e| Fail::Fatal(io(format!("XMLHttpRequest is not available: {}", js::error_text(&e)))))?;
    xhr.open_with_async(method, url, false).map_err(|e| Fail::Fatal(io(format!("not a valid URL ({})", js::error_text(&e)))))?;
    if let Some(r) = range {
        xhr.set_request_header("Range", r).map_err(|e| Fail::Fatal(io(js::error_text(&e))))?;
    }
    // Throws on a page's main thread (sync binary XHR is worker-only), and the
    // property setter reports that only through an exception we cannot catch
    // here, so check the scope first.
    if js::get(&js::global(), "document").is_some() {
        return Err(Fail::Fatal(io("synchronous weight reads only work in a Web Worker (the engine's worker), not on the page".into())));
    }
    xhr.set_response_type(XmlHttpRequestResponseType::Arraybuffer);
    if let Err(e) = xhr.send() {
        let name = js::error_name(&e);
        return Err(Fail::Retry(network_error(url, &format!("{name} ({})", js::error_text(&e)))));
    }
    let status = xhr.status().unwrap_or(0);
    if status == 0 {
        return Err(Fail::Retry(network_error(url, "no answer")));
    }
    let header = |name: &str| xhr.get_response_header(name).ok().flatten();
    let body = match xhr.response() {
        Ok(v) if method != "HEAD" => v.dyn_into::<ArrayBuffer>().map(|ab| Uint8Array::new(&ab).to_vec()).unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(Reply { status, body, content_range: header("content-range").map(|v| parse_content_range(&v)), etag: header("etag"), content_type: header("content-type") })
}

/// Busy-waits `ms` (a worker has no synchronous sleep without SharedArrayBuffer).
fn spin(ms: f64) {
    let until = js::now_ms() + ms;
    while js::now_ms() < until {}
}

/// The wait before a retry, `failures` in a row: 200, 400, then 800 ms (100 ms
/// after an attempt that brought bytes).
fn backoff(failures: u32) {
    spin((100.0 * f64::from(1u32 << failures.min(3))).min(800.0));
}

/// Runs `attempt` until it succeeds, fails fatally, or fails `retries + 1` times in a row.
fn with_retries<T>(retries: u32, mut attempt: impl FnMut() -> std::result::Result<T, Fail>) -> Result<T> {
    let mut failures = Failures::new(retries);
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(Fail::Fatal(e)) => return Err(e),
            Err(Fail::Retry(e)) => match failures.failed(false) {
                Some(n) => backoff(n),
                None => return Err(e),
            },
        }
    }
}

/// A weights file behind a URL, read with synchronous single-range requests.
pub struct XhrSource {
    url: String,
    len: u64,
    etag: Option<String>,
    /// The file's first bytes, fetched by `open` (≤ `FIRST_FETCH`).
    head: Vec<u8>,
    retries: u32,
    retried: u64,
}

impl XhrSource {
    /// Fetches the first `FIRST_FETCH` bytes (one request): the size (from
    /// `Content-Range`), the `ETag`, and usually the whole header.
    pub fn open(url: &str) -> Result<XhrSource> {
        let mut src = XhrSource { url: url.to_string(), len: 0, etag: None, head: Vec::new(), retries: XHR_RETRIES, retried: 0 };
        let (head, total) = src.fetch(0, FIRST_FETCH as u64, None)?;
        src.head = head;
        src.len = total;
        Ok(src)
    }

    /// The `ETag` the server sent, if any (the OPFS cache keys entries by it).
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// Retries made so far (every fault recovered from counts one).
    pub fn retries(&self) -> u64 {
        self.retried
    }

    /// `len` bytes from `offset` (fewer when `total` is unknown and the file ends
    /// first), resuming after faults (`range::fetch_resuming`). Returns the
    /// bytes and the file size.
    fn fetch(&mut self, offset: u64, len: u64, total: Option<u64>) -> Result<(Vec<u8>, u64)> {
        let mut retried = 0u64;
        let wait = |failures: u32| {
            retried += 1;
            backoff(failures);
        };
        let (url, retries) = (self.url.clone(), self.retries);
        let attempt = |start, end, total, out: &mut Vec<u8>| self.attempt(start, end, total, out);
        let r = fetch_resuming(&url, offset, len, total, retries, attempt, wait);
        self.retried += retried;
        r
    }

    /// One `GET` of `[start, end)`, appending what arrives to `out`. Returns the
    /// file size from `Content-Range`.
    fn attempt(&mut self, start: u64, end: u64, total: Option<u64>, out: &mut Vec<u8>) -> std::result::Result<u64, Fail> {
        let range = format!("bytes={start}-{}", end.saturating_sub(1));
        let reply = request("GET", &self.url, Some(&range))?;
        let asked = Asked { url: &self.url, range: &range, start, total, etag: self.etag.as_deref(), hidden_hint: HIDDEN_HINT };
        let Some(size) = check_answer(&asked, reply.status, reply.content_range, reply.etag.as_deref())? else { return Ok(0) };
        if self.etag.is_none() {
            self.etag = reply.etag;
        }
        let want = end.min(size).saturating_sub(start) as usize;
        out.extend_from_slice(&reply.body[..reply.body.len().min(want)]);
        Ok(size)
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
        Ok(self.fetch(offset, len as u64, Some(self.len))?.0)
    }
}

/// A whole small file (a config, a tokenizer), with one plain `GET` (retried on
/// network errors and 408/429/5xx). Do not use it for weights: it holds the file.
pub fn read_all(url: &str) -> Result<Vec<u8>> {
    with_retries(XHR_RETRIES, || {
        let reply = request("GET", url, None)?;
        match reply.status {
            200..=299 => Ok(reply.body),
            s => Err(status_fail(url, s)),
        }
    })
}

/// Whether `url` exists (a `HEAD`): 2xx → true, 404/410 → false, any other
/// status or a network/CORS failure → an error.
pub fn exists(url: &str) -> Result<bool> {
    with_retries(XHR_RETRIES, || {
        let reply = request("HEAD", url, None)?;
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
