//! The text stage: tokenizers and the T5 and CLIP encoders, loaded for one prompt and freed.

use super::super::components::{in_component, resolve, resolve_tokenizer};
use super::super::generate::{check, load_component, sub, tokenizer, Event, ModelPaths, Observer, Stage};
use super::super::store::ModelStore;
use crate::clock::Stopwatch;
use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::lora::{LoraAdapter, LoraHost};
use crate::model::clip::{ClipConfig, ClipTextEncoder};
use crate::model::t5::{T5Config, T5Encoder};

/// Tokenizes and encodes `prompt` with T5 and CLIP (the CLIP parts of `loras` applied), then
/// frees both encoders; returns `(txt [L, 4096], pooled [768])`.
pub(super) async fn encode_text(
    gpu: &Gpu,
    store: &ModelStore,
    paths: &ModelPaths,
    prompt: &str,
    t5_len: usize,
    loras: &[(&LoraAdapter, f32)],
    obs: &mut dyn Observer,
) -> Result<(Tensor, Tensor)> {
    let t5_tok = tokenizer(
        "T5 tokenizer",
        resolve_tokenizer(store, "T5 tokenizer", sub(paths, "tokenizer_2").as_deref(), paths.t5_tokenizer.as_deref())?,
        Some(t5_len),
    )?;
    let clip_tok = tokenizer(
        "CLIP tokenizer",
        resolve_tokenizer(
            store,
            "CLIP tokenizer",
            sub(paths, "tokenizer").as_deref(),
            paths.clip_tokenizer.as_deref(),
        )?,
        None,
    )?;
    let t5_ids = t5_tok.encode(prompt)?;
    let clip_ids = clip_tok.encode(prompt)?;
    for w in [clip_ids.warning("CLIP"), t5_ids.warning("T5")].into_iter().flatten() {
        obs.event(Event::Warning(&w));
    }
    check(obs)?;
    obs.event(Event::Stage { stage: Stage::Load, what: "loading the text encoders" });
    let mut t5c =
        resolve(store, "T5 text encoder", sub(paths, "text_encoder_2").as_deref(), paths.t5.as_deref(), "model")?;
    let mut clipc =
        resolve(store, "CLIP text encoder", sub(paths, "text_encoder").as_deref(), paths.clip.as_deref(), "model")?;
    let (t5f, clipf) = (t5c.weights.file.clone(), clipc.weights.file.clone());
    let t5cfg = t5c
        .config
        .as_deref()
        .map(|j| T5Config::from_json(&t5f, j))
        .transpose()
        .map_err(|e| in_component("T5 text encoder", &t5f, e))?;
    let clipcfg = clipc
        .config
        .as_deref()
        .map(|j| ClipConfig::from_json(&clipf, j))
        .transpose()
        .map_err(|e| in_component("CLIP text encoder", &clipf, e))?;
    let t = Stopwatch::start();
    let t5 = T5Encoder::load_paced(gpu, t5c.weights.source.as_mut(), &t5c.weights.header, t5cfg)
        .await
        .map_err(|e| in_component("T5 text encoder", &t5f, e))?;
    let mut clip = load_component("CLIP text encoder", &mut clipc, |s, h| ClipTextEncoder::load(gpu, s, h, clipcfg))?;
    obs.event(Event::Line(&format!("load: text encoders ({t5f}, {clipf}) in {:.2}s", t.secs())));
    if loras.iter().any(|(a, _)| !a.clip.is_empty()) {
        let applied = clip.set_loras(gpu, loras).map_err(|e| in_component("CLIP text encoder", &clipf, e))?;
        obs.event(Event::Line(&format!("load: LoRA on {} CLIP weights", applied.weights)));
    }
    check(obs)?;
    obs.event(Event::Stage { stage: Stage::Encode, what: "encoding the prompt" });
    let t = Stopwatch::start();
    let mut b = gpu.batch();
    let txt = t5.forward(gpu, &mut b, &t5_ids.ids).map_err(|e| in_component("T5 text encoder", &t5f, e))?;
    let pooled = clip
        .forward(gpu, &mut b, &clip_ids.ids, clip_tok.eos_id())
        .map_err(|e| in_component("CLIP text encoder", &clipf, e))?
        .pooled;
    gpu.submit(b)?;
    gpu.done().await?;
    obs.event(Event::Line(&format!(
        "encode: T5 {} tokens, CLIP {} tokens in {:.2}s",
        t5_ids.ids.len(),
        clip_ids.ids.len(),
        t.secs()
    )));
    Ok((txt, pooled))
}
