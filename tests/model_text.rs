//! Tokenizers and text encoders against transformers (fixtures from
//! tools/golden/make_text_fixtures.py): token ids equal the HF tokenizers' ids exactly (incl. a
//! prompt that truncates, Unicode and IC-LoRA tags); T5 `last_hidden_state` and CLIP
//! `last_hidden_state` / `pooler_output` within 1e-4 relative (`assert_close`: relative to
//! max(|expected|, rms)), the issue's bound.

mod common;

use common::{assert_close, gpu};
use iclora::gpu::Tensor;
use iclora::model::clip::{pooled_position, ClipConfig, ClipTextEncoder};
use iclora::model::t5::{relative_position_bucket, T5Config, T5Encoder, T5Weights};
use iclora::model::tokenize::PromptTokenizer;
use iclora::weights::load::{read_header, FileSource, MemSource};
use iclora::weights::safetensors::write_safetensors;
use iclora::weights::tensor_info::{TensorData, WeightsHeader};
use iclora::Error;
use safetensors::SafeTensors;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden");
const RTOL: f32 = 1e-4;
/// The fixture's T5 sequence length (small, so that the long prompt truncates).
const T5_LEN: usize = 32;

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn prompts() -> Vec<String> {
    serde_json::from_slice(&read("text_prompts.json")).unwrap()
}

struct Io(Vec<u8>);

impl Io {
    fn open() -> Io {
        Io(read("text_io.safetensors"))
    }
    fn raw(&self, key: &str) -> Vec<u8> {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        st.tensor(key)
            .unwrap_or_else(|_| panic!("fixture has no `{key}`"))
            .data()
            .to_vec()
    }
    fn i64s(&self, key: &str) -> Vec<i64> {
        self.raw(key)
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    fn ids(&self, key: &str) -> Vec<u32> {
        self.i64s(key)
            .iter()
            .map(|&i| u32::try_from(i).unwrap())
            .collect()
    }
    fn f32s(&self, key: &str) -> Vec<f32> {
        self.raw(key)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

fn t5_tokenizer(with_config: bool) -> iclora::Result<PromptTokenizer> {
    let config = with_config.then(|| read("t5_tokenizer_config.json"));
    PromptTokenizer::t5(
        "t5_tokenizer.json",
        &read("t5_tokenizer.json"),
        config.as_deref(),
        T5_LEN,
    )
}

fn clip_tokenizer(with_config: bool) -> PromptTokenizer {
    let config = with_config.then(|| read("clip_tokenizer_config.json"));
    PromptTokenizer::clip(
        "clip_tokenizer.json",
        &read("clip_tokenizer.json"),
        config.as_deref(),
    )
    .unwrap()
}

fn check_ids(tok: &PromptTokenizer, enc: &str, io: &Io) {
    let mut truncated = 0;
    for (p, prompt) in prompts().iter().enumerate() {
        let e = tok.encode(prompt).unwrap();
        assert_eq!(
            e.ids,
            io.ids(&format!("{enc}/ids/{p}")),
            "{enc} ids of prompt {p} {prompt:?}"
        );
        let full = io.i64s(&format!("{enc}/full_len/{p}"))[0] as usize;
        assert_eq!(e.full_len, full, "{enc} untruncated length of prompt {p}");
        assert_eq!(
            e.truncated,
            full > tok.max_len(),
            "{enc} truncation flag of prompt {p}"
        );
        assert_eq!(e.warning(enc).is_some(), e.truncated);
        truncated += e.truncated as usize;
    }
    assert!(truncated > 0, "some {enc} fixture prompt must truncate");
}

#[test]
fn t5_ids_equal_transformers() {
    let tok = t5_tokenizer(true).unwrap();
    let io = Io::open();
    assert_eq!((tok.pad_id(), tok.eos_id(), tok.bos_id()), (0, 1, None));
    check_ids(&tok, "t5", &io);
}

#[test]
fn clip_ids_equal_transformers_with_and_without_config() {
    let io = Io::open();
    for with_config in [true, false] {
        let tok = clip_tokenizer(with_config);
        // The fixture's ids start with BOS and pad with EOS (FLUX's CLIP tokenizer); found from the files.
        let first = io.ids("clip/ids/0");
        assert_eq!(tok.bos_id(), Some(first[0]));
        assert_eq!(tok.pad_id(), tok.eos_id());
        check_ids(&tok, "clip", &io);
    }
}

#[test]
fn clip_from_vocab_and_merges_equals_transformers() {
    // FLUX's tokenizer/ folder has vocab.json + merges.txt and no tokenizer.json.
    let io = Io::open();
    let config = read("clip_tokenizer_config.json");
    for cfg in [Some(config.as_slice()), None] {
        let tok = PromptTokenizer::clip_from_vocab(
            "tokenizer/",
            &read("clip_vocab.json"),
            &read("clip_merges.txt"),
            cfg,
        )
        .unwrap();
        check_ids(&tok, "clip", &io);
    }
    let err =
        PromptTokenizer::clip_from_vocab("tokenizer/", &read("clip_vocab.json"), b"a b c\n", None)
            .err()
            .unwrap();
    assert!(
        matches!(&err, Error::Tokenizer { file, message } if file == "tokenizer/" && message.contains("line 1")),
        "{err}"
    );
}

#[test]
fn t5_eos_comes_from_the_post_processor_and_pad_needs_the_config() {
    let err = t5_tokenizer(false)
        .err()
        .expect("no pad token without tokenizer_config.json");
    assert!(
        matches!(&err, Error::Tokenizer { file, message } if file == "t5_tokenizer.json" && message.contains("pad")),
        "{err}"
    );
    // A config naming an unknown token is an error naming it; a too short length is rejected.
    let bad = br#"{"pad_token": "<nothing>"}"#;
    let err = PromptTokenizer::t5("t.json", &read("t5_tokenizer.json"), Some(bad), T5_LEN)
        .err()
        .unwrap();
    assert!(err.to_string().contains("<nothing>"), "{err}");
    assert!(PromptTokenizer::t5("t.json", b"{not json", None, T5_LEN).is_err());
    let mut tok = t5_tokenizer(true).unwrap();
    assert!(tok.set_max_len(1).is_err());
    tok.set_max_len(4).unwrap();
    let e = tok.encode(&prompts()[0]).unwrap();
    assert_eq!(
        (e.ids.len(), e.ids[3], e.truncated),
        (4, tok.eos_id(), true)
    );
}

#[test]
fn relative_position_buckets_follow_the_reference_table() {
    // FLUX_REFERENCE.md §5.1: n = |rel| → bucket; +16 when rel > 0.
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
        let out = enc
            .forward(g, &mut b, &io.ids(&format!("t5/ids/{p}")))
            .unwrap();
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
    let cfg = T5Config::from_json(
        "t5_text.config.json",
        &String::from_utf8(read("t5_text.config.json")).unwrap(),
    )
    .unwrap();
    let (mut src, header) = open("t5_text.safetensors");
    assert_eq!(
        T5Config::infer(&header).unwrap(),
        cfg,
        "config inferred from the shapes"
    );
    let enc = T5Encoder::load(gpu(), &mut src, &header, Some(cfg.clone())).unwrap();
    assert_eq!(enc.weights.shared.parts.len(), 1);
    t5_outputs_match(&enc);
    // The embedding table split into row ranges (as T5-XXL's must be) gives the same outputs.
    let weights = T5Weights::load_split(gpu(), &mut src, &header, &cfg, 37 * 64 * 4).unwrap();
    assert!(weights.shared.parts.len() > 3);
    t5_outputs_match(&T5Encoder {
        config: cfg,
        weights,
    });
}

#[test]
fn clip_encoder_matches_transformers() {
    let cfg = ClipConfig::from_json(
        "clip_text.config.json",
        &String::from_utf8(read("clip_text.config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg.heads, 4);
    let (mut src, header) = open("clip_text.safetensors");
    let inferred = ClipConfig::infer(&header).unwrap();
    assert_eq!(
        (
            inferred.vocab,
            inferred.hidden,
            inferred.layers,
            inferred.intermediate
        ),
        (cfg.vocab, cfg.hidden, cfg.layers, cfg.intermediate)
    );
    // FLUX's keys (`text_model.` prefix), and transformers 5's (none).
    let enc = ClipTextEncoder::load(gpu(), &mut src, &header, Some(cfg.clone())).unwrap();
    check_clip(&enc);
    let (mut src, header) = rewritten("clip_text.safetensors", "", None, |n| {
        n.trim_start_matches("text_model.").to_string()
    });
    assert!(header.tensor("embeddings.token_embedding.weight").is_some());
    check_clip(&ClipTextEncoder::load(gpu(), &mut src, &header, Some(cfg)).unwrap());
}

fn check_clip(enc: &ClipTextEncoder) {
    let tok = clip_tokenizer(true);
    let io = Io::open();
    for p in 0..prompts().len() {
        let g = gpu();
        let mut b = g.batch();
        let out = enc
            .forward(g, &mut b, &io.ids(&format!("clip/ids/{p}")), tok.eos_id())
            .unwrap();
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
fn altered(
    file: &str,
    target: &str,
    replace: Option<(Vec<u64>, Vec<u8>)>,
) -> (MemSource, WeightsHeader) {
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
        let dtype =
            iclora::weights::safetensors::file_dtype(&format!("{:?}", view.dtype())).unwrap();
        let (shape, data) = match (name == target, &replace) {
            (true, Some((s, d))) => (s.clone(), d.clone()),
            (true, None) => continue,
            _ => (
                view.shape().iter().map(|&d| d as u64).collect(),
                view.data().to_vec(),
            ),
        };
        tensors.push(TensorData {
            name: rename(&name),
            shape,
            dtype,
            data,
        });
    }
    let mut src = MemSource {
        name: format!("altered_{file}"),
        bytes: write_safetensors(&[], &tensors).unwrap(),
    };
    let header = read_header(&mut src).unwrap();
    (src, header)
}

#[test]
fn missing_or_mis_shaped_tensors_are_named() {
    let t5cfg = T5Config::from_json(
        "c",
        &String::from_utf8(read("t5_text.config.json")).unwrap(),
    )
    .unwrap();
    let name = "encoder.block.1.layer.1.DenseReluDense.wo.weight";
    let (mut src, header) = altered("t5_text.safetensors", name, None);
    let err = T5Encoder::load(gpu(), &mut src, &header, Some(t5cfg))
        .err()
        .expect("a missing tensor must fail");
    assert!(
        matches!(&err, Error::MissingModelTensor { name: n, file, .. } if n == name && file == "altered_t5_text.safetensors"),
        "{err}"
    );
    assert!(err.to_string().contains("T5"), "{err}");

    let cfg = ClipConfig::from_json(
        "c",
        &String::from_utf8(read("clip_text.config.json")).unwrap(),
    )
    .unwrap();
    let name = "text_model.encoder.layers.1.mlp.fc1.bias";
    let (mut src, header) = altered("clip_text.safetensors", name, Some((vec![7], vec![0; 28])));
    let err = ClipTextEncoder::load(gpu(), &mut src, &header, Some(cfg))
        .err()
        .expect("a mis-shaped tensor must fail");
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
        let inv = if d.to_f32() > 0.0 {
            1.0 / d.to_f32()
        } else {
            0.0
        };
        out.extend_from_slice(&d.to_le_bytes());
        out.extend(
            block
                .iter()
                .map(|x| (x * inv).round().clamp(-127.0, 127.0) as i8 as u8),
        );
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
        let v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let (dtype, data, values) = if shape.len() == 2 && !name.contains("relative_attention_bias")
        {
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
        gguf.push(TensorData {
            name: T5Keys::LlamaCpp.key(&name),
            shape,
            dtype,
            data,
        });
    }
    assert!(
        gguf.iter().any(|t| t.name == "enc.blk.1.ffn_gate.weight")
            && gguf.iter().any(|t| t.name == "token_embd.weight")
    );
    let mut qsrc = MemSource {
        name: "t5.gguf".into(),
        bytes: iclora::weights::gguf::write_gguf(&[], &gguf).unwrap(),
    };
    let qheader = read_header(&mut qsrc).unwrap();
    assert_eq!(T5Keys::detect(&qheader), T5Keys::LlamaCpp);
    let q = T5Encoder::load(gpu(), &mut qsrc, &qheader, None).unwrap(); // config inferred from llama.cpp names
    assert_eq!(
        (
            q.weights.blocks[1].ff.wi_0.dtype(),
            q.weights.shared.parts[0].1.dtype()
        ),
        (DType::Q8_0, DType::Q8_0)
    );
    let mut fsrc = MemSource {
        name: "t5_deq.safetensors".into(),
        bytes: write_safetensors(&[], &f32s).unwrap(),
    };
    let fheader = read_header(&mut fsrc).unwrap();
    let f = T5Encoder::load(gpu(), &mut fsrc, &fheader, None).unwrap();
    assert_eq!(q.config, f.config);
    let io = Io::open();
    for p in [1, 3] {
        let ids = io.ids(&format!("t5/ids/{p}"));
        let g = gpu();
        let mut b = g.batch();
        let (yq, yf) = (
            q.forward(g, &mut b, &ids).unwrap(),
            f.forward(g, &mut b, &ids).unwrap(),
        );
        g.submit(b).unwrap();
        assert_close(
            &format!("T5 Q8_0 GGUF vs dequantized F32, prompt {p}"),
            &read_back(&yq),
            &read_back(&yf),
            RTOL,
        );
    }
}
