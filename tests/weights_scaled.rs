//! ComfyUI scaled-fp8 safetensors (`weights::fp8`), GGUF `comfy.gguf.orig_shape.<name>`
//! (ComfyUI-GGUF `get_orig_shape`, loader.py @ 795e451) and component/key-scheme detection
//! (`weights::detect`), on files the tests write with our writers and on the golden fixtures.

mod common;

use common::{assert_close, gpu, run, Rng};
use iclora::gpu::{DType, Tensor};
use iclora::kernels::embedding::dequantize as gpu_dequantize;
use iclora::model::flux::{FluxConfig, FluxModel};
use iclora::reference::quant::dequantize;
use iclora::reference::quantize::quantize as reference_quantize;
use iclora::weights::detect::{detect, Component};
use iclora::weights::gguf::write_gguf;
use iclora::weights::load::{
    f8_e4m3_to_f32, load_tensor, load_tensor_as, read_floats, read_header, Convert, MemSource,
};
use iclora::weights::safetensors::{file_dtype, write_safetensors};
use iclora::weights::tensor_info::{FileDType, MetaType, MetaValue, TensorData, WeightsHeader};
use iclora::Error;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn td(name: &str, shape: &[u64], dtype: FileDType, data: Vec<u8>) -> TensorData {
    TensorData { name: name.into(), shape: shape.to_vec(), dtype, data }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn open(name: &str, bytes: Vec<u8>) -> (MemSource, WeightsHeader) {
    let mut src = MemSource { name: name.into(), bytes };
    let header = read_header(&mut src).unwrap();
    (src, header)
}

/// The tensor as F32, dequantized on the GPU (F16 and block formats alike).
fn gpu_values(t: &Tensor) -> Vec<f32> {
    let (rows, inner) = (t.rows(), t.dim_rev(0));
    run(|g, b| gpu_dequantize(g, b, &t.reshape(&[rows, inner])?))
}

/// Random E4M3 bytes without NaN.
fn e4m3(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| loop {
            let b = rng.next_u64() as u8;
            if b & 0x7f != 0x7f {
                break b;
            }
        })
        .collect()
}

/// A ComfyUI scaled-fp8 layer `[rows, k]`: F8 weight, F32 0-d `scale_weight` and `scale_input`.
fn scaled_layer(rng: &mut Rng, name: &str, rows: usize, k: usize, scale: f32) -> (Vec<TensorData>, Vec<f32>) {
    let q = e4m3(rng, rows * k);
    let real: Vec<f32> = q.iter().map(|&b| f8_e4m3_to_f32(b) * scale).collect();
    let tensors = vec![
        td(&format!("{name}.weight"), &[rows as u64, k as u64], FileDType::F8E4M3, q),
        td(&format!("{name}.scale_weight"), &[], FileDType::Gpu(DType::F32), f32_bytes(&[scale])),
        td(&format!("{name}.scale_input"), &[], FileDType::Gpu(DType::F32), f32_bytes(&[3.0])),
    ];
    (tensors, real)
}

/// A scaled F8 weight loads as `fp8 · scale_weight`: kept (F16, product rounded once: relative
/// error ≤ 2⁻¹¹ = 4.9e-4), as F16, and quantized to Q8_0 / Q4_0 on the GPU, bit-identical to the
/// CPU reference quantizer of the same F16 values. `scale_input` and the marker are not weights.
#[test]
fn scaled_fp8_weights_load_dequantized() {
    let mut rng = Rng::new(31);
    let (mut tensors, real) = scaled_layer(&mut rng, "model.diffusion_model.blk.lin", 7, 64, 0.013_7);
    tensors.push(td("model.diffusion_model.scaled_fp8", &[0], FileDType::F8E4M3, vec![]));
    let (mut src, header) = open("scaled.safetensors", write_safetensors(&[], &tensors).unwrap());
    let info = header.tensor("model.diffusion_model.blk.lin.weight").unwrap().clone();
    let kept = load_tensor(gpu(), &mut src, &header, &info).unwrap();
    assert_eq!((kept.dtype(), kept.shape().to_vec()), (DType::F16, vec![7, 64]));
    let got = gpu_values(&kept);
    assert_close("scaled fp8 kept (F16)", &got, &real, 4.9e-4);
    let as_f16 = gpu_values(&load_tensor_as(gpu(), &mut src, &header, &info, Convert::F16).unwrap());
    assert_eq!(as_f16, got, "Convert::F16 of an F8 source is the kept tensor");
    let rounded: Vec<f32> = real.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    for (convert, d) in [(Convert::Q8_0, DType::Q8_0), (Convert::Q4_0, DType::Q4_0)] {
        let t = load_tensor_as(gpu(), &mut src, &header, &info, convert).unwrap();
        assert_eq!(t.dtype(), d);
        let want = dequantize(d, &reference_quantize(d, &rounded).unwrap()).unwrap();
        assert_close(&format!("scaled fp8 → {d}"), &gpu_values(&t), &want, 0.0);
    }
    // Without its scale the same bytes are the plain fp8 values: the scale really is applied.
    let plain: Vec<f32> = tensors[0].data.iter().map(|&b| f8_e4m3_to_f32(b)).collect();
    assert!(got.iter().zip(&plain).any(|(a, b)| (a - b).abs() > 1e-3));
}

/// Scale schemes the loader does not implement, and scales it cannot apply, are typed errors
/// naming the tensor; a scale of exactly 1 on a float weight is harmless.
#[test]
fn unknown_scale_kinds_are_typed_errors() {
    let w = |dtype: FileDType| {
        let data = match dtype {
            FileDType::F8E4M3 => e4m3(&mut Rng::new(2), 4 * 32),
            _ => f32_bytes(&vec![0.5; 4 * 32]),
        };
        td("l.weight", &[4, 32], dtype, data)
    };
    let f8 = FileDType::F8E4M3;
    let f32t = FileDType::Gpu(DType::F32);
    let cases: Vec<(&str, Vec<TensorData>, &str)> = vec![
        (
            "per-channel scale_weight",
            vec![w(f8), td("l.scale_weight", &[4], f32t, f32_bytes(&[1.0; 4]))],
            "l.scale_weight",
        ),
        ("weight_scale sibling", vec![w(f8), td("l.weight_scale", &[], f32t, f32_bytes(&[0.1]))], "l.weight_scale"),
        ("input_scale sibling", vec![w(f8), td("l.input_scale", &[], f32t, f32_bytes(&[0.1]))], "l.input_scale"),
        (
            "comfy_quant layer",
            vec![w(f8), td("l.comfy_quant", &[3], FileDType::Gpu(DType::F16), vec![0; 6])],
            "l.comfy_quant",
        ),
        ("scale on an F32 weight", vec![w(f32t), td("l.scale_weight", &[], f32t, f32_bytes(&[0.5]))], "l.scale_weight"),
        (
            "integer scale",
            vec![w(f8), td("l.scale_weight", &[], file_dtype("I32").unwrap(), 7i32.to_le_bytes().to_vec())],
            "l.scale_weight",
        ),
    ];
    for (what, tensors, name) in cases {
        let (mut src, header) = open("bad.safetensors", write_safetensors(&[], &tensors).unwrap());
        let info = header.tensor("l.weight").unwrap().clone();
        for convert in [Convert::Keep, Convert::Q8_0] {
            match load_tensor_as(gpu(), &mut src, &header, &info, convert) {
                Err(Error::UnsupportedFormat { why, .. }) => assert!(why.contains(name), "{what}: {why}"),
                Err(e) => panic!("{what}: wrong error {e}"),
                Ok(_) => panic!("{what}: loaded"),
            }
        }
    }
    // An F8 product beyond F16's range.
    let big =
        vec![td("l.weight", &[1, 2], f8, vec![0x7E, 0x38]), td("l.scale_weight", &[], f32t, f32_bytes(&[1000.0]))];
    let (mut src, header) = open("big.safetensors", write_safetensors(&[], &big).unwrap());
    let info = header.tensor("l.weight").unwrap().clone();
    assert!(matches!(load_tensor(gpu(), &mut src, &header, &info), Err(Error::UnsupportedFormat { .. })));
    // scale_weight = 1 on an F32 weight loads as is.
    let one = vec![w(f32t), td("l.scale_weight", &[], f32t, f32_bytes(&[1.0]))];
    let (mut src, header) = open("one.safetensors", write_safetensors(&[], &one).unwrap());
    let info = header.tensor("l.weight").unwrap().clone();
    assert_eq!(gpu_values(&load_tensor(gpu(), &mut src, &header, &info).unwrap()), vec![0.5; 128]);
}

/// The odd golden FLUX in BFL names, rewritten as a ComfyUI scaled-fp8 checkpoint (prefix
/// `model.diffusion_model.`, a `scaled_fp8` marker, per-layer `scale_weight` / `scale_input`)
/// loads through `FluxModel::load` with the real weights: the fused qkv and `linear1` read back
/// as `fp8 · scale` (F16, relative 4.9e-4), and the model equals the one loaded from the same
/// real weights stored as F32 (forward output relative 5e-3: F16 rounding of the weights).
#[test]
fn flux_loads_a_scaled_fp8_checkpoint() {
    let bytes = std::fs::read(format!("{FIXTURES}/golden/flux_odd_bfl.safetensors")).unwrap();
    let (mut src, header) = open("flux_odd_bfl.safetensors", bytes);
    let (mut scaled, mut real) = (vec![], vec![]);
    let p = "model.diffusion_model.";
    for (i, info) in header.tensors.iter().enumerate() {
        let v = read_floats(&mut src, info).unwrap().unwrap();
        let raw = src.bytes[info.offset as usize..(info.offset + info.size) as usize].to_vec();
        let scale = 0.01 + 0.003 * i as f32;
        if info.dtype == FileDType::F8E4M3 {
            let layer = info.name.strip_suffix(".weight").unwrap();
            scaled.push(td(&format!("{p}{}", info.name), &info.shape, info.dtype, raw));
            scaled.push(td(&format!("{p}{layer}.scale_weight"), &[], FileDType::Gpu(DType::F32), f32_bytes(&[scale])));
            scaled.push(td(&format!("{p}{layer}.scale_input"), &[], FileDType::Gpu(DType::F32), f32_bytes(&[1.0])));
            let r: Vec<f32> = v.iter().map(|x| x * scale).collect();
            real.push(td(&info.name, &info.shape, FileDType::Gpu(DType::F32), f32_bytes(&r)));
        } else {
            scaled.push(td(&format!("{p}{}", info.name), &info.shape, info.dtype, raw.clone()));
            real.push(td(&info.name, &info.shape, info.dtype, raw));
        }
    }
    scaled.push(td(&format!("{p}scaled_fp8"), &[0], FileDType::F8E4M3, vec![]));
    let (mut ssrc, sheader) = open("scaled.safetensors", write_safetensors(&[], &scaled).unwrap());
    let (mut rsrc, rheader) = open("real.safetensors", write_safetensors(&[], &real).unwrap());
    assert_eq!(
        detect(&sheader).to_string(),
        "FLUX transformer, BFL-native names (model.diffusion_model.), ComfyUI scaled fp8"
    );
    let cfg = FluxConfig::infer(&sheader).unwrap();
    let got = FluxModel::load(gpu(), &mut ssrc, &sheader, Some(cfg.clone())).unwrap();
    let want = FluxModel::load(gpu(), &mut rsrc, &rheader, Some(cfg)).unwrap();
    let pairs = [
        (
            "double_blocks.0.img_attn.qkv",
            &got.weights.double_blocks[0].img_attn.qkv.w,
            &want.weights.double_blocks[0].img_attn.qkv.w,
        ),
        ("single_blocks.0.linear1", &got.weights.single_blocks[0].linear1.w, &want.weights.single_blocks[0].linear1.w),
        ("img_in", &got.weights.img_in.w, &want.weights.img_in.w),
    ];
    for (what, g, w) in pairs {
        assert_eq!(g.dtype(), DType::F16, "{what}");
        assert_close(what, &gpu_values(g), &gpu_values(w), 4.9e-4);
    }
}

/// `comfy.gguf.orig_shape.<name>` restores the PyTorch shape of a reshaped tensor (floats and
/// block formats: same bytes, new shape); a bad entry is a `Malformed` error naming the key.
#[test]
fn gguf_orig_shape_is_applied() {
    let mut rng = Rng::new(9);
    let flat: Vec<f32> = (0..384).map(|_| rng.uniform(-2.0, 2.0)).collect();
    let q: Vec<f32> = (0..256).map(|_| rng.uniform(-2.0, 2.0)).collect();
    let qbytes = reference_quantize(DType::Q8_0, &q).unwrap();
    let tensors = vec![
        td("flat", &[384], FileDType::Gpu(DType::F32), f32_bytes(&flat)),
        td("quant", &[2, 128], FileDType::Gpu(DType::Q8_0), qbytes.clone()),
        td("plain", &[4], FileDType::Gpu(DType::F32), f32_bytes(&[1.0; 4])),
    ];
    let shape = |dims: &[i32]| MetaValue::Array(MetaType::I32, dims.iter().map(|&d| MetaValue::I32(d)).collect());
    let meta = |flat: MetaValue, quant: MetaValue| {
        vec![
            ("comfy.gguf.orig_shape.flat".to_string(), flat),
            ("comfy.gguf.orig_shape.quant".to_string(), quant),
            ("comfy.gguf.orig_shape.absent".to_string(), shape(&[1, 2])),
        ]
    };
    let (mut src, header) = open("orig.gguf", write_gguf(&meta(shape(&[3, 128]), shape(&[8, 32])), &tensors).unwrap());
    assert_eq!(header.tensor("flat").unwrap().shape, vec![3, 128]);
    assert_eq!(header.tensor("quant").unwrap().shape, vec![8, 32]);
    assert_eq!(header.tensor("plain").unwrap().shape, vec![4]);
    let f = load_tensor(gpu(), &mut src, &header, &header.tensor("flat").unwrap().clone()).unwrap();
    assert_eq!(f.shape(), &[3, 128]);
    assert_eq!(gpu_values(&f), flat);
    let t = load_tensor(gpu(), &mut src, &header, &header.tensor("quant").unwrap().clone()).unwrap();
    assert_eq!((t.shape().to_vec(), t.dtype()), (vec![8, 32], DType::Q8_0));
    assert_close("Q8_0 with orig_shape", &gpu_values(&t), &dequantize(DType::Q8_0, &qbytes).unwrap(), 0.0);
    let bad = [
        (shape(&[3, 127]), shape(&[8, 32]), "flat"),
        (shape(&[3, -128]), shape(&[8, 32]), "flat"),
        (MetaValue::Array(MetaType::U32, vec![MetaValue::U32(384)]), shape(&[8, 32]), "flat"),
        (MetaValue::Str("3,128".into()), shape(&[8, 32]), "flat"),
        (shape(&[3, 128]), shape(&[16, 16]), "quant"),
        (shape(&[3, 128]), shape(&[1, 1, 1, 2, 128]), "quant"),
    ];
    for (fs, qs, name) in bad {
        let bytes = write_gguf(&meta(fs.clone(), qs.clone()), &tensors).unwrap();
        match read_header(&mut MemSource { name: "bad.gguf".into(), bytes }) {
            Err(Error::Malformed { what, .. }) => {
                assert!(what.contains(&format!("orig_shape.{name}")), "{fs:?} {qs:?}: {what}")
            }
            other => panic!("{fs:?} {qs:?}: expected Malformed, got {other:?}"),
        }
    }
}

fn header_of(path: &str) -> WeightsHeader {
    read_header(&mut iclora::weights::load::FileSource::open(format!("{FIXTURES}/{path}")).unwrap()).unwrap()
}

/// Names-only headers (zero-size tensors) for schemes no fixture has.
fn names(file: &str, names: &[&str], gguf: bool) -> WeightsHeader {
    let tensors: Vec<TensorData> = names.iter().map(|n| td(n, &[0], FileDType::Gpu(DType::F32), vec![])).collect();
    let bytes = if gguf { write_gguf(&[], &tensors).unwrap() } else { write_safetensors(&[], &tensors).unwrap() };
    open(file, bytes).1
}

#[test]
fn detect_component_and_key_scheme() {
    let cases = [
        ("golden/flux_dev.safetensors", "FLUX transformer, diffusers names"),
        ("golden/flux_odd.safetensors", "FLUX transformer, diffusers names"),
        ("golden/flux_odd_bfl.safetensors", "FLUX transformer, BFL-native names"),
        (
            "../../web/demo/tiny-flux/transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
            "FLUX transformer, diffusers names",
        ),
        ("golden/t5_text.safetensors", "T5 encoder, HF names"),
        ("../../web/demo/tiny-flux/text_encoder_2/model.safetensors", "T5 encoder, HF names"),
        ("golden/clip_text.safetensors", "CLIP-L text encoder, HF names"),
        ("../../web/demo/tiny-flux/text_encoder/model.safetensors", "CLIP-L text encoder, HF names"),
        ("golden/vae_tiny.safetensors", "VAE, diffusers names"),
        ("../../web/demo/tiny-flux/vae/diffusion_pytorch_model.safetensors", "VAE, diffusers names"),
        ("golden/lora_a_kohya.safetensors", "LoRA (kohya)"),
        ("golden/clip_lora_kohya.safetensors", "LoRA (kohya)"),
        ("golden/lora_a_bfl.safetensors", "LoRA (BFL-native names)"),
        ("golden/lora_a_diffusers.safetensors", "LoRA (diffusers names)"),
        ("golden/clip_lora_diffusers.safetensors", "LoRA (diffusers names)"),
        ("golden/lora_b_peft.safetensors", "LoRA (PEFT names)"),
        ("golden/flux_odd.io.safetensors", "unrecognized"),
        ("golden/sampler.safetensors", "unrecognized"),
    ];
    for (path, want) in cases {
        assert_eq!(detect(&header_of(path)).to_string(), want, "{path}");
    }
    let made = [
        (names("t5.gguf", &["token_embd.weight", "enc.blk.0.attn_q.weight"], true), "T5 encoder, llama.cpp GGUF names"),
        (
            names("ae.safetensors", &["decoder.mid.block_1.conv1.weight", "encoder.conv_in.weight"], false),
            "VAE, BFL ae names",
        ),
        (names("ck.safetensors", &["vae.decoder.mid.block_1.conv1.weight"], false), "VAE, BFL ae names (vae.)"),
        (
            names("flux.gguf", &["img_in.weight", "double_blocks.0.img_attn.qkv.weight"], true),
            "FLUX transformer, BFL-native names",
        ),
        (names("x.safetensors", &["foo.weight"], false), "unrecognized"),
    ];
    for (h, want) in made {
        let d = detect(&h);
        assert_eq!(d.to_string(), want, "{}", h.file);
        assert_eq!(d.component == Component::Unrecognized, want == "unrecognized");
    }
}
