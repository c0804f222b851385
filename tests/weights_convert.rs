//! Conversion while loading (`load_tensor_as`, `Convert`, `FluxModel::load_with`).
//!
//! Tensor level: the loaded bytes must equal `reference::quantize` of the file's values exactly (the
//! GPU quantizer is bit-identical to ggml's reference), for every float source (F32, F16, BF16,
//! F8_E4M3, F8_E5M2), every target and chunk sizes down to one block / element pair per read.

mod common;

use common::weights::{f8_bytes, Counting};
use common::{assert_close, gpu, Rng};
use iclora::gpu::{DType, Tensor};
use iclora::model::flux::{FluxConfig, FluxInputs, FluxModel};
use iclora::reference::quant::dequantize;
use iclora::reference::quantize::quantize as reference_quantize;
use iclora::reference::random::weight_bytes;
use iclora::weights::gguf::write_gguf;
use iclora::weights::load::{
    f8_e4m3_to_f32, f8_e5m2_to_f32, load_tensor_as, load_tensor_as_chunked, read_header, Convert, LoadOptions,
    MemSource,
};
use iclora::weights::repack::repack;
use iclora::weights::safetensors::write_safetensors;
use iclora::weights::tensor_info::{FileDType, TensorData, TensorInfo};
use iclora::Error;

fn file_values(t: &TensorData) -> Vec<f32> {
    match t.dtype {
        FileDType::Gpu(d) => dequantize(d, &t.data).unwrap(),
        FileDType::F8E4M3 => t.data.iter().map(|&b| f8_e4m3_to_f32(b)).collect(),
        _ => t.data.iter().map(|&b| f8_e5m2_to_f32(b)).collect(),
    }
}

fn gpu_bytes(t: &Tensor) -> Vec<u8> {
    pollster::block_on(gpu().read_bytes(t)).unwrap()
}

#[test]
fn float_sources_convert_exactly_while_streaming() {
    let mut rng = Rng::new(41);
    let mut tensors = Vec::new();
    for (i, shape) in [vec![3u64, 3072], vec![5, 64], vec![7], vec![3, 5]].into_iter().enumerate() {
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
    let mut src = MemSource { name: "conv.safetensors".into(), bytes: write_safetensors(&[], &tensors).unwrap() };
    let header = read_header(&mut src).unwrap();
    for t in &tensors {
        let info = header.tensor(&t.name).unwrap();
        let (values, cols) = (file_values(t), *t.shape.last().unwrap() as usize);
        for convert in [Convert::F16, Convert::Q8_0, Convert::Q4_0] {
            let target = convert.target().unwrap();
            if target.is_quantized() && cols % 32 != 0 {
                continue;
            }
            let want = repack(target, &reference_quantize(target, &values).unwrap()).unwrap();
            for chunk in [1 << 24, 100, 1] {
                let mut counting = Counting {
                    inner: MemSource { name: src.name.clone(), bytes: src.bytes.clone() },
                    max_read: 0,
                    total: 0,
                };
                let loaded = load_tensor_as_chunked(gpu(), &mut counting, &header.file, info, convert, chunk).unwrap();
                let what = format!("{} → {target} chunk {chunk}", t.name);
                assert_eq!(loaded.dtype(), target, "{what}");
                let want_shape: Vec<usize> = if target.is_quantized() {
                    vec![values.len() / cols, cols]
                } else {
                    t.shape.iter().map(|&d| d as usize).collect()
                };
                assert_eq!(loaded.shape(), want_shape.as_slice(), "{what}");
                assert_eq!(counting.total, info.size, "{what}: every byte read once");
                let unit = if target.is_quantized() { 32 } else { 2 } * (info.size as usize / values.len());
                assert!(counting.max_read <= chunk.max(unit), "{what}: a read of {} bytes", counting.max_read);
                let got = gpu_bytes(&loaded);
                if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
                    panic!("{what}: byte {i} differs: got {}, expected {}", got[i], want[i]);
                }
            }
        }
    }
}

#[test]
fn keep_quantized_sources_and_the_for_tensor_policy() {
    let mut rng = Rng::new(42);
    let q = TensorData {
        name: "q".into(),
        shape: vec![2, 64],
        dtype: FileDType::Gpu(DType::Q8_0),
        data: weight_bytes(&mut rng, DType::Q8_0, 128, 1.0, 0.1),
    };
    let f = TensorData {
        name: "f".into(),
        shape: vec![2, 48],
        dtype: FileDType::Gpu(DType::F16),
        data: weight_bytes(&mut rng, DType::F16, 96, 1.0, 0.0),
    };
    let mut src = MemSource { name: "k.gguf".into(), bytes: write_gguf(&[], &[q.clone(), f.clone()]).unwrap() };
    let header = read_header(&mut src).unwrap();
    let (qi, fi) = (header.tensor("q").unwrap().clone(), header.tensor("f").unwrap().clone());
    // Already-quantized sources stay as stored whatever is asked; F16 asked of F16 is a plain load.
    for c in [Convert::Keep, Convert::F16, Convert::Q8_0, Convert::Q4_0] {
        let t = load_tensor_as(gpu(), &mut src, &header, &qi, c).unwrap();
        assert_eq!((t.dtype(), gpu_bytes(&t)), (DType::Q8_0, repack(DType::Q8_0, &q.data).unwrap()), "{c:?}");
    }
    let t = load_tensor_as(gpu(), &mut src, &header, &fi, Convert::F16).unwrap();
    assert_eq!((t.dtype(), gpu_bytes(&t)), (DType::F16, repack(DType::F16, &f.data).unwrap()));
    // Rows that are not whole blocks: a typed error naming the tensor.
    match load_tensor_as(gpu(), &mut src, &header, &fi, Convert::Q4_0) {
        Err(Error::ShapeMismatch { got, .. }) => assert!(got.contains("`f`") && got.contains("k.gguf"), "{got}"),
        other => panic!("{other:?}"),
    }
    let info = |shape: &[u64], dtype| TensorInfo { name: "t".into(), shape: shape.to_vec(), dtype, offset: 0, size: 0 };
    let bf16 = FileDType::Gpu(DType::BF16);
    let cases = [
        (info(&[64, 3072], bf16), Convert::Q8_0, Convert::Q8_0),
        (info(&[64, 3072], FileDType::F8E4M3), Convert::Q4_0, Convert::Q4_0),
        (info(&[64, 24], bf16), Convert::Q4_0, Convert::F16),
        (info(&[64, 24], FileDType::Gpu(DType::F32)), Convert::F16, Convert::F16),
        (info(&[3072], bf16), Convert::Q8_0, Convert::Keep),
        (info(&[2, 3, 64], bf16), Convert::Q8_0, Convert::Keep),
        (info(&[64, 3072], FileDType::Gpu(DType::Q4K)), Convert::Q8_0, Convert::Keep),
        (info(&[64, 3072], bf16), Convert::Keep, Convert::Keep),
    ];
    for (i, requested, want) in cases {
        assert_eq!(Convert::for_tensor(&i, requested), want, "{:?} {} asked {requested:?}", i.shape, i.dtype);
    }
}

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden");

/// The odd golden FLUX (random weights, F8_E4M3 matrices) rewritten with matrices in `matrix`
/// format (BF16 and F32 hold every E4M3 value exactly) and vectors in F32.
fn odd_flux_as(matrix: DType) -> Vec<TensorData> {
    let bytes = std::fs::read(format!("{GOLDEN}/flux_odd.safetensors")).unwrap();
    let mut src = MemSource { name: "flux_odd.safetensors".into(), bytes };
    let header = read_header(&mut src).unwrap();
    let mut out = Vec::new();
    for info in &header.tensors {
        let v = iclora::weights::load::read_floats(&mut src, info).unwrap().unwrap();
        let dtype = if info.shape.len() == 2 { matrix } else { DType::F32 };
        let data = match dtype {
            DType::BF16 => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
            _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        out.push(TensorData { name: info.name.clone(), shape: info.shape.clone(), dtype: FileDType::Gpu(dtype), data });
    }
    out
}

/// The final output of `model` on the odd fixture's inputs.
fn flux_forward(model: &FluxModel) -> Vec<f32> {
    let g = gpu();
    let io = std::fs::read(format!("{GOLDEN}/flux_odd.io.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&io).unwrap();
    let get = |k: &str| {
        let t = st.tensor(k).unwrap();
        (
            t.shape().to_vec(),
            t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<f32>>(),
        )
    };
    let up = |k: &str| {
        let (s, v) = get(k);
        g.upload_f32(&s, &v).unwrap()
    };
    let (img, txt, pooled) = (up("in/hidden_states"), up("in/encoder_hidden_states"), up("in/pooled"));
    let rows = get("in/img_ids").1.chunks(3).map(|p| p[1] as usize).max().unwrap() + 1;
    let rope = model.rope_tables(g, txt.rows(), rows, img.rows() / rows).unwrap();
    let inp = FluxInputs {
        img: &img,
        txt: &txt,
        pooled: &pooled,
        timestep: get("in/timestep").1[0],
        guidance: None,
        rope: &rope,
    };
    let mut b = g.batch();
    let out = model.forward(g, &mut b, &inp).unwrap();
    g.submit(b).unwrap();
    g.read_f32_blocking(&out).unwrap()
}

fn golden_final() -> Vec<f32> {
    let io = std::fs::read(format!("{GOLDEN}/flux_odd.io.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&io).unwrap();
    st.tensor("out/final")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// FLUX loaded from BF16 / F32 safetensors with `Convert::Q8_0` / `Q4_0` (GPU quantization while
/// streaming) gives the same forward, bit for bit (tolerance 0), as the same weights quantized on the
/// CPU by `reference::quantize` and loaded from a GGUF as stored. Against diffusers' F32 output (the
/// weights' quantization error, not the loader's): per element relative to max(|expected|, rms)
/// 5e-2 for Q8_0 and 0.8 for Q4_0, relative RMS error 1.5e-2 and 0.25 (measured on lavapipe:
/// 3.4e-2 / 1.0e-2 and 0.54 / 0.17 — Q4_0's step is 127/8 ≈ 16× Q8_0's, and so is its error).
#[test]
fn flux_load_with_quantization_equals_cpu_quantized_weights() {
    let cfg =
        FluxConfig::from_diffusers_json(&std::fs::read_to_string(format!("{GOLDEN}/flux_odd.config.json")).unwrap())
            .unwrap();
    let golden = golden_final();
    for (matrix, convert, rtol, rms_bound) in
        [(DType::BF16, Convert::Q8_0, 5e-2, 1.5e-2), (DType::F32, Convert::Q4_0, 0.8, 0.25)]
    {
        let tensors = odd_flux_as(matrix);
        let mut src = MemSource { name: "odd.safetensors".into(), bytes: write_safetensors(&[], &tensors).unwrap() };
        let header = read_header(&mut src).unwrap();
        let model =
            FluxModel::load_with(gpu(), &mut src, &header, Some(cfg.clone()), &LoadOptions { convert }).unwrap();
        let target = convert.target().unwrap();
        assert_eq!(model.weights.double_blocks[0].img_attn.qkv.w.dtype(), target, "fused qkv quantized");
        assert_eq!(model.weights.txt_in.w.dtype(), DType::F16, "width 48 is not whole blocks: F16");
        assert_eq!(model.weights.double_blocks[0].img_attn.qkv.b.as_ref().map(|b| b.dtype()), Some(DType::F32));
        // The same weights quantized on the CPU, in a GGUF, loaded as stored.
        let cpu: Vec<TensorData> = tensors
            .iter()
            .map(|t| {
                let info = header.tensor(&t.name).unwrap();
                match Convert::for_tensor(info, convert).target() {
                    Some(d) => {
                        let data = reference_quantize(d, &dequantize(matrix, &t.data).unwrap()).unwrap();
                        TensorData { name: t.name.clone(), shape: t.shape.clone(), dtype: FileDType::Gpu(d), data }
                    }
                    None => t.clone(),
                }
            })
            .collect();
        let mut gsrc = MemSource { name: "odd.gguf".into(), bytes: write_gguf(&[], &cpu).unwrap() };
        let gheader = read_header(&mut gsrc).unwrap();
        let reference = FluxModel::load(gpu(), &mut gsrc, &gheader, Some(cfg.clone())).unwrap();
        let (got, want) = (flux_forward(&model), flux_forward(&reference));
        assert_close(&format!("{matrix} → {target} vs CPU-quantized"), &got, &want, 0.0);
        assert_close(&format!("{matrix} → {target} vs diffusers F32"), &got, &golden, rtol);
        let rms = |v: &mut dyn Iterator<Item = f32>| {
            (v.map(|x| (x as f64).powi(2)).sum::<f64>() / golden.len() as f64).sqrt()
        };
        let rel_rms = rms(&mut got.iter().zip(&golden).map(|(a, b)| a - b)) / rms(&mut golden.iter().copied());
        eprintln!("{matrix} → {target}: relative RMS error vs diffusers F32 {rel_rms:.3e}");
        assert!(rel_rms <= rms_bound, "{matrix} → {target}: relative RMS error {rel_rms:.3e} > {rms_bound:.1e}");
    }
    // Keep through load_with is the plain load.
    let tensors = odd_flux_as(DType::BF16);
    let mut src = MemSource { name: "odd.safetensors".into(), bytes: write_safetensors(&[], &tensors).unwrap() };
    let header = read_header(&mut src).unwrap();
    let kept = FluxModel::load_with(gpu(), &mut src, &header, Some(cfg), &LoadOptions::default()).unwrap();
    assert_eq!(kept.weights.double_blocks[0].img_attn.qkv.w.dtype(), DType::BF16);
    assert_close("BF16 kept vs diffusers F32", &flux_forward(&kept), &golden, 1e-3);
}
