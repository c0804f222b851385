//! safetensors and GGUF header parsers and writers (no GPU): round trips in
//! every format, prefix growth (`NeedMore`), and malformed files (generated
//! here, plus the committed corpus in tests/fixtures/malformed) that must give
//! typed errors naming the file, never a panic.

use iclora::gpu::DType;
use iclora::reference::random::{weight_bytes, Rng};
use iclora::weights::gguf::{ggml_type, parse_gguf_header, write_gguf};
use iclora::weights::load::{parse_header, read_header, MemSource};
use iclora::weights::safetensors::{file_dtype, parse_safetensors_header, write_safetensors};
use iclora::weights::tensor_info::{FileDType, MetaType, MetaValue, Parsed, TensorData, WeightsHeader};
use iclora::Error;

fn tensor(rng: &mut Rng, name: &str, shape: &[u64], dtype: FileDType) -> TensorData {
    let numel = shape.iter().product::<u64>() as usize;
    let data = match dtype {
        FileDType::Gpu(d) => weight_bytes(rng, d, numel, 1.0, 0.1),
        other => rng.bytes(other.byte_size(numel as u64).unwrap() as usize),
    };
    TensorData { name: name.into(), shape: shape.to_vec(), dtype, data }
}

fn full(bytes: &[u8], name: &str) -> WeightsHeader {
    match parse_header(bytes, bytes.len() as u64, name) {
        Ok(Parsed::Header(h)) => h,
        other => panic!("{name}: expected a header, got {other:?}"),
    }
}

/// Every tensor's bytes in the file are the bytes written; shapes and types survive.
fn check_round_trip(h: &WeightsHeader, bytes: &[u8], tensors: &[TensorData]) {
    assert_eq!(h.tensors.len(), tensors.len());
    for t in tensors {
        let info = h.tensor(&t.name).unwrap_or_else(|| panic!("`{}` missing", t.name));
        let expected_shape = if t.shape.is_empty() { vec![1] } else { t.shape.clone() };
        assert!(info.shape == t.shape || info.shape == expected_shape, "`{}` shape {:?}", t.name, info.shape);
        assert_eq!(info.dtype, t.dtype, "`{}`", t.name);
        assert_eq!(&bytes[info.offset as usize..(info.offset + info.size) as usize], &t.data[..], "`{}` bytes", t.name);
    }
}

fn st_sample(rng: &mut Rng) -> (Vec<u8>, Vec<TensorData>) {
    let tensors = vec![
        tensor(rng, "z.f32", &[3, 5], FileDType::Gpu(DType::F32)),
        tensor(rng, "a.f16", &[7], FileDType::Gpu(DType::F16)),
        tensor(rng, "m.bf16", &[2, 3, 4], FileDType::Gpu(DType::BF16)),
        tensor(rng, "e4m3", &[4, 3], FileDType::F8E4M3),
        tensor(rng, "e5m2", &[5], FileDType::F8E5M2),
        tensor(rng, "scalar", &[], FileDType::Gpu(DType::F32)),
        tensor(rng, "empty", &[0, 4], FileDType::Gpu(DType::F16)),
        tensor(rng, "ints", &[3], file_dtype("I32").unwrap()),
    ];
    let meta = vec![("format".to_string(), "pt".to_string()), ("note".to_string(), "ünïcode".to_string())];
    (write_safetensors(&meta, &tensors).unwrap(), tensors)
}

fn gguf_sample(
    rng: &mut Rng,
    alignment: Option<u32>,
    tokens: usize,
) -> (Vec<u8>, Vec<(String, MetaValue)>, Vec<TensorData>) {
    use MetaValue::*;
    let mut meta: Vec<(String, MetaValue)> = vec![
        ("general.architecture".into(), Str("flux".into())),
        ("u8".into(), U8(200)),
        ("i8".into(), I8(-3)),
        ("u16".into(), U16(65535)),
        ("i16".into(), I16(-2)),
        ("u32".into(), U32(1 << 31)),
        ("i32".into(), I32(-5)),
        ("f32".into(), F32(1.5)),
        ("bool".into(), Bool(true)),
        ("u64".into(), U64(u64::MAX)),
        ("i64".into(), I64(i64::MIN)),
        ("f64".into(), F64(0.1)),
        (
            "nested".into(),
            Array(MetaType::Array, vec![Array(MetaType::I32, vec![I32(1), I32(2)]), Array(MetaType::I32, vec![])]),
        ),
        ("empty".into(), Array(MetaType::U8, vec![])),
        ("tokenizer.ggml.tokens".into(), Array(MetaType::Str, (0..tokens).map(|i| Str(format!("▁tok{i}"))).collect())),
    ];
    if let Some(a) = alignment {
        meta.push(("general.alignment".into(), U32(a)));
    }
    let mut tensors: Vec<TensorData> = DType::WEIGHT_FORMATS
        .iter()
        .map(|&d| tensor(rng, &format!("w.{d}"), &[3, 2 * d.block_elems() as u64], FileDType::Gpu(d)))
        .collect();
    tensors.push(tensor(rng, "conv.q8", &[2, 3, 32], FileDType::Gpu(DType::Q8_0)));
    tensors.push(tensor(rng, "bias", &[7], FileDType::Gpu(DType::F32)));
    tensors.push(tensor(rng, "q3k", &[1, 256], ggml_type(11).unwrap()));
    (write_gguf(&meta, &tensors).unwrap(), meta, tensors)
}

#[test]
fn safetensors_round_trip_every_dtype() {
    let (bytes, tensors) = st_sample(&mut Rng::new(1));
    let h = full(&bytes, "sample.safetensors");
    check_round_trip(&h, &bytes, &tensors);
    assert_eq!(h.meta("note").and_then(MetaValue::as_str), Some("ünïcode"));
    assert_eq!(h.data_start % 8, 0, "the writer pads the JSON to 8 bytes");
    // The writer's JSON is sorted by name, so entries are not in offset order.
    assert!(h.tensors.windows(2).any(|w| w[0].offset > w[1].offset));
    match h.require_supported() {
        Err(Error::UnsupportedFormat { format, why, .. }) => assert!(format == "I32" && why.contains("ints"), "{why}"),
        other => panic!("expected I32 to be unsupported, got {other:?}"),
    }
}

#[test]
fn gguf_round_trip_every_type_and_metadata() {
    for alignment in [None, Some(1), Some(64)] {
        let (bytes, meta, tensors) = gguf_sample(&mut Rng::new(2), alignment, 5);
        let h = full(&bytes, "sample.gguf");
        assert_eq!(h.metadata, meta);
        check_round_trip(&h, &bytes, &tensors);
        let a = alignment.unwrap_or(32) as u64;
        assert!(
            h.data_start.is_multiple_of(a) && h.tensors.iter().all(|t| (t.offset - h.data_start).is_multiple_of(a))
        );
        assert_eq!(h.tensor("conv.q8").unwrap().shape, vec![2, 3, 32], "ne reversed to PyTorch order");
        assert!(h.require_supported().unwrap_err().to_string().contains("Q3_K"));
    }
}

/// A tokenizer-sized header (32k strings, like T5's) is fetched by doubling
/// prefixes, and every prefix of a valid file either asks for more or parses.
#[test]
fn prefixes_grow_until_the_header_parses() {
    let (bytes, _, _) = gguf_sample(&mut Rng::new(3), None, 32_128);
    let (len, mut prefix_len, mut rounds) = (bytes.len() as u64, 16u64, 0);
    let h = loop {
        match parse_gguf_header(&bytes[..prefix_len as usize], len, "t5.gguf").unwrap() {
            Parsed::Header(h) => break h,
            Parsed::NeedMore(n) => {
                assert!(n > prefix_len && n <= len && (n >= 2 * prefix_len || n == len), "{prefix_len} -> {n}");
                prefix_len = n;
                rounds += 1;
            }
        }
    };
    assert!(rounds <= 6, "{rounds} rounds");
    assert_eq!(h, full(&bytes, "t5.gguf"));
    let mut src = MemSource { name: "t5.gguf".into(), bytes: bytes.clone() };
    assert_eq!(read_header(&mut src).unwrap(), h);

    for (bytes, name) in
        [(gguf_sample(&mut Rng::new(4), None, 2).0, "p.gguf"), (st_sample(&mut Rng::new(4)).0, "p.safetensors")]
    {
        let whole = full(&bytes, name);
        for k in 0..=bytes.len() {
            match parse_header(&bytes[..k], bytes.len() as u64, name) {
                Ok(Parsed::NeedMore(n)) => {
                    assert!(n > k as u64 && n <= bytes.len() as u64, "{name} prefix {k}: NeedMore({n})")
                }
                Ok(Parsed::Header(h)) => assert_eq!(h, whole, "{name} prefix {k}"),
                Err(e) => panic!("{name} prefix {k} of a valid file: {e}"),
            }
        }
    }
}

fn assert_malformed(result: iclora::Result<Parsed>, file: &str, needle: &str) {
    match result {
        Err(e @ (Error::Malformed { .. } | Error::UnsupportedFormat { .. })) => {
            let msg = e.to_string();
            assert!(msg.contains(file) && msg.contains(needle), "{file}: message {msg:?} lacks {needle:?}");
        }
        other => panic!("{file}: expected an error containing {needle:?}, got {other:?}"),
    }
}

/// A file cut at every byte is an error (its last tensor is missing), never a panic.
#[test]
fn truncated_files_are_errors() {
    for (bytes, name) in
        [(gguf_sample(&mut Rng::new(5), Some(8), 2).0, "cut.gguf"), (st_sample(&mut Rng::new(5)).0, "cut.safetensors")]
    {
        for k in 0..bytes.len() {
            match parse_header(&bytes[..k], k as u64, name) {
                Err(Error::Malformed { file, .. }) => assert_eq!(file, name),
                other => panic!("{name} cut at {k}: {other:?}"),
            }
        }
    }
}

fn st(json: &str, data: usize) -> Vec<u8> {
    let mut b = (json.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(json.as_bytes());
    b.resize(b.len() + data, 0);
    b
}

#[test]
fn malformed_safetensors() {
    let t = |dtype: &str, shape: &str, b: u64, e: u64| {
        format!(r#"{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{b},{e}]}}"#)
    };
    let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(5000), "]".repeat(5000));
    let mut huge = st("{}", 0);
    huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let mut past = st("{}", 0);
    past[..8].copy_from_slice(&3u64.to_le_bytes());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (huge, "claims"),
        (past, "claims"),
        (vec![1, 2, 3], "shorter than"),
        (st("", 4), "does not start"),
        (st("{abc", 0), "header JSON"),
        (st(&format!(r#"{{"a":{}}}"#, t("F7", "[2]", 0, 2)), 2), "unknown dtype \"F7\""),
        (st(&format!(r#"{{"a":{}}}"#, t("F32", "[3]", 0, 8)), 8), "needs 12 bytes"),
        (st(&format!(r#"{{"a":{}}}"#, t("F32", "[1]", 8, 4)), 8), "end before"),
        (st(&format!(r#"{{"a":{}}}"#, t("F32", "[4]", 0, 16)), 8), "data section"),
        (st(&format!(r#"{{"a":{},"b":{}}}"#, t("F32", "[2]", 0, 8), t("F32", "[2]", 4, 12)), 12), "overlap"),
        (st(&format!(r#"{{"a":{},"a":{}}}"#, t("F32", "[1]", 0, 4), t("F32", "[1]", 4, 8)), 8), "appears twice"),
        (st(r#"{"__metadata__":{"k":1}}"#, 0), "not a string"),
        (st(r#"{"__metadata__":[]}"#, 0), "not a JSON object"),
        (st(&format!(r#"{{"a":{}}}"#, t("F32", "[-1]", 0, 0)), 0), "`shape`"),
        (st(&format!(r#"{{"a":{}}}"#, t("F32", "[4294967296,4294967296,4294967296]", 0, 4)), 4), "impossible"),
        (st(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, 8), "data_offsets"),
        (st(r#"{"a":{"shape":[1],"data_offsets":[0,4]}}"#, 4), "dtype"),
        (st("{\"\u{1}\":1}", 0).into_iter().map(|b| if b == 1 { 0xff } else { b }).collect(), "header JSON"),
        (st(&deep, 0), "header JSON"),
    ];
    for (i, (bytes, needle)) in cases.into_iter().enumerate() {
        let name = format!("case{i}.safetensors");
        assert_malformed(parse_safetensors_header(&bytes, bytes.len() as u64, &name), &name, needle);
    }
}

/// Raw GGUF bytes for malformed cases (the writer refuses to make them).
#[derive(Clone)]
struct G(Vec<u8>);

impl G {
    fn new(version: u32, tensors: u64, kvs: u64) -> G {
        G(b"GGUF".to_vec()).u32(version).u64(tensors).u64(kvs)
    }
    fn u32(mut self, v: u32) -> G {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> G {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn s(self, s: &str) -> G {
        let mut g = self.u64(s.len() as u64);
        g.0.extend_from_slice(s.as_bytes());
        g
    }
    fn tensor(self, name: &str, ne: &[u64], ggml: u32, offset: u64) -> G {
        let g = ne.iter().fold(self.s(name).u32(ne.len() as u32), |g, &d| g.u64(d));
        g.u32(ggml).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(mut self, n: usize) -> Vec<u8> {
        self.0.resize(self.0.len().div_ceil(32) * 32 + n, 0);
        self.0
    }
}

#[test]
fn malformed_gguf() {
    let kv = |k: &str| G::new(3, 0, 1).s(k);
    let one = |ne: &[u64], ggml: u32, off: u64, data: usize| G::new(3, 1, 0).tensor("w", ne, ggml, off).data(data);
    let mut nest = G::new(3, 0, 1).s("deep").u32(9);
    for _ in 0..5 {
        nest = nest.u32(9).u64(1);
    }
    let mut bad_name = G::new(3, 1, 0).u64(2);
    bad_name.0.extend_from_slice(&[0xff, 0xfe]);
    let bad_name = bad_name.u32(1).u64(1).u32(0).u64(0).data(32);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GGUX\x03\0\0\0".to_vec(), "magic"),
        (G::new(1, 0, 0).0, "version 1"),
        (G::new(3u32.swap_bytes(), 0, 0).0, "big-endian"),
        (G::new(3, 1 << 60, 0).0, "tensor_count"),
        (G::new(3, 0, 1 << 60).0, "metadata_kv_count"),
        (G::new(3, 0, 1).u64(1 << 40).u64(0).0, "runs past the end"),
        (kv("k").u32(8).u64(1000).u64(0).0, "runs past the end"),
        (kv("k").u32(13).u64(0).0, "unknown metadata value type 13"),
        (kv("k").u32(9).u32(77).u64(0).0, "unknown array element type 77"),
        (kv("k").u32(9).u32(0).u64(1 << 40).0, "array length"),
        (nest.u32(0).u64(0).0, "nested deeper"),
        (kv("general.alignment").u32(4).u32(48).0, "power of two"),
        (kv("general.alignment").u32(4).u32(0).0, "power of two"),
        (kv("general.alignment").u32(10).u64(32).0, "UINT32"),
        (
            G::new(3, 0, 2)
                .s("k")
                .u32(0)
                .0
                .into_iter()
                .chain([1])
                .chain(G(vec![]).s("k").u32(0).0)
                .chain([2])
                .collect(),
            "appears twice",
        ),
        (one(&[1, 1, 1, 1, 1], 0, 0, 4), "5 dimensions"),
        (one(&[1 << 40, 1 << 40], 0, 0, 0), "overflow"),
        (one(&[33, 2], 2, 0, 64), "not a multiple of the Q4_0 block"),
        (one(&[8], 0, 7, 64), "not a multiple of the alignment"),
        (one(&[8], 0, 64, 32), "data section"),
        (one(&[8], 99, 0, 32), "ggml type 99"),
        (G::new(3, 2, 0).tensor("a", &[8], 0, 0).tensor("b", &[8], 0, 0).data(32), "overlap"),
        (G::new(3, 2, 0).tensor("a", &[8], 0, 0).tensor("a", &[8], 0, 32).data(64), "appears twice"),
        (bad_name, "UTF-8"),
    ];
    for (i, (bytes, needle)) in cases.into_iter().enumerate() {
        let name = format!("case{i}.gguf");
        assert_malformed(parse_gguf_header(&bytes, bytes.len() as u64, &name), &name, needle);
    }
}

#[test]
fn malformed_fixture_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/malformed");
    let expected = std::fs::read_to_string(dir.join("EXPECTED")).unwrap();
    let listed: Vec<(&str, &str)> =
        expected.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once('\t')).collect();
    let mut files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.retain(|f| f != "EXPECTED");
    files.sort();
    assert_eq!(
        files,
        listed.iter().map(|(f, _)| f.to_string()).collect::<Vec<_>>(),
        "every fixture has an EXPECTED line"
    );
    for (file, needle) in listed {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        assert_malformed(parse_header(&bytes, bytes.len() as u64, file), file, needle);
    }
}

/// A short in-test fuzz run: random mutations of valid files, parsed with the
/// true length and with a longer claimed length; only typed errors may come out.
#[test]
fn mutated_headers_never_panic() {
    let mut rng = Rng::new(6);
    let bases = [gguf_sample(&mut rng, None, 3).0, st_sample(&mut rng).0];
    let interesting = [0u64, 1, 7, 0x7fff_ffff, 1 << 31, 1 << 32, 1 << 60, u64::MAX, u64::MAX / 2];
    for iter in 0..20_000 {
        let mut b = bases[iter % 2].clone();
        for _ in 0..1 + rng.below(4) {
            if b.is_empty() {
                break;
            }
            let at = rng.below(b.len());
            match rng.below(4) {
                0 => b[at] = rng.next_u64() as u8,
                1 => b[at] ^= 1 << rng.below(8),
                2 if at + 8 <= b.len() => {
                    let v = interesting[rng.below(interesting.len())].wrapping_add(rng.below(3) as u64);
                    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
                _ => b.truncate(at),
            }
        }
        let file_len = b.len() as u64 + if rng.below(2) == 0 { 0 } else { rng.below(1 << 20) as u64 };
        match parse_header(&b, file_len, "fuzz") {
            Ok(Parsed::NeedMore(n)) => assert!(
                n > b.len() as u64 && n <= file_len,
                "iteration {iter}: NeedMore({n}) for {}/{file_len}",
                b.len()
            ),
            Ok(Parsed::Header(_)) => {}
            Err(e @ (Error::Malformed { .. } | Error::UnsupportedFormat { .. })) => {
                assert!(e.to_string().contains("fuzz"), "{e}")
            }
            Err(e) => panic!("iteration {iter}: untyped error {e:?}"),
        }
    }
}

#[test]
fn inspect_lists_format_metadata_and_tensors() {
    let (bytes, _, tensors) = gguf_sample(&mut Rng::new(7), None, 40);
    let path = std::env::temp_dir().join(format!("iclora-inspect-{}.gguf", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iclora")).arg("inspect").arg(&path).output().unwrap();
    std::fs::remove_file(&path).ok();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("GGUF file") && text.contains("general.architecture = \"flux\"") && text.contains("(40 items)"),
        "{text}"
    );
    for t in &tensors {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{} ", t.name)))
            .unwrap_or_else(|| panic!("no line for {}", t.name));
        assert!(line.contains(t.dtype.name()) && line.contains(&t.data.len().to_string()), "{line}");
    }
}
