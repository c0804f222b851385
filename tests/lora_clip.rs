//! LoRA on the CLIP text encoder (src/lora/clip.rs) against transformers + peft (fixtures from
//! tools/golden/make_clip_lora_fixtures.py): one rank-4, alpha-8 adapter on every encoder Linear
//! of the tiny CLIP of make_text_fixtures.py, in diffusers/PEFT (`text_encoder.…lora_A/B`, alpha in
//! the metadata) and kohya (`lora_te1_…`, `.alpha` keys) names, at strengths 1.0 and 0.6.
//! Tolerance: 1e-4 relative (`assert_close`), the bound of the CLIP golden test
//! (tests/model_text.rs); the two formats and the other key spellings agree to 1e-6 (same factors,
//! same kernels). Typed errors for foreign shapes and unknown modules, encoder unchanged afterwards.

mod common;
mod lora_common;

use common::text::{clip_tokenizer, read, Io, DIR, RTOL};
use common::{assert_close, gpu};
use iclora::gpu::DType;
use iclora::lora::LoraHost;
use iclora::lora::{LoraAdapter, LoraFormat};
use iclora::model::clip::{ClipConfig, ClipTextEncoder};
use iclora::weights::load::{read_header, FileSource};
use iclora::weights::tensor_info::{FileDType, TensorData};
use iclora::Error;
use lora_common::{config as flux_config, f32_tensor, rewrite};
use safetensors::SafeTensors;

const SAME: f32 = 1e-6;
const PROMPTS: [usize; 2] = [0, 1];

fn encoder() -> ClipTextEncoder {
    let cfg =
        ClipConfig::from_json("clip_text.config.json", &String::from_utf8(read("clip_text.config.json")).unwrap())
            .unwrap();
    let mut src = FileSource::open(format!("{DIR}/clip_text.safetensors")).unwrap();
    let header = read_header(&mut src).unwrap();
    ClipTextEncoder::load(gpu(), &mut src, &header, Some(cfg)).unwrap()
}

fn adapter(file: &str) -> LoraAdapter {
    LoraAdapter::load(&mut FileSource::open(format!("{DIR}/{file}")).unwrap(), &flux_config()).unwrap()
}

/// `(last_hidden_state, pooled)` per prompt of [`PROMPTS`].
fn forward(enc: &ClipTextEncoder) -> Vec<(Vec<f32>, Vec<f32>)> {
    let (io, eos) = (Io::open(), clip_tokenizer(true).eos_id());
    PROMPTS
        .iter()
        .map(|p| {
            let g = gpu();
            let mut b = g.batch();
            let out = enc.forward(g, &mut b, &io.ids(&format!("clip/ids/{p}")), eos).unwrap();
            g.submit(b).unwrap();
            (g.read_f32_blocking(&out.last_hidden_state).unwrap(), g.read_f32_blocking(&out.pooled).unwrap())
        })
        .collect()
}

fn expected(scale: &str) -> Vec<(Vec<f32>, Vec<f32>)> {
    let f32s = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<f32>>();
    let bytes = read("clip_lora_io.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let get = |k: String| f32s(st.tensor(&k).unwrap_or_else(|_| panic!("no `{k}`")).data());
    PROMPTS.iter().map(|p| (get(format!("out/{scale}/{p}")), get(format!("pooled/{scale}/{p}")))).collect()
}

fn base_outputs() -> Vec<(Vec<f32>, Vec<f32>)> {
    let io = Io::open();
    PROMPTS.iter().map(|p| (io.f32s(&format!("clip/out/{p}")), io.f32s(&format!("clip/pooled/{p}")))).collect()
}

fn check(what: &str, got: &[(Vec<f32>, Vec<f32>)], want: &[(Vec<f32>, Vec<f32>)], rtol: f32) {
    for (p, ((gh, gp), (wh, wp))) in PROMPTS.iter().zip(got.iter().zip(want)) {
        assert_close(&format!("{what}: last_hidden_state, prompt {p}"), gh, wh, rtol);
        assert_close(&format!("{what}: pooled, prompt {p}"), gp, wp, rtol);
    }
}

#[test]
fn diffusers_and_kohya_clip_loras_match_peft_at_both_strengths() {
    let mut enc = encoder();
    check("base", &forward(&enc), &base_outputs(), RTOL);
    let mut at_one = Vec::new();
    for (file, format) in
        [("clip_lora_diffusers.safetensors", LoraFormat::Diffusers), ("clip_lora_kohya.safetensors", LoraFormat::Kohya)]
    {
        let a = adapter(file);
        assert_eq!(
            (a.report.formats.as_slice(), a.report.ranks.as_slice()),
            ([format].as_slice(), [4].as_slice()),
            "{file}"
        );
        assert!(
            a.modules.is_empty() && a.report.layers.is_empty() && a.report.ignored.is_empty(),
            "{file}: {:?}",
            a.report
        );
        assert_eq!(a.report.clip_layers.len(), 2 * 6, "{file}: {:?}", a.report.clip_layers);
        assert!(a.report.clip_layers.contains(&"text_model.encoder.layers.1.mlp.fc2".to_string()));
        assert!(a.clip.iter().all(|m| m.alpha == 8.0), "{file}: alpha from the metadata / `.alpha` keys");
        let applied = enc.set_loras(gpu(), &[(&a, 1.0)]).unwrap();
        assert_eq!((applied.weights, applied.slices), (12, 12));
        assert_eq!(applied.layers.len(), 12);
        let out = forward(&enc);
        check(&format!("{file} @1.0"), &out, &expected("1.0"), RTOL);
        at_one.push(out);
        enc.set_lora_scales(&[(&a, 0.6)]).unwrap();
        check(&format!("{file} @0.6 (rescaled)"), &forward(&enc), &expected("0.6"), RTOL);
        enc.set_loras(gpu(), &[(&a, 0.6)]).unwrap();
        check(&format!("{file} @0.6"), &forward(&enc), &expected("0.6"), RTOL);
    }
    check("kohya vs diffusers format", &at_one[1], &at_one[0], SAME);
    enc.clear_loras();
    check("cleared", &forward(&enc), &base_outputs(), RTOL);
}

#[test]
fn other_clip_key_spellings_and_mixed_files() {
    let mut enc = encoder();
    enc.set_loras(gpu(), &[(&adapter("clip_lora_diffusers.safetensors"), 1.0)]).unwrap();
    let reference = forward(&enc);
    // transformers 5 (no `text_model.`), ComfyUI (`text_encoders.clip_l.transformer.`), raw PEFT.
    for (what, prefix) in [
        ("no text_model.", "text_encoder."),
        ("ComfyUI", "text_encoders.clip_l.transformer.text_model."),
        ("raw PEFT", "base_model.model.text_model."),
    ] {
        let rename = |k: &str| Some(format!("{prefix}{}", k.strip_prefix("text_encoder.text_model.").unwrap()));
        let a =
            LoraAdapter::load(&mut rewrite("clip_lora_diffusers.safetensors", rename, vec![]), &flux_config()).unwrap();
        assert_eq!(a.clip.len(), 12, "{what}");
        enc.set_loras(gpu(), &[(&a, 1.0)]).unwrap();
        check(what, &forward(&enc), &reference, SAME);
    }
    // A kohya file with transformer, CLIP and T5 parts: each part goes where it belongs.
    let flux = read("lora_a_kohya.safetensors");
    let st = SafeTensors::deserialize(&flux).unwrap();
    let mut extra: Vec<TensorData> = st
        .tensors()
        .into_iter()
        .map(|(k, t)| TensorData {
            name: k,
            shape: t.shape().iter().map(|&d| d as u64).collect(),
            dtype: FileDType::Gpu(DType::F16),
            data: t.data().to_vec(),
        })
        .collect();
    extra.push(f32_tensor("lora_te2_encoder_block_0_layer_0_SelfAttention_q.lora_down.weight", &[4, 32], 0.1));
    let mixed =
        LoraAdapter::load(&mut rewrite("clip_lora_kohya.safetensors", |k| Some(k.into()), extra), &flux_config())
            .unwrap();
    assert_eq!((mixed.clip.len(), mixed.report.clip_layers.len()), (12, 12));
    assert_eq!(mixed.report.layers.len(), adapter("lora_a_kohya.safetensors").report.layers.len());
    assert_eq!(mixed.report.ignored.len(), 1, "T5 part reported: {:?}", mixed.report.ignored);
    assert!(mixed.report.ignored[0].1.contains("T5"));
    enc.set_loras(gpu(), &[(&mixed, 0.6)]).unwrap();
    check("mixed file @0.6", &forward(&enc), &expected("0.6"), RTOL);
    // Two adapters on CLIP: the same adapter twice at 0.3 each equals it once at 0.6.
    let k = adapter("clip_lora_kohya.safetensors");
    let applied = enc.set_loras(gpu(), &[(&k, 0.3), (&adapter("clip_lora_diffusers.safetensors"), 0.3)]).unwrap();
    assert_eq!(applied.slices, 24);
    check("0.3 + 0.3", &forward(&enc), &expected("0.6"), RTOL);
}

#[test]
fn foreign_and_unknown_clip_modules_are_typed_errors_and_leave_the_encoder_alone() {
    let mut enc = encoder();
    let a = adapter("clip_lora_kohya.safetensors");
    enc.set_loras(gpu(), &[(&a, 1.0)]).unwrap();
    // Not a Linear of the encoder layers: refused when parsing, naming the key.
    let key = "lora_te1_text_model_embeddings_token_embedding.lora_down.weight";
    match LoraAdapter::load(
        &mut rewrite("clip_lora_kohya.safetensors", |k| Some(k.into()), vec![f32_tensor(key, &[4, 64], 0.1)]),
        &flux_config(),
    ) {
        Err(Error::Lora { key: k, .. }) => assert_eq!(k, key),
        other => panic!("unknown CLIP module accepted: {:?}", other.map(|a| a.report)),
    }
    // A CLIP-L-sized module (768 wide) and a module on layer 5 (the tiny CLIP has 2): refused
    // by set_loras (Error::Lora), the applied adapter stays.
    let n = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj";
    let wide = vec![
        f32_tensor(&format!("{n}.lora_down.weight"), &[4, 768], 0.1),
        f32_tensor(&format!("{n}.lora_up.weight"), &[768, 4], 0.1),
    ];
    let drop_n = |k: &str| (!k.starts_with(n)).then(|| k.to_string());
    let wide = LoraAdapter::load(&mut rewrite("clip_lora_kohya.safetensors", drop_n, wide), &flux_config()).unwrap();
    let deep = |k: &str| Some(k.replace("layers_1_", "layers_5_"));
    let deep = LoraAdapter::load(&mut rewrite("clip_lora_kohya.safetensors", deep, vec![]), &flux_config()).unwrap();
    assert!(deep.report.clip_layers.iter().any(|l| l.contains("layers.5.")));
    for bad in [&wide, &deep] {
        assert!(matches!(enc.set_loras(gpu(), &[(&a, 0.6), (bad, 1.0)]), Err(Error::Lora { .. })));
    }
    assert!(matches!(enc.set_lora_scales(&[(&a, 0.6), (&a, 1.0)]), Err(Error::InvalidArgument(_))));
    check("kept after refusals", &forward(&enc), &expected("1.0"), RTOL);
}
