//! The rules of reading part of a file with HTTP `Range` requests, shared by
//! every transport: native `ureq` (`http.rs`), the browser's synchronous XHR
//! (`browser/xhr.rs`) and its `fetch`-to-OPFS download (`browser/download.rs`).
//! Nothing here does I/O, so it compiles on both targets.
//!
//! - An answer to `Range: bytes=a-b` must be `206` with a `Content-Range`
//!   that starts at `a` and names the size (and ETag, when both answers have
//!   one) seen before; otherwise the file changed on the server (fatal).
//! - A `200` means the host ignores ranges (`NoRangeSupport`: reading a 12 GB
//!   file whole is what range reads avoid); 408/429/5xx are retried.
//! - An empty file has no byte 0: `416` with `Content-Range: bytes */0`.
//! - Faults are retried from the last byte received; the retry count resets
//!   whenever an attempt brings a new byte, so `retries` bounds the consecutive
//!   attempts that bring nothing (a slow but moving download never gives up).

use super::load::{CHUNK_BYTES, FIRST_FETCH};
use crate::error::{Error, Result};

/// How an attempt failed: `Retry` carries the error to report if retries run out.
pub enum Fail {
    Fatal(Error),
    Retry(Error),
}

/// A parsed `Content-Range`: the byte range (`None` for `*`) and the file size.
pub type ContentRange = (Option<(u64, u64)>, u64);

/// `bytes a-b/size` → `(Some((a, b)), size)`; `bytes */size` → `(None, size)`.
/// An unknown size (`/*`) or anything else → `None`.
pub fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, size) = rest.split_once('/')?;
    let size = size.trim().parse().ok()?;
    if range.trim() == "*" {
        return Some((None, size));
    }
    let (a, b) = range.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b && b < size).then_some((Some((a, b)), size))
}

/// Status classes of a failed request: 408/429/5xx are retried, others fatal.
pub fn status_fail(url: &str, status: u16) -> Fail {
    match status {
        408 | 429 | 500..=599 => Fail::Retry(Error::Http { url: url.to_string(), status }),
        _ => Fail::Fatal(Error::Http { url: url.to_string(), status }),
    }
}

/// One range request, as the checks of its answer need it.
pub struct Asked<'a> {
    pub url: &'a str,
    /// The `Range` header sent (quoted in errors).
    pub range: &'a str,
    /// The first byte asked for.
    pub start: u64,
    /// The file's size from earlier answers (`None` before the first).
    pub total: Option<u64>,
    /// The ETag of earlier answers (`None`: none seen, or not tracked).
    pub etag: Option<&'a str>,
    /// Appended to the "without a Content-Range header" error: why a header
    /// the server sent may be invisible here ("" natively; in a browser, CORS).
    pub hidden_hint: &'a str,
}

/// The answer to a range read: `Some(size)` for a checked `206` (its body is
/// the bytes from `asked.start`), `None` for an empty file (nothing to read);
/// any other status is a `Fail` (`200`: `NoRangeSupport`).
pub fn check_answer(asked: &Asked, status: u16, content_range: Option<Option<ContentRange>>, etag: Option<&str>) -> std::result::Result<Option<u64>, Fail> {
    match status {
        206 => check_partial(asked, content_range, etag).map(Some),
        200 => Err(Fail::Fatal(Error::NoRangeSupport { url: asked.url.to_string() })),
        // An empty file has no byte 0: `Content-Range: bytes */0`.
        416 if asked.start == 0 && asked.total.is_none() && matches!(content_range, Some(Some((None, 0)))) => Ok(None),
        s => Err(status_fail(asked.url, s)),
    }
}

/// The checks of a `206` answer (`content_range`: `None` without the header,
/// `Some(None)` when it does not parse): it starts at `asked.start` and the
/// file's size and ETag are unchanged. Returns the file size.
pub fn check_partial(asked: &Asked, content_range: Option<Option<ContentRange>>, etag: Option<&str>) -> std::result::Result<u64, Fail> {
    let bad = |what: String| Fail::Fatal(Error::Io { file: asked.url.to_string(), message: what });
    let range = asked.range;
    let (first, size) = match content_range {
        Some(Some((Some((first, _)), size))) => (first, size),
        Some(_) => return Err(bad(format!("a 206 answer to `Range: {range}` with an invalid Content-Range header"))),
        None => return Err(bad(format!("a 206 answer to `Range: {range}` without a Content-Range header{}", asked.hidden_hint))),
    };
    if first != asked.start {
        return Err(bad(format!("asked for bytes from {}, the server sent bytes from {first}", asked.start)));
    }
    let etag_changed = matches!((asked.etag, etag), (Some(a), Some(b)) if a != b);
    if asked.total.is_some_and(|t| t != size) || etag_changed {
        let was = asked.total.map_or("?".into(), |t| t.to_string());
        let etags = match (asked.etag, etag) {
            (None, None) => String::new(),
            (a, b) => format!("; ETag {a:?}, now {b:?}"),
        };
        return Err(bad(format!("the file changed on the server ({was} bytes, now {size}{etags}); start again")));
    }
    Ok(size)
}

/// A read of `len` bytes at `offset` of a `size`-byte file, checked against
/// the size (past the end → `Io`), and served from `head` (the file's first
/// bytes, kept from opening it) when it lies there: `Ok(None)` means fetch it.
pub fn read_in_head(url: &str, size: u64, head: &[u8], offset: u64, len: usize) -> Result<Option<Vec<u8>>> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => {}
        _ => return Err(Error::Io { file: url.to_string(), message: format!("read of {len} bytes at {offset} is past the end ({size} bytes)") }),
    }
    Ok((offset + len as u64 <= head.len() as u64).then(|| head[offset as usize..offset as usize + len].to_vec()))
}

/// Counts consecutive failed attempts; an attempt that brought a byte resets it.
pub struct Failures {
    count: u32,
    retries: u32,
}

impl Failures {
    /// Gives up after `retries + 1` failures in a row.
    pub fn new(retries: u32) -> Failures {
        Failures { count: 0, retries }
    }

    /// After a failed attempt (`progressed`: it brought new bytes): `Some(n)`,
    /// the failures in a row so far (for the backoff), when another attempt may
    /// follow, `None` when retries ran out.
    pub fn failed(&mut self, progressed: bool) -> Option<u32> {
        self.count = if progressed { 0 } else { self.count + 1 };
        (self.count <= self.retries).then_some(self.count)
    }
}

/// `len` bytes from `offset` (fewer when `total`, the file size, is unknown
/// and the file ends first), resuming after faults. `attempt(start, end,
/// total, out)` makes one request for `[start, end)`, appends what arrives to
/// `out` and returns the file size; `wait(n)` runs before each retry (`n`:
/// failures in a row, 0 when the failed attempt brought bytes). Returns the
/// bytes and the file size.
pub fn fetch_resuming(
    url: &str,
    offset: u64,
    len: u64,
    total: Option<u64>,
    retries: u32,
    mut attempt: impl FnMut(u64, u64, Option<u64>, &mut Vec<u8>) -> std::result::Result<u64, Fail>,
    mut wait: impl FnMut(u32),
) -> Result<(Vec<u8>, u64)> {
    let mut total = total;
    let mut end = offset + len; // exclusive
    let mut out = Vec::with_capacity(len.min(FIRST_FETCH.max(CHUNK_BYTES) as u64) as usize);
    let mut failures = Failures::new(retries);
    loop {
        let before = out.len();
        let last = match attempt(offset + before as u64, end, total, &mut out) {
            Ok(t) => {
                total = Some(t);
                end = end.min(t);
                if offset + out.len() as u64 >= end {
                    return Ok((out, t));
                }
                Error::Io { file: url.to_string(), message: format!("the body ended after {} of {} bytes; retries did not help", out.len(), end - offset) }
            }
            Err(Fail::Fatal(e)) => return Err(e),
            Err(Fail::Retry(e)) => e,
        };
        match failures.failed(out.len() > before) {
            Some(n) => wait(n),
            None => return Err(last),
        }
    }
}
