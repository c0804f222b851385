//! Text encoders against transformers (fixtures from tools/golden/make_text_fixtures.py): T5
//! `last_hidden_state` and CLIP `last_hidden_state` / `pooler_output` within 1e-4 relative
//! (`assert_close`: relative to max(|expected|, rms)), the bound. Tokenizers: tests/tokenize.rs.

mod common;

use common::text::{clip_tokenizer, prompts, read, Io, DIR, RTOL, T5_LEN};
use common::{assert_close, gpu};
use iclora::gpu::Tensor;
use iclora::model::clip::{pooled_position, ClipConfig, ClipTextEncoder};
use iclora::model::t5::{relative_position_bucket, T5Config, T5Encoder, T5Weights};
use iclora::weights::load::{read_header, FileSource, MemSource};
use iclora::weights::safetensors::write_safetensors;
use iclora::weights::tensor_info::{TensorData, WeightsHeader};
use iclora::Error;
use safetensors::SafeTensors;

#[test]
fn relative_position_buckets_follow_the_reference_table() {
    // `T5Attention._relative_position_bucket` (src/transformers/models/t5/modeling_t5.py @ 6b8b757):
    // n = |rel| → bucket; +16 when rel > 0.
    let table = [
        (0, 0),
        (7, 7),
        (8, 8),
        (11, 8),
        (12, 9),
        (15, 9),
        (16, 10),
        (22, 10),
        (23, 11),
        (31, 11),
        (32, 12),
        (45, 12),
        (46, 13),
        (63, 13),
        (64, 14),
        (90, 14),
        (91, 15),
        (500, 15),
    ];
    for (n, b) in table {
        assert_eq!(relative_position_bucket(-n, 32, 128), b, "rel = -{n}");
        if n > 0 {
            assert_eq!(relative_position_bucket(n, 32, 128), b + 16, "rel = {n}");
        }
    }
}

#[test]
fn pooled_position_rules() {
    let ids = [0, 5, 9, 1, 1, 1];
    assert_eq!(pooled_position(&ids, 1).unwrap(), 3); // first EOS
    assert_eq!(pooled_position(&ids, 2).unwrap(), 2); // legacy config: argmax
    assert!(pooled_position(&ids, 7).is_err());
}

fn open(name: &str) -> (FileSource, WeightsHeader) {
    let mut src = FileSource::open(format!("{DIR}/{name}")).unwrap();
    let header = read_header(&mut src).unwrap();
    (src, header)
}

fn read_back(t: &Tensor) -> Vec<f32> {
    gpu().read_f32_blocking(t).unwrap()
}

fn t5_outputs_match(enc: &T5Encoder) {
    let io = Io::open();
    for p in 0..prompts().len() {
        let g = gpu();
        let mut b = g.batch();
        let out = enc.forward(g, &mut b, &io.ids(&format!("t5/ids/{p}"))).unwrap();
        g.submit(b).unwrap();
        assert_eq!(out.shape(), [T5_LEN, enc.config.d_model]);
        assert_close(
            &format!("T5 last_hidden_state, prompt {p}"),
            &read_back(&out),
            &io.f32s(&format!("t5/out/{p}")),
            RTOL,
        );
    }
}

#[test]
fn t5_encoder_matches_transformers() {
    let cfg =
        T5Config::from_json("t5_text.config.json", &String::from_utf8(read("t5_text.config.json")).unwrap()).unwrap();
    let (mut src, header) = open("t5_text.safetensors");
    assert_eq!(T5Config::infer(&header).unwrap(), cfg, "config inferred from the shapes");
    let enc = T5Encoder::load(gpu(), &mut src, &header, Some(cfg.clone())).unwrap();
    assert_eq!(enc.weights.shared.parts.len(), 1);
    t5_outputs_match(&enc);
    // The embedding table split into row ranges (as T5-XXL's must be) gives the same outputs.
    let weights = T5Weights::load_split(gpu(), &mut src, &header, &cfg, 37 * 64 * 4).unwrap();
    assert!(weights.shared.parts.len() > 3);
    t5_outputs_match(&T5Encoder { config: cfg, weights });
}

#[test]
fn clip_encoder_matches_transformers() {
    let cfg =
        ClipConfig::from_json("clip_text.config.json", &String::from_utf8(read("clip_text.config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg.heads, 4);
    let (mut src, header) = open("clip_text.safetensors");
    let inferred = ClipConfig::infer(&header).unwrap();
    assert_eq!(
        (inferred.vocab, inferred.hidden, inferred.layers, inferred.intermediate),
        (cfg.vocab, cfg.hidden, cfg.layers, cfg.intermediate)
    );
    // FLUX's keys (`text_model.` prefix), and transformers 5's (none).
    let enc = ClipTextEncoder::load(gpu(), &mut src, &header, Some(cfg.clone())).unwrap();
    check_clip(&enc);
    let (mut src, header) =
        rewritten("clip_text.safetensors", "", None, |n| n.trim_start_matches("text_model.").to_string());
    assert!(header.tensor("embeddings.token_embedding.weight").is_some());
    check_clip(&ClipTextEncoder::load(gpu(), &mut src, &header, Some(cfg)).unwrap());
}

fn check_clip(enc: &ClipTextEncoder) {
    let tok = clip_tokenizer(true);
    let io = Io::open();
    for p in 0..prompts().len() {
        let g = gpu();
        let mut b = g.batch();
        let out = enc.forward(g, &mut b, &io.ids(&format!("clip/ids/{p}")), tok.eos_id()).unwrap();
        g.submit(b).unwrap();
        assert_close(
            &format!("CLIP last_hidden_state, prompt {p}"),
            &read_back(&out.last_hidden_state),
            &io.f32s(&format!("clip/out/{p}")),
            RTOL,
        );
        assert_close(
            &format!("CLIP pooler_output, prompt {p}"),
            &read_back(&out.pooled),
            &io.f32s(&format!("clip/pooled/{p}")),
            RTOL,
        );
    }
}

/// A fixture's weights with one tensor replaced (`Some`) or dropped (`None`).
fn altered(file: &str, target: &str, replace: Option<(Vec<u64>, Vec<u8>)>) -> (MemSource, WeightsHeader) {
    rewritten(file, target, replace, |n| n.to_string())
}

/// [`altered`], with every tensor renamed by `rename`.
fn rewritten(
    file: &str,
    target: &str,
    replace: Option<(Vec<u64>, Vec<u8>)>,
    rename: impl Fn(&str) -> String,
) -> (MemSource, WeightsHeader) {
    let bytes = read(file);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        let dtype = iclora::weights::safetensors::file_dtype(&format!("{:?}", view.dtype())).unwrap();
        let (shape, data) = match (name == target, &replace) {
            (true, Some((s, d))) => (s.clone(), d.clone()),
            (true, None) => continue,
            _ => (view.shape().iter().map(|&d| d as u64).collect(), view.data().to_vec()),
        };
        tensors.push(TensorData { name: rename(&name), shape, dtype, data });
    }
    let mut src = MemSource { name: format!("altered_{file}"), bytes: write_safetensors(&[], &tensors).unwrap() };
    let header = read_header(&mut src).unwrap();
    (src, header)
}

#[test]
fn missing_or_mis_shaped_tensors_are_named() {
    let t5cfg = T5Config::from_json("c", &String::from_utf8(read("t5_text.config.json")).unwrap()).unwrap();
    let name = "encoder.block.1.layer.1.DenseReluDense.wo.weight";
    let (mut src, header) = altered("t5_text.safetensors", name, None);
    let err = T5Encoder::load(gpu(), &mut src, &header, Some(t5cfg)).err().expect("a missing tensor must fail");
    assert!(
        matches!(&err, Error::MissingModelTensor { name: n, file, .. } if n == name && file == "altered_t5_text.safetensors"),
        "{err}"
    );
    assert!(err.to_string().contains("T5"), "{err}");

    let cfg = ClipConfig::from_json("c", &String::from_utf8(read("clip_text.config.json")).unwrap()).unwrap();
    let name = "text_model.encoder.layers.1.mlp.fc1.bias";
    let (mut src, header) = altered("clip_text.safetensors", name, Some((vec![7], vec![0; 28])));
    let err = ClipTextEncoder::load(gpu(), &mut src, &header, Some(cfg)).err().expect("a mis-shaped tensor must fail");
    assert!(
        matches!(&err, Error::TensorShape { name: n, expected, got, .. } if n == name && expected == "[128]" && got == "[7]"),
        "{err}"
    );
}

/// Q8_0 blocks of `v` (rows of a multiple of 32): `d = max|x| / 127` as F16, `q = round(x / d)`.
fn q8_0(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for block in v.chunks_exact(32) {
        let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = half::f16::from_f32(amax / 127.0);
        let inv = if d.to_f32() > 0.0 { 1.0 / d.to_f32() } else { 0.0 };
        out.extend_from_slice(&d.to_le_bytes());
        out.extend(block.iter().map(|x| (x * inv).round().clamp(-127.0, 127.0) as i8 as u8));
    }
    out
}

#[test]
fn t5_gguf_q8_0_with_llama_cpp_names_equals_its_dequantized_weights() {
    use iclora::gpu::DType;
    use iclora::model::t5::T5Keys;
    use iclora::weights::tensor_info::FileDType;
    // Every matrix (the embedding table included) as Q8_0 under llama.cpp names in a GGUF, and the
    // same values dequantized to F32 under HF names: both models must give the same outputs.
    let bytes = read("t5_text.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (mut gguf, mut f32s) = (Vec::new(), Vec::new());
    for (name, view) in st.tensors() {
        let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
        let v: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let (dtype, data, values) = if shape.len() == 2 && !name.contains("relative_attention_bias") {
            let q = q8_0(&v);
            let deq = iclora::reference::quant::dequantize(DType::Q8_0, &q).unwrap();
            (FileDType::Gpu(DType::Q8_0), q, deq)
        } else {
            (FileDType::Gpu(DType::F32), view.data().to_vec(), v)
        };
        let hf_bytes = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        f32s.push(TensorData {
            name: name.clone(),
            shape: shape.clone(),
            dtype: FileDType::Gpu(DType::F32),
            data: hf_bytes,
        });
        gguf.push(TensorData { name: T5Keys::LlamaCpp.key(&name), shape, dtype, data });
    }
    assert!(
        gguf.iter().any(|t| t.name == "enc.blk.1.ffn_gate.weight")
            && gguf.iter().any(|t| t.name == "token_embd.weight")
    );
    let mut qsrc = MemSource { name: "t5.gguf".into(), bytes: iclora::weights::gguf::write_gguf(&[], &gguf).unwrap() };
    let qheader = read_header(&mut qsrc).unwrap();
    assert_eq!(T5Keys::detect(&qheader), T5Keys::LlamaCpp);
    let q = T5Encoder::load(gpu(), &mut qsrc, &qheader, None).unwrap(); // config inferred from llama.cpp names
    assert_eq!(
        (q.weights.blocks[1].ff.wi_0.w.dtype(), q.weights.shared.parts[0].1.dtype()),
        (DType::Q8_0, DType::Q8_0)
    );
    let mut fsrc = MemSource { name: "t5_deq.safetensors".into(), bytes: write_safetensors(&[], &f32s).unwrap() };
    let fheader = read_header(&mut fsrc).unwrap();
    let f = T5Encoder::load(gpu(), &mut fsrc, &fheader, None).unwrap();
    assert_eq!(q.config, f.config);
    let io = Io::open();
    for p in [1, 3] {
        let ids = io.ids(&format!("t5/ids/{p}"));
        let g = gpu();
        let mut b = g.batch();
        let (yq, yf) = (q.forward(g, &mut b, &ids).unwrap(), f.forward(g, &mut b, &ids).unwrap());
        g.submit(b).unwrap();
        assert_close(&format!("T5 Q8_0 GGUF vs dequantized F32, prompt {p}"), &read_back(&yq), &read_back(&yf), RTOL);
    }
}
