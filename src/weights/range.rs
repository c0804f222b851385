//! The rules of reading part of a file with HTTP `Range` requests, shared by
//! every transport: native `ureq` (`http.rs`), the browser's synchronous XHR
//! (`browser/xhr.rs`) and its `fetch`-to-OPFS download (`browser/download.rs`).
//! Nothing here does I/O, so it compiles on both targets.
//!
//! - One file, one version: the first answer pins a `Validator` (Hugging
//!   Face's `X-Linked-Etag` when present, else `ETag`, else `Last-Modified`)
//!   and the final URL after redirects (`Pin`); later ranges go to that URL
//!   (Hugging Face's `resolve/main/...` can move to a new commit between two
//!   ranges; the CDN URL it redirects to names one blob) and every answer must
//!   carry the same validator and size, else `FileChanged` (fatal: the bytes
//!   read so far cannot be joined with the new ones).
//! - An answer to `Range: bytes=a-b` must be `206` with a `Content-Range`
//!   that starts at `a`.
//! - A `200` means the host ignores ranges (`NoRangeSupport`: reading a 12 GB
//!   file whole is what range reads avoid), or, to a request with `If-Range`,
//!   that the file changed; 408/429/5xx are retried. A pinned final URL that
//!   answers 401/403/404/410 has expired (signed CDN URLs do): the original
//!   URL is resolved again, and the validator still decides.
//! - An empty file has no byte 0: `416` with `Content-Range: bytes */0`.
//! - Faults are retried from the last byte received; the retry count resets
//!   whenever an attempt brings a new byte, so `retries` bounds the consecutive
//!   attempts that bring nothing (a slow but moving download never gives up).

use super::load::{CHUNK_BYTES, FIRST_FETCH};
use crate::error::{Error, Result};

/// The headers that name a version of a file, best first: Hugging Face sends
/// `X-Linked-Etag` (the blob's hash) for files stored out of git, whose `ETag`
/// may describe the pointer; `Last-Modified` is the fallback of static hosts
/// without ETags (and the one a browser always shows across origins).
pub const VALIDATOR_HEADERS: [&str; 3] = ["x-linked-etag", "etag", "last-modified"];

/// One version of a file, as the server names it (`header` is lower case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    pub header: String,
    pub value: String,
}

impl Validator {
    /// The first of `VALIDATOR_HEADERS` that `get` returns non-empty.
    pub fn from_headers(mut get: impl FnMut(&str) -> Option<String>) -> Option<Validator> {
        VALIDATOR_HEADERS.iter().find_map(|&h| {
            let value = get(h)?.trim().to_string();
            (!value.is_empty()).then(|| Validator { header: h.to_string(), value })
        })
    }

    /// The value for an `If-Range` header: a strong `ETag` or a `Last-Modified`
    /// date. `None` for a weak ETag (RFC 9110 §13.1.5 forbids it there) and for
    /// `X-Linked-Etag` (not the server's own validator, so it would never match).
    pub fn if_range(&self) -> Option<&str> {
        match self.header.as_str() {
            "etag" if !self.value.starts_with("W/") => Some(&self.value),
            "last-modified" => Some(&self.value),
            _ => None,
        }
    }
}

impl std::fmt::Display for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.header.as_str() {
            "x-linked-etag" => "X-Linked-Etag",
            "etag" => "ETag",
            "last-modified" => "Last-Modified",
            other => other,
        };
        write!(f, "{name} {}", self.value)
    }
}

/// `FileChanged` unless `now` (an answer's validator) is the `pinned` one.
/// Nothing pinned (the first answer, or a server that names no version)
/// passes; a pinned validator missing from a later answer does not.
pub fn check_validator(url: &str, pinned: Option<&Validator>, now: Option<&Validator>) -> Result<()> {
    match (pinned, now) {
        (None, _) => Ok(()),
        (Some(p), Some(n)) if p == n => Ok(()),
        (Some(p), n) => Err(Error::FileChanged {
            url: url.to_string(),
            what: format!("{p}, now {}", n.map_or("none".into(), |n| n.to_string())),
        }),
    }
}

/// `FileChanged` unless an answer's `size` and validator (`now`) are the
/// pinned ones (`None`: not known yet, nothing to compare).
pub fn same_version(
    url: &str,
    pinned_size: Option<u64>,
    size: u64,
    pinned: Option<&Validator>,
    now: Option<&Validator>,
) -> Result<()> {
    if let Some(was) = pinned_size.filter(|&t| t != size) {
        return Err(Error::FileChanged { url: url.to_string(), what: format!("{was} bytes, now {size}") });
    }
    check_validator(url, pinned, now)
}

/// What the first answer about a file pinned: where later ranges go and the
/// version they must come from. `validator` is meaningful once `pinned`.
#[derive(Clone, Debug, Default)]
pub struct Pin {
    /// The final URL after redirects (`None`: ask the original URL).
    pub url: Option<String>,
    pub validator: Option<Validator>,
    pub pinned: bool,
}

impl Pin {
    /// Takes an answer's final URL and validator: the first answer pins its
    /// validator, later ones must match it (`check_validator`).
    pub fn answer(&mut self, url: &str, final_url: Option<String>, validator: Option<Validator>) -> Result<()> {
        if self.pinned {
            check_validator(url, self.validator.as_ref(), validator.as_ref())?;
        } else {
            (self.validator, self.pinned) = (validator, true);
        }
        if final_url.is_some() {
            self.url = final_url;
        }
        Ok(())
    }

    /// Whether a failed status from the pinned URL means it expired: the
    /// original is then resolved again (`url` is cleared) and the caller retries.
    pub fn expired(&mut self, original: &str, status: u16) -> bool {
        let expired = matches!(status, 401 | 403 | 404 | 410) && self.url.as_deref().is_some_and(|u| u != original);
        if expired {
            self.url = None;
        }
        expired
    }

    /// The URL to ask now.
    pub fn target<'a>(&'a self, original: &'a str) -> &'a str {
        self.url.as_deref().unwrap_or(original)
    }
}

/// The first https URL followed by an http one in `chain` (the request's URL
/// then each redirect's target): a redirect that would send the request, and
/// trust in the bytes, over plain HTTP.
pub fn downgrade<'a>(chain: &[&'a str]) -> Option<(&'a str, &'a str)> {
    chain.windows(2).find(|w| is_https(w[0]) && !is_https(w[1])).map(|w| (w[0], w[1]))
}

/// Whether `url` is an https URL (schemes are case-insensitive).
pub fn is_https(url: &str) -> bool {
    url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

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
    /// The pinned validator (`None`: first answer, or none to check).
    pub validator: Option<&'a Validator>,
    /// Whether the request carried `If-Range` (then a `200` means "changed").
    pub if_range: bool,
    /// Appended to the "without a Content-Range header" error: why a header
    /// the server sent may be invisible here ("" natively; in a browser, CORS).
    pub hidden_hint: &'a str,
}

/// The answer to a range read: `Some(size)` for a checked `206` (its body is
/// the bytes from `asked.start`), `None` for an empty file (nothing to read);
/// any other status is a `Fail` (`200`: `NoRangeSupport`, or `FileChanged`
/// when the request carried `If-Range`).
pub fn check_answer(
    asked: &Asked,
    status: u16,
    content_range: Option<Option<ContentRange>>,
    validator: Option<&Validator>,
) -> std::result::Result<Option<u64>, Fail> {
    match status {
        206 => check_partial(asked, content_range, validator).map(Some),
        200 if asked.if_range => {
            let what = format!(
                "it sent the whole file instead of a range: {} no longer matches",
                asked.validator.map_or(String::new(), |v| v.to_string())
            );
            Err(Fail::Fatal(Error::FileChanged { url: asked.url.to_string(), what }))
        }
        200 => Err(Fail::Fatal(Error::NoRangeSupport { url: asked.url.to_string() })),
        // An empty file has no byte 0: `Content-Range: bytes */0`.
        416 if asked.start == 0 && asked.total.is_none() && matches!(content_range, Some(Some((None, 0)))) => Ok(None),
        s => Err(status_fail(asked.url, s)),
    }
}

/// The checks of a `206` answer (`content_range`: `None` without the header,
/// `Some(None)` when it does not parse): it starts at `asked.start` and the
/// file's size and validator are unchanged. Returns the file size.
pub fn check_partial(
    asked: &Asked,
    content_range: Option<Option<ContentRange>>,
    validator: Option<&Validator>,
) -> std::result::Result<u64, Fail> {
    let bad = |what: String| Fail::Fatal(Error::Io { file: asked.url.to_string(), message: what });
    let range = asked.range;
    let (first, size) = match content_range {
        Some(Some((Some((first, _)), size))) => (first, size),
        Some(_) => return Err(bad(format!("a 206 answer to `Range: {range}` with an invalid Content-Range header"))),
        None => {
            return Err(bad(format!(
                "a 206 answer to `Range: {range}` without a Content-Range header{}",
                asked.hidden_hint
            )))
        }
    };
    if first != asked.start {
        return Err(bad(format!("asked for bytes from {}, the server sent bytes from {first}", asked.start)));
    }
    same_version(asked.url, asked.total, size, asked.validator, validator).map_err(Fail::Fatal)?;
    Ok(size)
}

/// A read of `len` bytes at `offset` of a `size`-byte file, checked against
/// the size (past the end → `Io`), and served from `head` (the file's first
/// bytes, kept from opening it) when it lies there: `Ok(None)` means fetch it.
pub fn read_in_head(url: &str, size: u64, head: &[u8], offset: u64, len: usize) -> Result<Option<Vec<u8>>> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => {}
        _ => {
            return Err(Error::Io {
                file: url.to_string(),
                message: format!("read of {len} bytes at {offset} is past the end ({size} bytes)"),
            })
        }
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
/// bytes and the file size. Synchronous readers pass closures that never wait
/// and run it with `upload::now`; the browser's awaiting reads pass fetches.
pub async fn fetch_resuming(
    url: &str,
    offset: u64,
    len: u64,
    total: Option<u64>,
    retries: u32,
    mut attempt: impl AsyncFnMut(u64, u64, Option<u64>, &mut Vec<u8>) -> std::result::Result<u64, Fail>,
    mut wait: impl AsyncFnMut(u32),
) -> Result<(Vec<u8>, u64)> {
    let mut total = total;
    let mut end = offset + len; // exclusive
    let mut out = Vec::with_capacity(len.min(FIRST_FETCH.max(CHUNK_BYTES) as u64) as usize);
    let mut failures = Failures::new(retries);
    loop {
        let before = out.len();
        let last = match attempt(offset + before as u64, end, total, &mut out).await {
            Ok(t) => {
                total = Some(t);
                end = end.min(t);
                if offset + out.len() as u64 >= end {
                    return Ok((out, t));
                }
                Error::Io {
                    file: url.to_string(),
                    message: format!(
                        "the body ended after {} of {} bytes; retries did not help",
                        out.len(),
                        end - offset
                    ),
                }
            }
            Err(Fail::Fatal(e)) => return Err(e),
            Err(Fail::Retry(e)) => e,
        };
        match failures.failed(out.len() > before) {
            Some(n) => wait(n).await,
            None => return Err(last),
        }
    }
}

/// Whether a range `GET` of `url` is safe to send where a body cannot be
/// refused before it is whole (a synchronous XHR reads the status only once
/// the body has arrived): judged from a `HEAD` sent with `Range: bytes=0-0`.
/// Safe when the host shows it serves ranges (a `206`, or `Accept-Ranges:
/// bytes`) or when the whole file is at most `max_whole` bytes; `Accept-Ranges:
/// none` is `NoRangeSupport`, silence about a larger (or unsized) file is
/// `RangesNotShown`. A host that refuses `HEAD` (405/501) tells nothing and
/// is let through; other failures are the usual `status_fail`.
pub fn check_head(
    url: &str,
    status: u16,
    accept_ranges: Option<&str>,
    content_length: Option<u64>,
    max_whole: u64,
) -> std::result::Result<(), Fail> {
    let ranges = accept_ranges
        .map(|v| v.split(',').map(|u| u.trim().to_ascii_lowercase()).collect::<Vec<_>>())
        .unwrap_or_default();
    match status {
        206 | 405 | 501 => Ok(()),
        200..=299 if ranges.iter().any(|u| u == "bytes") => Ok(()),
        200..=299 if ranges.iter().any(|u| u == "none") => {
            Err(Fail::Fatal(Error::NoRangeSupport { url: url.to_string() }))
        }
        200..=299 if content_length.is_some_and(|n| n <= max_whole) => Ok(()),
        200..=299 => {
            let size = content_length.map_or("of unknown size".to_string(), |n| format!("{n} bytes"));
            Err(Fail::Fatal(Error::RangesNotShown { url: url.to_string(), size }))
        }
        s => Err(status_fail(url, s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(h: &str, value: &str) -> Validator {
        Validator { header: h.into(), value: value.into() }
    }

    #[test]
    fn validator_prefers_linked_etag_then_etag_then_last_modified() {
        let headers = |set: &'static [(&'static str, &'static str)]| {
            move |h: &str| set.iter().find(|(k, _)| *k == h).map(|(_, v)| v.to_string())
        };
        assert_eq!(
            Validator::from_headers(headers(&[
                ("etag", "\"e\""),
                ("x-linked-etag", "\"sha\""),
                ("last-modified", "d")
            ])),
            Some(v("x-linked-etag", "\"sha\""))
        );
        assert_eq!(
            Validator::from_headers(headers(&[("etag", " \"e\" "), ("last-modified", "d")])),
            Some(v("etag", "\"e\""))
        );
        assert_eq!(
            Validator::from_headers(headers(&[("etag", ""), ("last-modified", "d")])),
            Some(v("last-modified", "d"))
        );
        assert_eq!(Validator::from_headers(headers(&[])), None);
        assert_eq!(v("etag", "\"e\"").if_range(), Some("\"e\""));
        assert_eq!(v("etag", "W/\"e\"").if_range(), None);
        assert_eq!(v("x-linked-etag", "\"sha\"").if_range(), None);
        assert_eq!(v("last-modified", "d").if_range(), Some("d"));
    }

    #[test]
    fn a_changed_or_missing_validator_is_file_changed() {
        let e = v("etag", "\"a\"");
        assert!(check_validator("u", None, Some(&e)).is_ok());
        assert!(check_validator("u", Some(&e), Some(&e)).is_ok());
        for now in [Some(v("etag", "\"b\"")), Some(v("last-modified", "\"a\"")), None] {
            assert!(matches!(check_validator("u", Some(&e), now.as_ref()), Err(Error::FileChanged { .. })), "{now:?}");
        }
        let mut pin = Pin::default();
        pin.answer("u", Some("https://cdn/x".into()), Some(e.clone())).unwrap();
        assert_eq!(pin.target("u"), "https://cdn/x");
        assert!(pin.answer("u", None, Some(v("etag", "\"b\""))).is_err());
        assert!(!pin.expired("u", 500) && pin.expired("u", 403));
        assert_eq!(pin.target("u"), "u");
        assert!(!pin.expired("u", 403), "the original URL does not expire");
    }

    #[test]
    fn a_200_to_if_range_is_a_change_and_a_range_must_carry_the_pinned_validator() {
        let e = v("etag", "\"a\"");
        let asked = Asked {
            url: "u",
            range: "bytes=5-9",
            start: 5,
            total: Some(10),
            validator: Some(&e),
            if_range: true,
            hidden_hint: "",
        };
        assert!(matches!(check_answer(&asked, 200, None, Some(&e)), Err(Fail::Fatal(Error::FileChanged { .. }))));
        let cr = Some(Some((Some((5, 9)), 10)));
        assert!(matches!(check_answer(&asked, 206, cr, Some(&e)), Ok(Some(10))));
        assert!(matches!(
            check_answer(&asked, 206, cr, Some(&v("etag", "\"b\""))),
            Err(Fail::Fatal(Error::FileChanged { .. }))
        ));
        assert!(matches!(
            check_answer(&asked, 206, Some(Some((Some((5, 9)), 11))), Some(&e)),
            Err(Fail::Fatal(Error::FileChanged { .. }))
        ));
        let plain = Asked { if_range: false, ..asked };
        assert!(matches!(check_answer(&plain, 200, None, None), Err(Fail::Fatal(Error::NoRangeSupport { .. }))));
    }

    #[test]
    fn https_to_http_is_a_downgrade() {
        assert_eq!(downgrade(&["https://a/x", "https://b/y", "http://c/z"]), Some(("https://b/y", "http://c/z")));
        assert_eq!(downgrade(&["HTTPS://a/x", "HTTP://c/z"]), Some(("HTTPS://a/x", "HTTP://c/z")));
        assert_eq!(downgrade(&["http://a/x", "https://b/y", "https://c/z"]), None);
        assert_eq!(downgrade(&["http://a/x", "http://b/y"]), None, "plain http from the start is the user's choice");
        assert_eq!(downgrade(&["https://a/x"]), None);
    }

    #[test]
    fn head_decides_whether_a_range_get_is_safe() {
        let ok = |s, ar, len| check_head("u", s, ar, len, 1 << 20).is_ok();
        assert!(ok(206, None, None) && ok(200, Some("bytes"), Some(1 << 40)) && ok(200, Some("none, bytes"), None));
        assert!(ok(200, None, Some(1 << 20)) && ok(405, None, None));
        assert!(matches!(
            check_head("u", 200, Some("none"), Some(10), 1 << 20),
            Err(Fail::Fatal(Error::NoRangeSupport { .. }))
        ));
        assert!(matches!(
            check_head("u", 200, None, Some((1 << 20) + 1), 1 << 20),
            Err(Fail::Fatal(Error::RangesNotShown { .. }))
        ));
        assert!(matches!(check_head("u", 200, None, None, 1 << 20), Err(Fail::Fatal(Error::RangesNotShown { .. }))));
        assert!(matches!(check_head("u", 404, None, None, 1 << 20), Err(Fail::Fatal(Error::Http { status: 404, .. }))));
        assert!(matches!(check_head("u", 503, None, None, 1 << 20), Err(Fail::Retry(_))));
    }
}
