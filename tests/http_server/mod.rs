//! A loopback HTTP/1.1 server (127.0.0.1 only) for `HttpSource`'s tests: serves one file with
//! Range support and injects a scripted fault per request (truncated bodies, stalls, dropped and
//! reset connections, error statuses), with the validators of the file's versions.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the server does with one request.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Answer normally.
    None,
    /// Send the headers and `k` body bytes, then close (FIN).
    Truncate(usize),
    /// Send the headers and `k` body bytes, then sleep past the client's read timeout.
    Stall(usize),
    /// Read only part of the request and close: unread bytes make the kernel send a RST.
    Reset,
    /// Answer 503.
    Unavailable,
    /// Answer 403 (an expired signed URL).
    Forbidden,
}

/// Which validator the server sends for version `n` of its file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tag {
    None,
    /// `ETag: "v<n>"`, and `If-Range` is honoured (a stale one gets the whole file, `200`).
    Etag,
    /// `Last-Modified` only; `If-Range` is ignored (the client must compare).
    LastModified,
    /// Hugging Face's: `X-Linked-Etag: "sha<n>"` beside an `ETag` that stays the same.
    Linked,
}

/// One request the server saw: path and `Range` header.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    /// Whether the fault changed the answer (a truncation past the body's end does not).
    pub hurt: bool,
}

pub struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<JoinHandle<()>>,
}

/// The stall a `Fault::Stall` makes: longer than `TIMEOUT` below.
pub const STALL: Duration = Duration::from_millis(700);
pub const TIMEOUT: Duration = Duration::from_millis(250);
/// Bytes `open` fetches (small, so that later reads go over the network).
pub const HEAD: usize = 256;
/// Connections the server accepts at most (it stops by itself after that).
pub const MAX_CONNECTIONS: usize = 400;

impl Server {
    /// Serves `file` at `/f`, without Range support at `/norange`, a 302 to
    /// `/f` at `/redirect`, and 404 elsewhere. Request `i` (counting those
    /// to `/f` and `/redirect`) gets `faults[i]`, or no fault past the end.
    pub fn start(file: Vec<u8>, faults: Vec<Fault>) -> Server {
        Server::start_versions(vec![file], faults, Tag::None, 0)
    }

    /// `start` with several versions of the file (same size): requests to `/f`
    /// and `/redirect` after the first `change_after` get the last version,
    /// named by `tag`.
    pub fn start_versions(versions: Vec<Vec<u8>>, faults: Vec<Fault>, tag: Tag, change_after: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop2, seen2, versions) = (stop.clone(), seen.clone(), Arc::new(versions));
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming().take(MAX_CONNECTIONS) {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (versions, seen, faults) = (versions.clone(), seen2.clone(), faults.clone());
                std::thread::spawn(move || serve(conn, &versions, &seen, &faults, tag, change_after));
            }
        });
        Server { port, stop, seen, thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Handles one connection: one request, then close (`Connection: close`).
pub fn serve(
    mut conn: TcpStream,
    versions: &[Vec<u8>],
    seen: &Mutex<Vec<Seen>>,
    faults: &[Fault],
    tag: Tag,
    change_after: usize,
) {
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok();
    // Peek the whole request without consuming it, so that `Reset` can leave it unread.
    let mut buf = [0u8; 4096];
    let mut n = 0;
    for _ in 0..50 {
        n = conn.peek(&mut buf).unwrap_or(0);
        if n == 0 || buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let req = String::from_utf8_lossy(&buf[..n]).to_string();
    let path = req.lines().next().and_then(|l| l.split(' ').nth(1)).unwrap_or("").to_string();
    let header = |name: &str| {
        req.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let (range, if_range) = (header("range"), header("if-range"));
    if path.is_empty() {
        return; // the Drop wake-up, or a client that gave up
    }
    let (fault, me) = {
        let mut s = seen.lock().unwrap();
        s.push(Seen { path: path.clone(), range: range.clone(), if_range: if_range.clone(), hurt: false });
        let me = s.len() - 1;
        let scripted = |p: &str| p == "/f" || p == "/redirect";
        let i = s.iter().filter(|x| scripted(&x.path)).count();
        (if scripted(&path) { faults.get(i - 1).copied().unwrap_or(Fault::None) } else { Fault::None }, me)
    };
    let version = {
        let s = seen.lock().unwrap();
        let before = s[..me].iter().filter(|x| x.path == "/f" || x.path == "/redirect").count();
        if before >= change_after {
            versions.len() - 1
        } else {
            0
        }
    };
    let file = &versions[version][..];
    let validators = match tag {
        Tag::None => String::new(),
        Tag::Etag => format!("ETag: \"v{version}\"\r\n"),
        Tag::LastModified => format!("Last-Modified: Tue, 0{} Dec 2026 10:00:00 GMT\r\n", version + 1),
        Tag::Linked => format!("ETag: \"pointer\"\r\nX-Linked-Etag: \"sha{version}\"\r\n"),
    };
    // RFC 9110 §13.1.5: a range only if the validator still matches, else the whole file.
    let stale = tag == Tag::Etag && if_range.as_ref().is_some_and(|v| *v != format!("\"v{version}\""));
    let hurt = |s: &Mutex<Vec<Seen>>| s.lock().unwrap()[me].hurt = true;
    if let Fault::Reset = fault {
        hurt(seen);
        let _ = conn.read(&mut [0u8; 8]);
        return; // dropped with unread request bytes → RST
    }
    let _ = conn.read(&mut buf[..n]); // consume the request
    let total = file.len();
    let (status, headers, body): (&str, String, &[u8]) = match (path.as_str(), fault) {
        (_, Fault::Unavailable) => ("503 Service Unavailable", String::new(), b""),
        (_, Fault::Forbidden) => ("403 Forbidden", String::new(), b""),
        ("/redirect", _) => ("302 Found", "Location: /f\r\n".into(), b""),
        ("/norange", _) => ("200 OK", String::new(), file),
        ("/f", _) if stale => ("200 OK", validators, file),
        ("/f", _) => match range.as_deref().and_then(parse_range) {
            Some((a, b)) if a < total => {
                let b = b.unwrap_or(total - 1).min(total - 1);
                ("206 Partial Content", format!("{validators}Content-Range: bytes {a}-{b}/{total}\r\n"), &file[a..=b])
            }
            Some(_) => ("416 Range Not Satisfiable", format!("Content-Range: bytes */{total}\r\n"), b""),
            None => ("200 OK", validators, file),
        },
        _ => ("404 Not Found", String::new(), b""),
    };
    match fault {
        Fault::Truncate(k) | Fault::Stall(k) if k < body.len() => hurt(seen),
        Fault::Unavailable | Fault::Forbidden => hurt(seen),
        _ => {}
    }
    let head = format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = conn.write_all(head.as_bytes());
    let _ = match fault {
        Fault::Truncate(k) => conn.write_all(&body[..k.min(body.len())]),
        Fault::Stall(k) => {
            let _ = conn.write_all(&body[..k.min(body.len())]);
            let _ = conn.flush();
            std::thread::sleep(STALL);
            Ok(())
        }
        _ => conn.write_all(body),
    };
    let _ = conn.shutdown(Shutdown::Write);
}

/// `bytes=a-b` / `bytes=a-` → `(a, Some(b) / None)`.
pub fn parse_range(v: &str) -> Option<(usize, Option<usize>)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, if b.is_empty() { None } else { Some(b.parse().ok()?) }))
}
