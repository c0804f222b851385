//! Which component a weights file holds and in which key scheme, from its tensor names alone
//! (for `iclora inspect`, and for messages when a file is given for the wrong component). The
//! schemes are those the loaders accept (BFL and diffusers names as mapped by
//! src/diffusers/loaders/single_file_utils.py @ 58eb52c; the LoRA formats of
//! src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c; city96 GGUFs from ComfyUI-GGUF
//! tools/convert.py @ 795e451); the FLUX and VAE cases reuse the loaders' own detection so the answer is what
//! loading would do.

use std::fmt;

use super::fp8::is_scaled_fp8;
use super::tensor_info::WeightsHeader;
use crate::model::flux::{FluxTree, KeyScheme};
use crate::model::vae::VaeKeys;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    FluxTransformer,
    T5Encoder,
    ClipText,
    Vae,
    Lora,
    Unrecognized,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::FluxTransformer => "FLUX transformer",
            Component::T5Encoder => "T5 encoder",
            Component::ClipText => "CLIP-L text encoder",
            Component::Vae => "VAE",
            Component::Lora => "LoRA",
            Component::Unrecognized => "unrecognized",
        }
    }
}

/// The result of [`detect`]; displays as e.g. `FLUX transformer, BFL-native names
/// (model.diffusion_model.)` or `LoRA (kohya)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub component: Component,
    /// The key scheme, e.g. `BFL-native names`, `diffusers names`, `kohya`; empty when unrecognized.
    pub scheme: String,
    /// The prefix before every key (`model.diffusion_model.`, `vae.`), if any.
    pub prefix: String,
    /// A ComfyUI scaled-fp8 file (`weights::fp8`).
    pub scaled_fp8: bool,
}

impl fmt::Display for Detection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.component {
            Component::Unrecognized => f.write_str("unrecognized")?,
            Component::Lora => write!(f, "LoRA ({})", self.scheme)?,
            c => write!(f, "{}, {}", c.name(), self.scheme)?,
        }
        if !self.prefix.is_empty() {
            write!(f, " ({})", self.prefix)?;
        }
        if self.scaled_fp8 {
            f.write_str(", ComfyUI scaled fp8")?;
        }
        Ok(())
    }
}

/// The first component of every BFL name of the FLUX key tree (`img_in`, `double_blocks`, ...).
fn bfl_roots() -> Vec<String> {
    let keys = FluxTree::probe().linear_keys();
    let mut roots: Vec<String> = keys.iter().filter_map(|k| k.bfl.split('.').next()).map(str::to_string).collect();
    roots.sort();
    roots.dedup();
    roots
}

/// The LoRA scheme of `names`, if they are a LoRA's (the schemes `lora::parse` reads).
fn lora_scheme<'a>(mut names: impl Iterator<Item = &'a str>) -> Option<&'static str> {
    let is_lora = |n: &str| {
        [".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", "_lora1.", "_lora2."].iter().any(|p| n.contains(p))
    };
    let n = names.find(|n| is_lora(n))?;
    Some(if n.starts_with("lora_unet_") || n.starts_with("lora_te") || n.starts_with("lora_transformer_") {
        "kohya"
    } else if n.contains(".processor.") {
        "XLabs"
    } else if n.starts_with("base_model.model.") {
        "PEFT names"
    } else if bfl_roots().iter().any(|r| n.contains(&format!("{r}."))) {
        "BFL-native names"
    } else {
        "diffusers names"
    })
}

/// Detects the component and key scheme of `header`'s tensors (never fails: `Unrecognized`).
pub fn detect(header: &WeightsHeader) -> Detection {
    let scaled_fp8 = is_scaled_fp8(header);
    let found = |component, scheme: &str, prefix: &str| Detection {
        component,
        scheme: scheme.into(),
        prefix: prefix.into(),
        scaled_fp8,
    };
    if let Some(scheme) = lora_scheme(header.tensors.iter().map(|t| t.name.as_str())) {
        return found(Component::Lora, scheme, "");
    }
    match KeyScheme::detect(header) {
        Ok(KeyScheme::Diffusers { prefix }) => return found(Component::FluxTransformer, "diffusers names", &prefix),
        Ok(KeyScheme::Bfl { prefix }) => return found(Component::FluxTransformer, "BFL-native names", &prefix),
        Err(_) => {}
    }
    match VaeKeys::detect(header) {
        Ok(VaeKeys::Diffusers { prefix }) => return found(Component::Vae, "diffusers names", &prefix),
        Ok(VaeKeys::Bfl { prefix }) => return found(Component::Vae, "BFL ae names", &prefix),
        Err(_) => {}
    }
    // Suffix matches, so bundled checkpoints (`text_encoders.t5xxl.transformer.`) are found too.
    const BY_SUFFIX: [(Component, &str, &str); 4] = [
        (Component::T5Encoder, "HF names", "encoder.block.0.layer.0.SelfAttention.q.weight"),
        (Component::T5Encoder, "llama.cpp GGUF names", "enc.blk.0.attn_q.weight"),
        (Component::ClipText, "HF names", "text_model.encoder.layers.0.self_attn.q_proj.weight"),
        (Component::ClipText, "HF names", "text_model.embeddings.token_embedding.weight"),
    ];
    for (component, scheme, suffix) in BY_SUFFIX {
        if let Some(t) = header.tensors.iter().find(|t| t.name.ends_with(suffix)) {
            return found(component, scheme, &t.name[..t.name.len() - suffix.len()]);
        }
    }
    found(Component::Unrecognized, "", "")
}
