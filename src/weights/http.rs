//! Weight files streamed over HTTP with single-range `GET`s (native only; the
//! browser path will use `fetch` with streamed bodies).
//!
//! Every read is `Range: bytes=a-b` and must come back `206 Partial
//! Content`: a `200` means the host ignores ranges, and downloading a 12 GB
//! file whole is exactly what streaming avoids, so that is a typed
//! `NoRangeSupport` error. Redirects are followed (the Hub answers
//! `resolve/main/...` with a 302 to its CDN; the `Range` header is kept),
//! except from https to plain http (`InsecureRedirect`).
//!
//! One version of one file: `open`'s answer pins the final URL after
//! redirects and the file's validator (`range::Pin`: `X-Linked-Etag`, else
//! `ETag`, else `Last-Modified`); later ranges go to that URL with `If-Range`
//! (when the validator can be one), and an answer from another version (a
//! new validator or size, or a `200` to `If-Range`) is `FileChanged`.
//!
//! Faults: a body that ends early, a dropped or reset connection, a stall
//! longer than `read_timeout` (per socket read, so a slow but moving download
//! never times out), and 408/429/5xx answers are retried from the last byte
//! received, with exponential backoff; `retries` bounds the consecutive
//! attempts that bring no new byte. The bytes returned are the file's bytes:
//! every response's `Content-Range` must start where we asked.
//!
//! Memory: a read holds its own bytes only (the caller's `len`; the loader
//! asks for ≤ `CHUNK_BYTES`), plus the first `FIRST_FETCH` bytes kept from
//! `open`, which serve the header parse without a second request.

use std::io::Read;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ureq::ResponseExt;

use super::load::{ByteSource, FIRST_FETCH};
pub use super::range::parse_content_range;
use super::range::{check_answer, downgrade, fetch_resuming, is_https, read_in_head, Asked, Fail, Pin, Validator};
use super::upload::now;
use crate::error::{Error, Result};

/// Timeouts, retries and parallelism of an `HttpSource`.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// TCP (+TLS) connection set-up.
    pub connect_timeout: Duration,
    /// Longest wait for any single socket read (headers or body): a stalled
    /// connection fails after this and is retried.
    pub read_timeout: Duration,
    /// Consecutive failed attempts without a new byte before giving up.
    pub retries: u32,
    /// First wait before a retry; doubled each further retry, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub max_redirects: u32,
    /// Connections `read_ranges` uses at most.
    pub parallel: usize,
    /// Bytes `open` fetches and keeps to serve the header (`FIRST_FETCH`).
    pub head_bytes: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(30),
            retries: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_redirects: 10,
            parallel: 4,
            head_bytes: FIRST_FETCH,
        }
    }
}

/// One progress event of a file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Bytes received so far (a resumed read counts each byte once; reading
    /// the same range twice counts it twice).
    pub bytes_done: u64,
    /// The file's size.
    pub total: u64,
    /// Bytes per second since the source was opened.
    pub rate: f64,
}

/// Receives progress events; called on the reading thread (any of them with
/// `read_ranges`), under a lock: keep it short and do not read from the source.
pub type ProgressFn = Box<dyn FnMut(Progress) + Send>;

struct Meter {
    done: u64,
    callback: Option<ProgressFn>,
}

/// A weights file behind an `http://` or `https://` URL.
pub struct HttpSource {
    url: String,
    len: u64,
    agent: ureq::Agent,
    opts: HttpOptions,
    /// The file's first bytes, fetched by `open` (≤ `opts.head_bytes`).
    head: Vec<u8>,
    opened: Instant,
    meter: Mutex<Meter>,
    retries: AtomicU64,
    /// The final URL and validator of `open`'s answer.
    pin: Mutex<Pin>,
}

impl HttpSource {
    /// Opens `url` with default options (see `open_with`).
    pub fn open(url: &str) -> Result<HttpSource> {
        HttpSource::open_with(url, HttpOptions::default(), None)
    }

    /// Fetches the first `FIRST_FETCH` bytes (one request), which gives the
    /// size (`Content-Range`) and, usually, the whole header.
    pub fn open_with(url: &str, opts: HttpOptions, progress: Option<ProgressFn>) -> Result<HttpSource> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(opts.max_redirects)
            // Refuses an https → http redirect before connecting (`InsecureRedirect`).
            .https_only(is_https(url))
            .save_redirect_history(true)
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_per_read(Some(opts.read_timeout))
            .timeout_per_write(Some(opts.read_timeout))
            .user_agent(format!("iclora/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let mut src = HttpSource {
            url: url.to_string(),
            len: 0,
            agent,
            opts,
            head: Vec::new(),
            opened: Instant::now(),
            meter: Mutex::new(Meter { done: 0, callback: progress }),
            retries: AtomicU64::new(0),
            pin: Mutex::new(Pin::default()),
        };
        let (head, total) = src.fetch(0, src.opts.head_bytes.max(1) as u64, None)?;
        src.head = head;
        src.len = total;
        Ok(src)
    }

    /// Sets (or clears) the progress callback.
    pub fn set_progress(&mut self, progress: Option<ProgressFn>) {
        lock(&self.meter).callback = progress;
    }

    /// Retries made so far (every fault recovered from counts one).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Bytes received so far.
    pub fn bytes_done(&self) -> u64 {
        lock(&self.meter).done
    }

    /// `read_range` through a shared reference (usable from several threads).
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        if let Some(bytes) = read_in_head(&self.url, self.len, &self.head, offset, len)? {
            return Ok(bytes);
        }
        Ok(self.fetch(offset, len as u64, Some(self.len))?.0)
    }

    /// Reads several `(offset, len)` ranges over up to `opts.parallel`
    /// connections; the results come back in the order asked. Holds every
    /// range's bytes at once: the caller bounds the total.
    pub fn read_ranges(&self, ranges: &[(u64, usize)]) -> Result<Vec<Vec<u8>>> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<Vec<u8>>>>> = Mutex::new(vec![None; ranges.len()]);
        let workers = self.opts.parallel.clamp(1, ranges.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(offset, len)) = ranges.get(i) else { break };
                    let r = self.read_at(offset, len);
                    let failed = r.is_err();
                    lock(&results)[i] = Some(r);
                    if failed {
                        // Stop handing out work: the caller gets the first error.
                        next.store(ranges.len(), Ordering::Relaxed);
                    }
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
        // Work only stops early after an error, so a missing result follows an error.
        let missing = || Err(Error::Io { file: self.url.clone(), message: "a parallel read did not run".into() });
        results.into_iter().map(|r| r.unwrap_or_else(missing)).collect()
    }

    /// `len` bytes from `offset` (fewer when `total` is unknown and the file
    /// ends first), resuming after faults (`range::fetch_resuming`, with
    /// exponential backoff). Returns the bytes and the file size.
    fn fetch(&self, offset: u64, len: u64, total: Option<u64>) -> Result<(Vec<u8>, u64)> {
        let attempt = async |start, end, total, out: &mut Vec<u8>| self.attempt(start, end, total, out);
        let wait = async |failures: u32| {
            self.retries.fetch_add(1, Ordering::Relaxed);
            let wait = self.opts.backoff.saturating_mul(1 << failures.saturating_sub(1).min(16));
            std::thread::sleep(wait.min(self.opts.max_backoff));
        };
        now(fetch_resuming(&self.url, offset, len, total, self.opts.retries, attempt, wait))
    }

    /// The file's validator, pinned by `open` (`None`: the server names no version).
    pub fn validator(&self) -> Option<Validator> {
        lock(&self.pin).validator.clone()
    }

    /// Where ranges are read from: the final URL after `open`'s redirects.
    pub fn final_url(&self) -> String {
        lock(&self.pin).target(&self.url).to_string()
    }

    /// One `GET` of `[start, end)`, appending what arrives to `out`. Returns
    /// the file size from `Content-Range`.
    fn attempt(&self, start: u64, end: u64, total: Option<u64>, out: &mut Vec<u8>) -> std::result::Result<u64, Fail> {
        let url = &self.url;
        let range = format!("bytes={start}-{}", end.saturating_sub(1));
        let (target, validator) = {
            let pin = lock(&self.pin);
            (pin.target(url).to_string(), pin.validator.clone())
        };
        let if_range = validator.as_ref().and_then(Validator::if_range);
        let mut req = self.agent.get(&target).header("Range", &range);
        if let Some(v) = if_range {
            req = req.header("If-Range", v);
        }
        let resp = req.call().map_err(|e| self.call_error(e))?;
        let history: Vec<String> =
            resp.get_redirect_history().unwrap_or_default().iter().map(|u| u.to_string()).collect();
        // `https_only` already refuses this; checked again on what was actually followed.
        if let Some((_, to)) = downgrade(&history.iter().map(String::as_str).collect::<Vec<_>>()) {
            return Err(Fail::Fatal(Error::InsecureRedirect { url: url.clone(), to: to.to_string() }));
        }
        let status = resp.status().as_u16();
        if lock(&self.pin).expired(url, status) {
            return Err(Fail::Retry(Error::Http { url: target, status }));
        }
        let header = |h: &str| resp.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
        let now = Validator::from_headers(header);
        let content_range = header("content-range").map(|v| parse_content_range(&v));
        let asked = Asked {
            url,
            range: &range,
            start,
            total,
            validator: validator.as_ref(),
            if_range: if_range.is_some(),
            hidden_hint: "",
        };
        let size = check_answer(&asked, status, content_range, now.as_ref())?;
        lock(&self.pin).answer(url, history.last().cloned(), now).map_err(Fail::Fatal)?;
        let Some(size) = size else { return Ok(0) };
        let want = end.min(size).saturating_sub(start);
        let mut body = resp.into_body().into_reader().take(want);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match body.read(&mut buf) {
                Ok(0) => return Ok(size),
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    self.advance(n as u64, size);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Fail::Retry(self.read_error(&e, out.len()))),
            }
        }
    }

    fn advance(&self, n: u64, total: u64) {
        let mut m = lock(&self.meter);
        m.done += n;
        let rate = m.done as f64 / self.opened.elapsed().as_secs_f64().max(1e-6);
        let bytes_done = m.done;
        if let Some(cb) = m.callback.as_mut() {
            cb(Progress { bytes_done, total, rate });
        }
    }

    fn call_error(&self, e: ureq::Error) -> Fail {
        let url = self.url.clone();
        match e {
            ureq::Error::Timeout(t) => Fail::Retry(Error::Timeout { url, what: format!("({t}) waiting for") }),
            ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled => Fail::Retry(Error::Io {
                file: url,
                message: format!("{e}; the connection failed, retries did not help"),
            }),
            ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => Fail::Fatal(Error::Io {
                file: url,
                message: format!("{e} (more than {} redirects, or a bad Location)", self.opts.max_redirects),
            }),
            ureq::Error::RequireHttpsOnly(to) => Fail::Fatal(Error::InsecureRedirect { url, to }),
            ureq::Error::HostNotFound => {
                Fail::Fatal(Error::Io { file: url, message: "host not found; check the URL and the network".into() })
            }
            other => Fail::Fatal(Error::Io { file: url, message: other.to_string() }),
        }
    }

    fn read_error(&self, e: &std::io::Error, got: usize) -> Error {
        let inner = e.get_ref().and_then(|r| r.downcast_ref::<ureq::Error>());
        if e.kind() == std::io::ErrorKind::TimedOut || matches!(inner, Some(ureq::Error::Timeout(_))) {
            Error::Timeout { url: self.url.clone(), what: format!("after {got} bytes of a range, reading") }
        } else {
            Error::Io {
                file: self.url.clone(),
                message: format!("the connection broke after {got} bytes of a range ({e}); retries did not help"),
            }
        }
    }
}

impl ByteSource for HttpSource {
    fn name(&self) -> &str {
        &self.url
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_range(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.read_at(offset, len)
    }
}

/// A poisoned lock only means another reader panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
