//! CLIP text tower weights on the GPU, a struct tree mirroring the HF checkpoint keys
//! (transformers `CLIPTextModel`, src/transformers/models/clip/modeling_clip.py @ 679021a):
//! `text_model.embeddings.{token,position}_embedding.weight`,
//! `text_model.encoder.layers.{i}.{self_attn.{q,k,v,out}_proj, layer_norm{1,2}, mlp.fc{1,2}}.{weight,bias}`,
//! `text_model.final_layer_norm.{weight,bias}`. transformers 5 saves `CLIPTextModel` without the
//! `text_model.` prefix; the prefix before `embeddings.token_embedding.weight` is detected.

use super::config::ClipConfig;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};
use crate::model::layers::EmbeddingTable;
pub use crate::model::layers::Linear;
use crate::weights::load::ByteSource;
use crate::weights::loader::{Missing, TensorLoader};
use crate::weights::tensor_info::WeightsHeader;

pub const MODEL: &str = "CLIP text encoder";

const TOKEN_EMBEDDING: &str = "embeddings.token_embedding.weight";

/// The prefix of every key: `text_model.` (FLUX's `text_encoder`, transformers 4), `` (transformers
/// 5), or whatever precedes the token embedding's name.
pub fn key_prefix(header: &WeightsHeader) -> Result<String> {
    let found = header
        .tensors
        .iter()
        .filter_map(|t| t.name.strip_suffix(TOKEN_EMBEDDING))
        .find(|p| p.is_empty() || p.ends_with('.'));
    found.map(str::to_string).ok_or_else(|| Error::MissingModelTensor {
        model: MODEL,
        file: header.file.clone(),
        name: format!("text_model.{TOKEN_EMBEDDING}` or `{TOKEN_EMBEDDING}"),
    })
}

/// LayerNorm scale and shift, F32.
pub struct Norm {
    pub w: Tensor,
    pub b: Tensor,
}

pub struct ClipAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
}

pub struct ClipLayer {
    pub layer_norm1: Norm,
    pub self_attn: ClipAttention,
    pub layer_norm2: Norm,
    pub fc1: Linear,
    pub fc2: Linear,
}

pub struct ClipWeights {
    pub token_embedding: EmbeddingTable,
    pub position_embedding: EmbeddingTable,
    pub layers: Vec<ClipLayer>,
    pub final_layer_norm: Norm,
}

fn linear(l: &mut TensorLoader, name: &str, n: usize, k: usize) -> Result<Linear> {
    Linear::load(l, &[(format!("{name}.weight"), n)], &[(format!("{name}.bias"), n)], k)
}

fn norm(l: &mut TensorLoader, name: &str, n: usize) -> Result<Norm> {
    Ok(Norm { w: l.vector(&format!("{name}.weight"), n)?, b: l.vector(&format!("{name}.bias"), n)? })
}

impl ClipWeights {
    /// Loads every tensor `c` calls for; a missing tensor is `Error::MissingModelTensor`, one of
    /// another shape `Error::TensorShape`, both naming it.
    pub fn load(gpu: &Gpu, src: &mut dyn ByteSource, header: &WeightsHeader, c: &ClipConfig) -> Result<ClipWeights> {
        // A config built in code skipped `from_json`'s caps; they bound the layer list.
        c.check_caps(&header.file)?;
        c.validate()?;
        let max_bytes = gpu.info().max_storage_binding;
        let mut l = TensorLoader::new(gpu, src, header, MODEL, Missing::ModelTensor);
        let (h, m) = (c.hidden, c.intermediate);
        let pre = key_prefix(header)?;
        let e = format!("{pre}embeddings.");
        let token_embedding =
            EmbeddingTable::load(&mut l, &[&format!("{pre}{TOKEN_EMBEDDING}")], c.vocab, h, max_bytes)?;
        let position_embedding =
            EmbeddingTable::load(&mut l, &[&format!("{e}position_embedding.weight")], c.max_positions, h, max_bytes)?;
        let mut layers = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let p = format!("{pre}encoder.layers.{i}.");
            layers.push(ClipLayer {
                layer_norm1: norm(&mut l, &format!("{p}layer_norm1"), h)?,
                self_attn: ClipAttention {
                    q_proj: linear(&mut l, &format!("{p}self_attn.q_proj"), h, h)?,
                    k_proj: linear(&mut l, &format!("{p}self_attn.k_proj"), h, h)?,
                    v_proj: linear(&mut l, &format!("{p}self_attn.v_proj"), h, h)?,
                    out_proj: linear(&mut l, &format!("{p}self_attn.out_proj"), h, h)?,
                },
                layer_norm2: norm(&mut l, &format!("{p}layer_norm2"), h)?,
                fc1: linear(&mut l, &format!("{p}mlp.fc1"), m, h)?,
                fc2: linear(&mut l, &format!("{p}mlp.fc2"), h, m)?,
            });
        }
        let final_layer_norm = norm(&mut l, &format!("{pre}final_layer_norm"), h)?;
        let (uploads, src) = l.finish();
        // CLIP-L is 0.25 GB: no pacing needed.
        uploads.run_now(gpu, src)?;
        Ok(ClipWeights { token_embedding, position_embedding, layers, final_layer_norm })
    }
}
