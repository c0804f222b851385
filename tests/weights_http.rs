//! `HttpSource` against a loopback HTTP/1.1 server (127.0.0.1 only) that
//! serves generated GGUF/safetensors files with Range support and injects a
//! scripted fault per request: truncated bodies, stalls past the client's
//! read timeout, dropped and reset connections, 503s, 403s. Loads must complete
//! with the file's exact bytes (GPU readback compared with tolerance 0);
//! hosts without Range support, 404s and endless faults give typed errors,
//! and a file that changes on the server between two ranges (same size, new
//! ETag, Last-Modified or X-Linked-Etag) is `FileChanged`, never spliced.

mod common;
mod http_server;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{assert_close, gpu, run, Rng};
use http_server::{parse_range, Fault, Server, Tag, HEAD, TIMEOUT};
use iclora::gpu::DType;
use iclora::kernels::embedding::dequantize as gpu_dequantize;
use iclora::reference::quant::dequantize;
use iclora::reference::random::weight_bytes;
use iclora::weights::gguf::write_gguf;
use iclora::weights::http::{parse_content_range, HttpOptions, HttpSource, Progress};
use iclora::weights::load::{load_tensor_chunked, read_header, ByteSource};
use iclora::weights::safetensors::write_safetensors;
use iclora::weights::tensor_info::{FileDType, MetaValue, TensorData};
use iclora::Error;

fn opts() -> HttpOptions {
    HttpOptions {
        connect_timeout: TIMEOUT,
        read_timeout: TIMEOUT,
        retries: 3,
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
        head_bytes: HEAD,
        ..HttpOptions::default()
    }
}

/// A GGUF of every GPU weight format (≈ 60 KB), deterministic.
fn gguf_file() -> (Vec<u8>, Vec<TensorData>) {
    let mut rng = Rng::new(71);
    let mut tensors = Vec::new();
    for d in DType::WEIGHT_FORMATS {
        let numel = if d.is_quantized() { 2 * 3072 } else { 3 * 7 };
        let shape = if d.is_quantized() { vec![2, 3072] } else { vec![3, 7] };
        tensors.push(TensorData {
            name: format!("w.{d}"),
            shape,
            dtype: FileDType::Gpu(d),
            data: weight_bytes(&mut rng, d, numel, 1.0, 0.1),
        });
    }
    let meta = vec![("general.architecture".to_string(), MetaValue::Str("flux".into()))];
    (write_gguf(&meta, &tensors).unwrap(), tensors)
}

fn gpu_format(t: &TensorData) -> DType {
    match t.dtype {
        FileDType::Gpu(d) => d,
        other => panic!("{other} is not a GPU format"),
    }
}

#[test]
fn content_range_parsing() {
    assert_eq!(parse_content_range("bytes 0-9/100"), Some((Some((0, 9)), 100)));
    assert_eq!(parse_content_range("bytes */0"), Some((None, 0)));
    for bad in ["bytes 0-9/*", "bytes 9-0/100", "bytes 0-100/100", "items 0-1/2", "bytes 0-x/5"] {
        assert_eq!(parse_content_range(bad), None, "{bad}");
    }
}

#[test]
fn every_gguf_tensor_loads_exactly_through_faults() {
    let (file, tensors) = gguf_file();
    // Request 0 is `open`; every later request gets a fault in turn, then a clean one.
    let mut faults = vec![Fault::None];
    for _ in 0..3 {
        // At most 2 failures without progress in a row (retries = 3).
        faults.extend([
            Fault::Truncate(1000),
            Fault::Reset,
            Fault::Stall(100),
            Fault::Unavailable,
            Fault::Truncate(0),
            Fault::None,
        ]);
    }
    let server = Server::start(file.clone(), faults.clone());
    let mut src = HttpSource::open_with(&server.url("/f"), opts(), None).unwrap();
    let header = read_header(&mut src).unwrap();
    assert_eq!(header.tensors.len(), tensors.len());
    for t in &tensors {
        let info = header.tensor(&t.name).unwrap();
        // 4 KiB chunks: several requests per tensor, so faults land inside tensors.
        let loaded = load_tensor_chunked(gpu(), &mut src, &header.file, info, 4096).unwrap();
        let (rows, inner) = (loaded.rows(), loaded.dim_rev(0));
        let got = run(|g, b| gpu_dequantize(g, b, &loaded.reshape(&[rows, inner])?));
        assert_close(&t.name, &got, &dequantize(gpu_format(t), &t.data).unwrap(), 0.0);
    }
    // Every injected fault cost exactly one retry.
    let seen = server.seen();
    let injected = seen.iter().filter(|s| s.hurt).count();
    assert!(injected >= 10, "only {injected} faults were reached in {} requests", seen.len());
    assert_eq!(src.retries(), injected as u64);
    // Resume: after a truncation at 1000 bytes the next request starts 1000 bytes later.
    let starts: Vec<usize> = seen.iter().filter_map(|s| parse_range(s.range.as_deref()?)).map(|r| r.0).collect();
    assert!(starts.windows(2).any(|w| w[1] == w[0] + 1000), "no resumed request in {starts:?}");
}

#[test]
fn bytes_are_identical_through_faults_and_progress_is_reported() {
    let mut rng = Rng::new(72);
    let tensors: Vec<TensorData> = (0..6)
        .map(|i| TensorData {
            name: format!("t{i}"),
            shape: vec![5000],
            dtype: FileDType::Gpu(DType::F16),
            data: rng.bytes(10000),
        })
        .collect();
    let file = write_safetensors(&[], &tensors).unwrap();
    let faults = vec![
        Fault::None,
        Fault::Truncate(3333),
        Fault::Truncate(1),
        Fault::Stall(0),
        Fault::Reset,
        Fault::Stall(5000),
        Fault::Unavailable,
    ];
    let server = Server::start(file.clone(), faults);
    let events: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let ev = events.clone();
    let mut src =
        HttpSource::open_with(&server.url("/f"), opts(), Some(Box::new(move |p| ev.lock().unwrap().push(p)))).unwrap();
    assert_eq!(src.len(), file.len() as u64);
    let header = read_header(&mut src).unwrap();
    for t in &tensors {
        let info = header.tensor(&t.name).unwrap();
        let got = src.read_range(info.offset, info.size as usize).unwrap();
        assert!(got == t.data, "{} differs from the file", t.name);
    }
    let whole = src.read_range(0, file.len()).unwrap();
    assert!(whole == file, "whole file differs");
    let events = events.lock().unwrap();
    assert!(events.windows(2).all(|w| w[1].bytes_done > w[0].bytes_done), "bytes_done grows");
    let last = events.last().unwrap();
    assert_eq!(last.total, file.len() as u64);
    assert_eq!(last.bytes_done, src.bytes_done());
    // open + read_header (whole small file) + the tensors + the whole file, each byte once.
    assert_eq!(last.bytes_done, (HEAD + 2 * file.len() + 6 * 10000) as u64, "every byte counted once");
    assert!(last.rate > 0.0);
}

#[test]
fn parallel_ranges_match_the_file() {
    let mut rng = Rng::new(73);
    let file = write_safetensors(
        &[],
        &[TensorData {
            name: "x".into(),
            shape: vec![40000],
            dtype: FileDType::Gpu(DType::F32),
            data: rng.bytes(160000),
        }],
    )
    .unwrap();
    let faults = vec![Fault::None, Fault::Truncate(500), Fault::Reset, Fault::None, Fault::Stall(10)];
    let server = Server::start(file.clone(), faults);
    let src = HttpSource::open_with(&server.url("/f"), HttpOptions { parallel: 3, ..opts() }, None).unwrap();
    let ranges: Vec<(u64, usize)> = (0..9).map(|i| (i * 17000 + 3, 16999)).collect();
    let got = src.read_ranges(&ranges).unwrap();
    for (&(o, n), g) in ranges.iter().zip(&got) {
        assert!(g[..] == file[o as usize..o as usize + n], "range at {o}");
    }
    assert!(src.read_ranges(&[(0, 10), (file.len() as u64, 1)]).is_err(), "a read past the end fails");
}

#[test]
fn redirect_is_followed_with_the_range() {
    let (file, _) = gguf_file();
    let server = Server::start(file.clone(), vec![]);
    let mut src = HttpSource::open_with(&server.url("/redirect"), opts(), None).unwrap();
    let header = read_header(&mut src).unwrap();
    assert_eq!(header.file_len, file.len() as u64);
    let n = file.len() - 2100;
    assert!(src.read_range(2000, n).unwrap() == file[2000..2000 + n]);
    let want = format!("bytes=2000-{}", 2000 + n - 1);
    let seen = server.seen();
    assert_eq!(seen[0].path, "/redirect");
    assert!(seen.iter().any(|s| s.path == "/f" && s.range.as_deref() == Some(want.as_str())), "{seen:?}");
    // Later ranges go to the final URL: the redirect is followed once, by `open`
    // (`resolve/main` could point at another commit by the next range).
    assert_eq!(seen.iter().filter(|s| s.path == "/redirect").count(), 1, "{seen:?}");
    assert_eq!(src.final_url(), server.url("/f"));
}

#[test]
fn an_expired_final_url_is_resolved_again() {
    let (file, _) = gguf_file();
    // Requests 0 and 1: `open` through the redirect; request 2: the pinned `/f` answers
    // 403 (a signed CDN URL that expired); the client asks `/redirect` again.
    let server =
        Server::start_versions(vec![file.clone()], vec![Fault::None, Fault::None, Fault::Forbidden], Tag::Etag, 0);
    let mut src = HttpSource::open_with(&server.url("/redirect"), opts(), None).unwrap();
    assert!(src.read_range(1000, 3000).unwrap() == file[1000..4000]);
    let paths: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/redirect", "/f", "/f", "/redirect", "/f"]);
}

/// Two versions of a file of the same size: the server switches to the second after
/// `open`'s request. Every read after that must fail with `FileChanged`, whichever
/// validator the server names the versions with, and no byte of the new version may
/// come back joined to the old one.
#[test]
fn a_file_that_changes_between_ranges_is_file_changed() {
    let mut rng = Rng::new(75);
    let (old, new) = (rng.bytes(20_000), rng.bytes(20_000));
    for tag in [Tag::Etag, Tag::LastModified, Tag::Linked] {
        for path in ["/f", "/redirect"] {
            // `open` is one request, or two through the redirect.
            let server =
                Server::start_versions(vec![old.clone(), new.clone()], vec![], tag, if path == "/f" { 1 } else { 2 });
            let mut src = HttpSource::open_with(&server.url(path), opts(), None).unwrap();
            assert!(src.validator().is_some(), "{tag:?}: no validator pinned");
            match src.read_range(5000, 10_000) {
                Err(e @ Error::FileChanged { .. }) => {
                    let m = e.to_string();
                    assert!(
                        m.contains(&server.url(path)) && m.contains("changed on the server") && m.contains("Retry"),
                        "{tag:?}: {m}"
                    );
                }
                Err(e) => panic!("{tag:?} {path}: wrong error {e:?}"),
                Ok(b) => {
                    panic!("{tag:?} {path}: read {} bytes of the new version (old: {})", b.len(), b == old[5000..15000])
                }
            }
            let seen = server.seen();
            // `If-Range` only where the server can match it: a strong ETag or a date.
            let if_range = seen.last().unwrap().if_range.clone();
            match tag {
                Tag::Etag => assert_eq!(if_range.as_deref(), Some("\"v0\"")),
                Tag::LastModified => assert!(if_range.is_some_and(|d| d.contains("01 Dec")), "{seen:?}"),
                _ => assert_eq!(if_range, None, "{seen:?}"),
            }
        }
    }
    // Without a change the same reads succeed.
    let server = Server::start_versions(vec![old.clone()], vec![], Tag::Linked, 1);
    let mut src = HttpSource::open_with(&server.url("/f"), opts(), None).unwrap();
    assert!(src.read_range(5000, 10_000).unwrap() == old[5000..15000]);
}

#[test]
fn no_range_support_and_not_found_are_typed_errors() {
    let (file, _) = gguf_file();
    let server = Server::start(file, vec![]);
    let url = server.url("/norange");
    match HttpSource::open_with(&url, opts(), None) {
        Err(e @ Error::NoRangeSupport { .. }) => {
            assert!(e.to_string().contains(&url) && e.to_string().contains("Range"), "{e}");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a host without ranges was accepted"),
    }
    let url = server.url("/missing.gguf");
    match HttpSource::open_with(&url, opts(), None) {
        Err(e @ Error::Http { status: 404, .. }) => {
            assert!(e.to_string().contains(&url) && e.to_string().contains("check the URL"), "{e}")
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a 404 was accepted"),
    }
}

#[test]
fn endless_faults_give_up_after_the_retries() {
    let (file, _) = gguf_file();
    for (fault, what) in [
        (Fault::Stall(0), "timeout"),
        (Fault::Reset, "reset"),
        (Fault::Unavailable, "503"),
        (Fault::Truncate(0), "empty body"),
    ] {
        let server = Server::start(file.clone(), vec![fault; 10]);
        let t0 = std::time::Instant::now();
        let result = HttpSource::open_with(&server.url("/f"), opts(), None);
        let requests = server.seen().len();
        assert_eq!(requests, 4, "{what}: 1 try + 3 retries");
        assert!(t0.elapsed() < Duration::from_secs(3), "{what}: took {:?}", t0.elapsed());
        match (fault, result) {
            (Fault::Stall(_), Err(Error::Timeout { url, .. })) => assert!(url.ends_with("/f")),
            (Fault::Unavailable, Err(Error::Http { status: 503, .. })) => {}
            (Fault::Reset | Fault::Truncate(_), Err(Error::Io { file, .. })) => assert!(file.ends_with("/f")),
            (_, Err(e)) => panic!("{what}: wrong error {e:?}"),
            (_, Ok(_)) => panic!("{what}: succeeded"),
        }
    }
}

#[test]
fn files_smaller_than_the_first_fetch_and_empty_files() {
    let mut rng = Rng::new(74);
    for n in [0, 1, HEAD - 1, HEAD, HEAD + 1] {
        let file = rng.bytes(n);
        let server = Server::start(file.clone(), vec![Fault::None, Fault::Truncate(HEAD / 2)]);
        let mut src = HttpSource::open_with(&server.url("/f"), opts(), None).unwrap();
        assert_eq!(src.len(), n as u64, "size of a {n}-byte file");
        assert!(src.read_range(0, n).unwrap() == file, "{n}-byte file");
        assert!(src.read_range(n as u64, 1).is_err(), "a read past the end of a {n}-byte file fails");
    }
}

/// `bench_stream` (iclora bench stream) over the loopback server on a FLUX-shaped GGUF that
/// `write_flux_gguf` makes at width 64: the file parses with the planned shapes and formats, its
/// size is what the header implies, and every tensor streams (file bytes = the tensors' sizes).
#[test]
fn bench_stream_loads_a_generated_flux_gguf() {
    use iclora::bench::stream::{bench_stream, flux_gguf_plan, write_flux_gguf};
    let path = std::env::temp_dir().join(format!("iclora-stream-{}.gguf", std::process::id()));
    let len = write_flux_gguf(path.to_str().unwrap(), 400_000, 64).unwrap();
    let file = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(file.len() as u64, len);
    let header =
        read_header(&mut iclora::weights::load::MemSource { name: "flux.gguf".into(), bytes: file.clone() }).unwrap();
    let plan = flux_gguf_plan(400_000, 64);
    let got: Vec<(String, Vec<u64>, FileDType)> =
        header.tensors.iter().map(|t| (t.name.clone(), t.shape.clone(), t.dtype)).collect();
    let want: Vec<(String, Vec<u64>, FileDType)> =
        plan.into_iter().map(|(n, s, d)| (n, s, FileDType::Gpu(d))).collect();
    assert_eq!(got, want);
    assert!(
        got.iter().any(|t| t.2 == FileDType::Gpu(DType::Q4_0))
            && got.iter().any(|t| t.0 == "double_blocks.1.txt_mlp.2.weight")
    );
    let last = header.tensors.iter().map(|t| t.offset + t.size).max().unwrap();
    assert!(last <= len && len - last < 32, "data ends at {last}, file is {len}");
    let server = Server::start(file, vec![]);
    let r = bench_stream(gpu(), &server.url("/f"), iclora::weights::load::Convert::Q8_0, |_, _| {}).unwrap();
    assert_eq!((r.tensors, r.file_bytes), (header.tensors.len(), header.tensors.iter().map(|t| t.size).sum::<u64>()));
    assert!(r.gpu_bytes >= r.file_bytes && r.mb_per_s() > 0.0);
}
