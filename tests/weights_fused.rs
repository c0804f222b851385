//! Fused projections assembled on the GPU (`load_rows_into`): split parts (diffusers' to_q/to_k/
//! to_v, proj_mlp) each stream into their row range of one tensor. The result must be
//! byte-identical to loading the same rows as one stored tensor, for every format the loader
//! reads, every conversion and chunk sizes down to one block per read; parts that do not fit
//! are typed errors.

mod common;

use common::{gpu, Rng};
use iclora::gpu::{DType, Tensor};
use iclora::reference::random::weight_bytes;
use iclora::weights::gguf::write_gguf;
use iclora::weights::load::{
    converted_layout, load_rows_into, load_rows_into_chunked, load_tensor_as, read_header, Convert, MemSource, Pacer,
    Uploads,
};
use iclora::weights::safetensors::write_safetensors;
use iclora::weights::tensor_info::{FileDType, TensorData};
use iclora::Error;

fn gpu_bytes(t: &Tensor) -> Vec<u8> {
    pollster::block_on(gpu().read_bytes(t)).unwrap()
}

/// Bytes of `n` F8 values with no NaN/Inf.
fn f8_bytes(rng: &mut Rng, n: usize, dtype: FileDType) -> Vec<u8> {
    let special = |b: u8| if dtype == FileDType::F8E4M3 { b & 0x7f == 0x7f } else { b & 0x7c == 0x7c };
    (0..n)
        .map(|_| loop {
            let b = rng.next_u64() as u8;
            if !special(b) {
                break b;
            }
        })
        .collect()
}

/// Parts `p0..p2` of `[rows_i, k]` and, in the same file, `fused` holding their rows stacked.
fn file_with_parts(rng: &mut Rng, dtype: FileDType, rows: &[usize], k: usize) -> (MemSource, Vec<String>) {
    let mut tensors = Vec::new();
    let mut all = Vec::new();
    for (i, &r) in rows.iter().enumerate() {
        let data = match dtype {
            FileDType::Gpu(d) => weight_bytes(rng, d, r * k, 1.5, 0.1),
            f8 => f8_bytes(rng, r * k, f8),
        };
        all.extend_from_slice(&data);
        tensors.push(TensorData { name: format!("p{i}"), shape: vec![r as u64, k as u64], dtype, data });
    }
    let total: usize = rows.iter().sum();
    tensors.push(TensorData { name: "fused".into(), shape: vec![total as u64, k as u64], dtype, data: all });
    let gguf = matches!(dtype, FileDType::Gpu(d) if d.is_quantized());
    let bytes = if gguf { write_gguf(&[], &tensors).unwrap() } else { write_safetensors(&[], &tensors).unwrap() };
    let name = if gguf { "parts.gguf" } else { "parts.safetensors" };
    (MemSource { name: name.into(), bytes }, (0..rows.len()).map(|i| format!("p{i}")).collect())
}

#[test]
fn parts_stream_into_their_rows_exactly() {
    let mut rng = Rng::new(77);
    let (rows, k) = ([3usize, 5, 2], 256);
    let formats = [
        FileDType::Gpu(DType::F32),
        FileDType::Gpu(DType::F16),
        FileDType::Gpu(DType::BF16),
        FileDType::F8E4M3,
        FileDType::F8E5M2,
        FileDType::Gpu(DType::Q8_0),
        FileDType::Gpu(DType::Q4_0),
        FileDType::Gpu(DType::Q4K),
    ];
    for dtype in formats {
        let (mut src, parts) = file_with_parts(&mut rng, dtype, &rows, k);
        let header = read_header(&mut src).unwrap();
        let fused = header.tensor("fused").unwrap().clone();
        for convert in [Convert::Keep, Convert::F16, Convert::Q8_0, Convert::Q4_0] {
            let want = gpu_bytes(&load_tensor_as(gpu(), &mut src, &header, &fused, convert).unwrap());
            let (shape, target) = converted_layout(&header.file, &fused, convert).unwrap();
            for chunk in [1usize << 24, 100, 1] {
                let dst = gpu().empty(&shape, target).unwrap();
                let mut first = 0;
                for (name, &r) in parts.iter().zip(&rows) {
                    let info = header.tensor(name).unwrap();
                    load_rows_into_chunked(gpu(), &mut src, &header.file, info, convert, chunk, 1.0, &dst, first)
                        .unwrap();
                    first += r;
                }
                let got = gpu_bytes(&dst);
                let what = format!("{dtype} as {convert:?} (→ {target}), chunk {chunk}");
                assert_eq!(got.len(), want.len(), "{what}");
                if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
                    panic!("{what}: byte {i} of {} differs: got {}, expected {}", got.len(), got[i], want[i]);
                }
            }
        }
    }
}

#[test]
fn parts_that_do_not_fit_are_refused() {
    let mut rng = Rng::new(78);
    let (mut src, _) = file_with_parts(&mut rng, FileDType::Gpu(DType::F16), &[3, 1], 5);
    let header = read_header(&mut src).unwrap();
    let p0 = header.tensor("p0").unwrap().clone();
    let p1 = header.tensor("p1").unwrap().clone();
    let refused = |what: &str, r: iclora::Result<()>| match r {
        Err(Error::ShapeMismatch { op: "load_rows_into", got, .. }) => assert!(got.contains('`'), "{what}: {got}"),
        other => panic!("{what}: expected a ShapeMismatch, got {other:?}"),
    };
    // Past the end, another row width, another format, and an F16 part starting mid-word (row 3
    // of width 5 is element 15).
    let dst = gpu().empty(&[4, 5], DType::F16).unwrap();
    refused("past the end", load_rows_into(gpu(), &mut src, &header, &p0, Convert::Keep, &dst, 2));
    refused(
        "row width",
        load_rows_into(gpu(), &mut src, &header, &p0, Convert::Keep, &gpu().empty(&[8, 4], DType::F16).unwrap(), 0),
    );
    refused(
        "format",
        load_rows_into(gpu(), &mut src, &header, &p0, Convert::Keep, &gpu().empty(&[4, 5], DType::F32).unwrap(), 0),
    );
    refused("mid-word", load_rows_into(gpu(), &mut src, &header, &p1, Convert::Keep, &dst, 3));
    // What fits still loads, and a row after it lands where it should.
    load_rows_into(gpu(), &mut src, &header, &p0, Convert::Keep, &dst, 0).unwrap();
}

/// Planned uploads (a model's tree built first, the bytes streamed after, as the browser's
/// paced loader does) give the same bytes as loading at once, and the pacer waits for the GPU
/// once per `every` bytes uploaded.
#[test]
fn planned_uploads_stream_the_same_bytes_with_pacing() {
    let mut rng = Rng::new(79);
    let (rows, k) = ([64usize, 32, 96], 1024);
    for (dtype, convert) in [
        (FileDType::Gpu(DType::F32), Convert::Keep),
        (FileDType::Gpu(DType::BF16), Convert::Q8_0),
        (FileDType::Gpu(DType::Q4_0), Convert::Keep),
    ] {
        let (mut src, parts) = file_with_parts(&mut rng, dtype, &rows, k);
        let header = read_header(&mut src).unwrap();
        let fused = header.tensor("fused").unwrap().clone();
        let want = gpu_bytes(&load_tensor_as(gpu(), &mut src, &header, &fused, convert).unwrap());
        // One whole tensor and one assembled from its parts, both planned before any byte moves.
        let mut uploads = Uploads::new(&header);
        let whole = uploads.tensor_as(gpu(), &mut src, &header, &fused, convert).unwrap();
        let (shape, target) = converted_layout(&header.file, &fused, convert).unwrap();
        let assembled = gpu().empty(&shape, target).unwrap();
        let mut first = 0;
        for (name, &r) in parts.iter().zip(&rows) {
            uploads.rows_into(&mut src, &header, header.tensor(name).unwrap(), convert, &assembled, first).unwrap();
            first += r;
        }
        // What is written to the GPU: the stored form, or the source form staged for conversion.
        let numel = rows.iter().sum::<usize>() * k;
        let uploaded = 2 * if convert == Convert::Keep { want.len() } else { numel * 2 };
        let every = 64 << 10;
        let chunk = 16 << 10;
        let pacer = pollster::block_on(uploads.run(gpu(), &mut src, chunk, Pacer::every(every))).unwrap();
        let what = format!("{dtype} as {convert:?}");
        assert_eq!(gpu_bytes(&whole), want, "{what}: whole");
        assert_eq!(gpu_bytes(&assembled), want, "{what}: assembled");
        // Each wait follows at least `every` bytes and at most `every` + one chunk's upload
        // (converted chunks can be larger than the file's: F32 staging of BF16).
        let (lo, hi) = ((uploaded / (every + 4 * chunk)) as u64, (uploaded / every) as u64);
        assert!(
            pacer.waits >= lo.max(1) && pacer.waits <= hi,
            "{what}: {} waits for {uploaded} bytes every {every}",
            pacer.waits
        );
    }
}
