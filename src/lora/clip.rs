//! LoRA on the CLIP-L text encoder (diffusers `_convert_kohya_flux_lora_to_diffusers`,
//! src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c: kohya `lora_te1_…`, diffusers/PEFT
//! `text_encoder.…`): the key names of its Linears; the encoder takes them as a `LoraHost`
//! (src/model/clip/lora.rs), like the transformer.

use crate::model::clip::ClipConfig;

/// The Linears of one encoder layer: dotted HF name (under `encoder.layers.{i}.`) and kohya's
/// underscored form.
pub(crate) const LAYER_LINEARS: [(&str, &str); 6] = [
    ("self_attn.q_proj", "self_attn_q_proj"),
    ("self_attn.k_proj", "self_attn_k_proj"),
    ("self_attn.v_proj", "self_attn_v_proj"),
    ("self_attn.out_proj", "self_attn_out_proj"),
    ("mlp.fc1", "mlp_fc1"),
    ("mlp.fc2", "mlp_fc2"),
];

/// Prefixes before the text model in the dotted forms: diffusers (`text_encoder.`), ComfyUI
/// (`text_encoders.clip_l.transformer.`), raw PEFT (`base_model.model.`), transformers 4
/// (`text_model.`; transformers 5 saves `CLIPTextModel` without it).
const DOTTED_PREFIXES: [&str; 5] =
    ["text_encoders.clip_l.transformer.", "text_encoders.clip_l.", "text_encoder.", "base_model.model.", "text_model."];

/// `text_model.encoder.layers.{i}.{linear}` for the module part of a CLIP LoRA key (suffix
/// removed): kohya `lora_te1_text_model_encoder_layers_{i}_self_attn_q_proj` (also `lora_te_`), or
/// dotted `text_encoder.text_model.encoder.layers.{i}.self_attn.q_proj` and the prefix variants.
/// `None` for anything else (embeddings, `text_projection`, ...).
pub fn clip_linear_name(module: &str) -> Option<String> {
    let (layer, rest, underscored) =
        if let Some(k) = module.strip_prefix("lora_te1_").or_else(|| module.strip_prefix("lora_te_")) {
            let k = k.strip_prefix("text_model_").unwrap_or(k).strip_prefix("encoder_layers_")?;
            let (i, rest) = k.split_once('_')?;
            (i, rest, true)
        } else {
            let mut m = module;
            while let Some(p) = DOTTED_PREFIXES.iter().find(|p| m.starts_with(*p)) {
                m = &m[p.len()..];
            }
            let (i, rest) = m.strip_prefix("encoder.layers.")?.split_once('.')?;
            (i, rest, false)
        };
    let i: usize = layer.parse().ok()?;
    let (dotted, _) = LAYER_LINEARS.iter().find(|(d, u)| if underscored { *u == rest } else { *d == rest })?;
    Some(format!("text_model.encoder.layers.{i}.{dotted}"))
}

/// Every Linear of a CLIP text tower of config `c` with its shape `[n, k]`, by the names of
/// [`clip_linear_name`].
pub fn clip_linears(c: &ClipConfig) -> Vec<(String, usize, usize)> {
    let (h, m) = (c.hidden, c.intermediate);
    (0..c.layers)
        .flat_map(|i| {
            LAYER_LINEARS.iter().map(move |(d, _)| {
                let (n, k) = match *d {
                    "mlp.fc1" => (m, h),
                    "mlp.fc2" => (h, m),
                    _ => (h, h),
                };
                (format!("text_model.encoder.layers.{i}.{d}"), n, k)
            })
        })
        .collect()
}
