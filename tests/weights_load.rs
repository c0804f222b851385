//! Loading tensors from files the writers make, in every supported format,
//! onto the GPU; read back through the GPU dequantizer and compared exactly
//! (tolerance 0) with `reference::quant::dequantize` of the file bytes (F8:
//! with an independent decoder of E4M3/E5M2 as safetensors' `Dtype` defines them,
//! safetensors/src/tensor.rs @ 24b0b28).

mod common;

use common::weights::{f8_bytes, Counting};
use common::{assert_close, gpu, run, Rng};
use iclora::gpu::{DType, Tensor};
use iclora::kernels::embedding::dequantize as gpu_dequantize;
use iclora::reference::quant::dequantize;
use iclora::reference::random::weight_bytes;
use iclora::weights::gguf::{ggml_type, write_gguf};
use iclora::weights::load::{
    f8_e4m3_to_f32, f8_e5m2_to_f32, f8_to_f16, gpu_layout, load_tensor, load_tensor_chunked, read_header, FileSource,
    MemSource,
};
use iclora::weights::safetensors::{file_dtype, write_safetensors};
use iclora::weights::tensor_info::{FileDType, MetaValue, TensorData};
use iclora::Error;

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("iclora-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The tensor as F32 `[rows, innermost]`, dequantized on the GPU.
fn gpu_values(t: &Tensor) -> Vec<f32> {
    let rows = t.rows();
    let inner = t.dim_rev(0);
    run(|g, b| gpu_dequantize(g, b, &t.reshape(&[rows, inner])?))
}

/// An independent E4M3 decoder (f64 arithmetic) for the comparison.
fn e4m3_reference(b: u8) -> f32 {
    let (s, e, m) = (b >> 7, ((b >> 3) & 15) as i32, (b & 7) as f64);
    let v = if e == 0 { m / 8.0 * 2f64.powi(-6) } else { (1.0 + m / 8.0) * 2f64.powi(e - 7) };
    (if s == 1 { -v } else { v }) as f32
}

#[test]
fn gguf_every_quant_type_loads_exactly() {
    let mut rng = Rng::new(31);
    let mut tensors = Vec::new();
    for d in DType::WEIGHT_FORMATS {
        let be = d.block_elems() as u64;
        // A FLUX width, an odd row count, and a 3-D tensor (conv-like) flattened to rows.
        let shapes: Vec<Vec<u64>> = if d.is_quantized() {
            vec![vec![3, 3072], vec![2, 3, be]]
        } else {
            vec![vec![3, 7], vec![5], vec![2, 3, 4]]
        };
        for (i, shape) in shapes.into_iter().enumerate() {
            let numel = shape.iter().product::<u64>() as usize;
            let data = weight_bytes(&mut rng, d, numel, 1.0, 0.1);
            tensors.push(TensorData { name: format!("{d}.{i}"), shape, dtype: FileDType::Gpu(d), data });
        }
    }
    let meta = vec![("general.architecture".to_string(), MetaValue::Str("flux".into()))];
    let path = temp_file("all.gguf", &write_gguf(&meta, &tensors).unwrap());
    let mut src = FileSource::open(&path).unwrap();
    let header = read_header(&mut src).unwrap();
    for t in &tensors {
        let info = header.tensor(&t.name).unwrap();
        let expected = dequantize(t.dtype_gpu(), &t.data).unwrap();
        let whole = load_tensor(gpu(), &mut src, &header, info).unwrap();
        assert_eq!(whole.dtype(), t.dtype_gpu());
        if t.dtype_gpu().is_quantized() {
            let ne0 = *t.shape.last().unwrap() as usize;
            assert_eq!(
                whole.shape(),
                &[t.data.len() / t.dtype_gpu().gguf_block_bytes() * t.dtype_gpu().block_elems() / ne0, ne0]
            );
        } else {
            assert_eq!(whole.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(), t.shape);
        }
        assert_close(&format!("{} whole", t.name), &gpu_values(&whole), &expected, 0.0);
        // Tiny chunks: one block (or word) per read, so every chunk boundary is exercised.
        let mut counting = Counting { inner: FileSource::open(&path).unwrap(), max_read: 0, total: 0 };
        let chunked = load_tensor_chunked(gpu(), &mut counting, &header.file, info, 1).unwrap();
        let unit = if t.dtype_gpu().is_quantized() { t.dtype_gpu().gguf_block_bytes() } else { 4 };
        assert!(
            counting.max_read <= unit && counting.total == info.size,
            "{}: reads {} / {}",
            t.name,
            counting.max_read,
            counting.total
        );
        assert_close(&format!("{} chunked", t.name), &gpu_values(&chunked), &expected, 0.0);
    }
    std::fs::remove_file(path).ok();
}

trait GpuDType {
    fn dtype_gpu(&self) -> DType;
}

impl GpuDType for TensorData {
    fn dtype_gpu(&self) -> DType {
        match self.dtype {
            FileDType::Gpu(d) => d,
            other => panic!("{other} is not a GPU format"),
        }
    }
}

#[test]
fn safetensors_floats_and_f8_load_exactly() {
    let mut rng = Rng::new(32);
    let mut tensors = Vec::new();
    for (i, shape) in [vec![3u64, 3072], vec![7], vec![1, 5, 3]].into_iter().enumerate() {
        let numel = shape.iter().product::<u64>() as usize;
        for d in [DType::F32, DType::F16, DType::BF16] {
            tensors.push(TensorData {
                name: format!("{d}.{i}"),
                shape: shape.clone(),
                dtype: FileDType::Gpu(d),
                data: weight_bytes(&mut rng, d, numel, 2.0, 0.0),
            });
        }
        for d in [FileDType::F8E4M3, FileDType::F8E5M2] {
            tensors.push(TensorData {
                name: format!("{d}.{i}"),
                shape: shape.clone(),
                dtype: d,
                data: f8_bytes(&mut rng, numel, d),
            });
        }
    }
    let bytes = write_safetensors(&[], &tensors).unwrap();
    let mut src = MemSource { name: "mixed.safetensors".into(), bytes };
    let header = read_header(&mut src).unwrap();
    for t in &tensors {
        let info = header.tensor(&t.name).unwrap();
        let expected: Vec<f32> = match t.dtype {
            FileDType::Gpu(d) => dequantize(d, &t.data).unwrap(),
            FileDType::F8E4M3 => t.data.iter().map(|&b| e4m3_reference(b)).collect(),
            _ => t.data.iter().map(|&b| f8_e5m2_to_f32(b)).collect(),
        };
        for chunk in [1 << 24, 6, 1] {
            let loaded = load_tensor_chunked(gpu(), &mut src, &header.file, info, chunk).unwrap();
            let want = if matches!(t.dtype, FileDType::Gpu(_)) { t.dtype_gpu() } else { DType::F16 };
            assert_eq!(loaded.dtype(), want, "{}", t.name);
            assert_close(&format!("{} chunk {chunk}", t.name), &gpu_values(&loaded), &expected, 0.0);
        }
    }
}

#[test]
fn f8_special_values() {
    assert_eq!(f8_e4m3_to_f32(0x7E), 448.0);
    assert_eq!(f8_e4m3_to_f32(0xFE), -448.0);
    assert!(f8_e4m3_to_f32(0x7F).is_nan() && f8_e4m3_to_f32(0xFF).is_nan());
    assert_eq!(f8_e4m3_to_f32(0x01), 0.001953125);
    assert_eq!(f8_e4m3_to_f32(0x38), 1.0);
    assert_eq!(f8_e4m3_to_f32(0x80).to_bits(), (-0.0f32).to_bits());
    assert_eq!(f8_e5m2_to_f32(0x3C), 1.0);
    assert_eq!(f8_e5m2_to_f32(0x7C), f32::INFINITY);
    assert!(f8_e5m2_to_f32(0x7D).is_nan());
    assert_eq!(f8_e5m2_to_f32(0x01), 2f32.powi(-16));
    for b in 0..=255u8 {
        let (got, want) = (f8_e4m3_to_f32(b), e4m3_reference(b));
        assert!(
            got.to_bits() == want.to_bits() || (b & 0x7f == 0x7f && got.is_nan()),
            "E4M3 {b:#04x}: {got} vs {want}"
        );
        // The F16 widening is exact for every byte, NaN included.
        for (d, f) in [(FileDType::F8E4M3, f8_e4m3_to_f32 as fn(u8) -> f32), (FileDType::F8E5M2, f8_e5m2_to_f32)] {
            let h = f8_to_f16(d, &[b]);
            assert_eq!(h.len(), 4, "padded to a word");
            let v = half::f16::from_le_bytes([h[0], h[1]]).to_f32();
            assert!(v.to_bits() == f(b).to_bits() || (v.is_nan() && f(b).is_nan()), "{d} {b:#04x}");
        }
    }
}

#[test]
fn unsupported_and_unreadable_tensors_are_typed_errors() {
    let mut rng = Rng::new(33);
    let q3k =
        TensorData { name: "q3k".into(), shape: vec![1, 256], dtype: ggml_type(11).unwrap(), data: rng.bytes(110) };
    let bytes = write_gguf(&[], &[q3k]).unwrap();
    let mut src = MemSource { name: "q3.gguf".into(), bytes: bytes.clone() };
    let header = read_header(&mut src).unwrap();
    match load_tensor(gpu(), &mut src, &header, &header.tensors[0]) {
        Err(Error::UnsupportedFormat { format, why, .. }) => {
            assert!(format == "Q3_K" && why.contains("q3k") && why.contains("q3.gguf"))
        }
        other => panic!("{other:?}"),
    }
    let ints = TensorData { name: "ids".into(), shape: vec![2], dtype: file_dtype("I64").unwrap(), data: vec![0; 16] };
    let mut st = MemSource { name: "i.safetensors".into(), bytes: write_safetensors(&[], &[ints]).unwrap() };
    let h = read_header(&mut st).unwrap();
    assert!(
        matches!(gpu_layout(&h.file, &h.tensors[0]), Err(Error::UnsupportedFormat { format, .. }) if format == "I64")
    );

    // The file shrank after its header was read: an I/O error, not a panic.
    let f32s = TensorData { name: "w".into(), shape: vec![64], dtype: FileDType::Gpu(DType::F32), data: vec![0; 256] };
    let bytes = write_gguf(&[], &[f32s]).unwrap();
    let header = read_header(&mut MemSource { name: "w.gguf".into(), bytes: bytes.clone() }).unwrap();
    let mut short = MemSource { name: "w.gguf".into(), bytes: bytes[..bytes.len() - 10].to_vec() };
    assert!(
        matches!(load_tensor(gpu(), &mut short, &header, &header.tensors[0]), Err(Error::Io { file, .. }) if file == "w.gguf")
    );

    let missing = std::env::temp_dir().join("iclora-no-such-file.gguf");
    assert!(matches!(FileSource::open(&missing), Err(Error::Io { file, .. }) if file.contains("iclora-no-such-file")));
}
