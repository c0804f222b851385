//! The CLIP text forward pass (transformers `CLIPTextTransformer`,
//! src/transformers/models/clip/modeling_clip.py @ 679021a) on the kernels: token + position
//! embeddings, pre-LN blocks (causal attention scaled by 1/sqrt(head_dim), quick-GELU MLP), final
//! LayerNorm, and the pooled output: the final hidden state at the EOS position.

use super::config::ClipConfig;
use super::weights::{ClipLayer, ClipWeights, Norm};
use crate::error::{Error, Result};
use crate::gpu::{Batch, Gpu, Tensor};
use crate::kernels::attention::{attention, AttnInput, AttnOptions};
use crate::kernels::copy::slice_rows;
use crate::kernels::elementwise::{add, Activation};
use crate::kernels::norm::layer_norm;
use crate::weights::load::ByteSource;
use crate::weights::tensor_info::WeightsHeader;

/// The row transformers pools (`CLIPTextTransformer`): with the legacy `eos_token_id == 2` the
/// argmax of the ids (its first occurrence), else the first position holding `eos_id`. FLUX's
/// CLIP-L has the legacy config; its EOS 49407 is the largest id, so both rules agree there.
/// Without a config, `eos_id` is the tokenizer's EOS.
pub fn pooled_position(ids: &[u32], eos_id: u32) -> Result<usize> {
    if eos_id == 2 {
        let max = ids.iter().copied().max().ok_or_else(|| Error::InvalidArgument("CLIP: no token ids".into()))?;
        return ids.iter().position(|&i| i == max).ok_or_else(|| Error::InvalidArgument("CLIP: no token ids".into()));
    }
    ids.iter().position(|&i| i == eos_id).ok_or_else(|| {
        Error::InvalidArgument(format!("CLIP: the token ids hold no end-of-text token ({eos_id}) to pool at"))
    })
}

/// `last_hidden_state` `[L, hidden]` and `pooler_output` `[1, hidden]`.
pub struct ClipOutput {
    pub last_hidden_state: Tensor,
    pub pooled: Tensor,
}

pub struct ClipTextEncoder {
    pub config: ClipConfig,
    pub weights: ClipWeights,
}

fn norm(gpu: &Gpu, b: &mut Batch, x: &Tensor, n: &Norm, eps: f32) -> Result<Tensor> {
    layer_norm(gpu, b, x, Some((&n.w, &n.b)), eps)
}

impl ClipLayer {
    fn forward(&self, gpu: &Gpu, b: &mut Batch, c: &ClipConfig, h: &Tensor) -> Result<Tensor> {
        let a = &self.self_attn;
        let x = norm(gpu, b, h, &self.layer_norm1, c.eps)?;
        let q = a.q_proj.forward(gpu, b, &x, None)?;
        let k = a.k_proj.forward(gpu, b, &x, None)?;
        let v = a.v_proj.forward(gpu, b, &x, None)?;
        let opts = AttnOptions { causal: true, ..AttnOptions::for_head_dim(c.head_dim()) };
        let o = attention(
            gpu,
            b,
            AttnInput::new(&q, 0),
            AttnInput::new(&k, 0),
            AttnInput::new(&v, 0),
            c.heads,
            c.head_dim(),
            &opts,
        )?;
        let o = a.out_proj.forward(gpu, b, &o, None)?;
        let h = add(gpu, b, h, &o)?;
        let x = norm(gpu, b, &h, &self.layer_norm2, c.eps)?;
        let m = self.fc1.forward(gpu, b, &x, Some(Activation::QuickGelu))?;
        let y = self.fc2.forward(gpu, b, &m, None)?;
        add(gpu, b, &h, &y)
    }
}

impl ClipTextEncoder {
    /// Loads HF-named weights; the config is `config` when given (from `config.json`), else inferred.
    pub fn load(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        config: Option<ClipConfig>,
    ) -> Result<ClipTextEncoder> {
        let config = match config {
            Some(c) => c,
            None => ClipConfig::infer(header)?,
        };
        let weights = ClipWeights::load(gpu, src, header, &config)?;
        Ok(ClipTextEncoder { config, weights })
    }

    /// Encodes `ids` (at most `max_positions`); `tokenizer_eos` is the tokenizer's EOS id, used
    /// for pooling when the config names none (see [`pooled_position`]).
    pub fn forward(&self, gpu: &Gpu, b: &mut Batch, ids: &[u32], tokenizer_eos: u32) -> Result<ClipOutput> {
        let c = &self.config;
        if ids.is_empty() || ids.len() > c.max_positions {
            return Err(Error::InvalidArgument(format!(
                "CLIP text encoder takes 1 to {} token ids, got {}",
                c.max_positions,
                ids.len()
            )));
        }
        let pool_at = pooled_position(ids, c.eos_token_id.unwrap_or(tokenizer_eos))?;
        let w = &self.weights;
        let tok = w.token_embedding.gather(gpu, b, ids)?;
        let positions: Vec<u32> = (0..ids.len() as u32).collect();
        let pos = w.position_embedding.gather(gpu, b, &positions)?;
        let mut h = add(gpu, b, &tok, &pos)?;
        for layer in &w.layers {
            h = layer.forward(gpu, b, c, &h)?;
        }
        let last_hidden_state = norm(gpu, b, &h, &w.final_layer_norm, c.eps)?;
        let pooled = slice_rows(gpu, b, &last_hidden_state, pool_at, 1)?;
        Ok(ClipOutput { last_hidden_state, pooled })
    }
}
