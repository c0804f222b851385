//! The T5 encoder forward pass (transformers `T5EncoderModel`,
//! src/transformers/models/t5/modeling_t5.py @ 6b8b757) on the kernels: embedding gather, then per
//! block RMSNorm → attention (no scaling, relative position bias shared by all blocks) → residual,
//! RMSNorm → `gelu_tanh(x·W0ᵀ) ⊙ (x·W1ᵀ)` → `·Woᵀ` → residual; final RMSNorm. No attention mask:
//! padding tokens are ordinary tokens (BFL's `HFEmbedder` passes no mask,
//! src/flux/modules/conditioner.py @ 802fb47).

use super::config::T5Config;
use super::weights::{T5Block, T5Weights};
use crate::error::{Error, Result};
use crate::gpu::{Batch, Gpu, Tensor};
use crate::kernels::attention::{attention, AttnInput, AttnOptions};
use crate::kernels::elementwise::{add, mul, Activation};
use crate::kernels::norm::rms_norm;
use crate::weights::load::ByteSource;
use crate::weights::tensor_info::WeightsHeader;

/// HF's bidirectional bucket of `rel = key position − query position`
/// (`T5Attention._relative_position_bucket`, src/transformers/models/t5/modeling_t5.py @ 6b8b757): half the
/// buckets for `rel > 0`; within a half, exact up to `max_exact = buckets/4`, then logarithmic up to
/// `max_distance`, computed in f32 and truncated like torch's `.to(long)`.
pub fn relative_position_bucket(rel: i64, buckets: usize, max_distance: usize) -> usize {
    let nb = buckets / 2;
    let base = if rel > 0 { nb } else { 0 };
    let n = rel.unsigned_abs() as usize;
    let max_exact = nb / 2;
    if n < max_exact {
        return base + n;
    }
    let ratio = (n as f32 / max_exact as f32).ln() / ((max_distance as f64 / max_exact as f64).ln() as f32);
    let large = max_exact + (ratio * (nb - max_exact) as f32) as usize;
    base + large.min(nb - 1)
}

/// The `[heads, len, len]` bias `bias[h, i, j] = R[bucket(j − i), h]` from `R` `[buckets, heads]`.
pub fn relative_position_bias(r: &[f32], c: &T5Config, len: usize) -> Vec<f32> {
    let mut bias = vec![0f32; c.heads * len * len];
    for i in 0..len {
        for j in 0..len {
            let b = relative_position_bucket(j as i64 - i as i64, c.buckets, c.max_distance);
            for h in 0..c.heads {
                bias[(h * len + i) * len + j] = r[b * c.heads + h];
            }
        }
    }
    bias
}

pub struct T5Encoder {
    pub config: T5Config,
    pub weights: T5Weights,
}

impl T5Block {
    fn forward(&self, gpu: &Gpu, b: &mut Batch, c: &T5Config, h: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let a = &self.attention;
        let x = rms_norm(gpu, b, h, &a.layer_norm, c.eps)?;
        let (q, k, v) =
            (a.q.forward(gpu, b, &x, None)?, a.k.forward(gpu, b, &x, None)?, a.v.forward(gpu, b, &x, None)?);
        let opts = AttnOptions { scale: 1.0, causal: false, bias: Some(bias) };
        let o = attention(
            gpu,
            b,
            AttnInput::new(&q, 0),
            AttnInput::new(&k, 0),
            AttnInput::new(&v, 0),
            c.heads,
            c.d_kv,
            &opts,
        )?;
        let o = a.o.forward(gpu, b, &o, None)?;
        let h = add(gpu, b, h, &o)?;
        let f = &self.ff;
        let x = rms_norm(gpu, b, &h, &f.layer_norm, c.eps)?;
        let gate = f.wi_0.forward(gpu, b, &x, Some(Activation::GeluTanh))?;
        let up = f.wi_1.forward(gpu, b, &x, None)?;
        let gated = mul(gpu, b, &gate, &up)?;
        let y = f.wo.forward(gpu, b, &gated, None)?;
        add(gpu, b, &h, &y)
    }
}

impl T5Encoder {
    /// Loads HF-named weights; the config is `config` when given (from `config.json`), else inferred.
    pub fn load(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        config: Option<T5Config>,
    ) -> Result<T5Encoder> {
        let config = match config {
            Some(c) => c,
            None => T5Config::infer(header)?,
        };
        let weights = T5Weights::load(gpu, src, header, &config)?;
        Ok(T5Encoder { config, weights })
    }

    /// [`load`](Self::load) with paced uploads, for async callers (`T5Weights::load_paced`).
    pub async fn load_paced(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        config: Option<T5Config>,
    ) -> Result<T5Encoder> {
        let config = match config {
            Some(c) => c,
            None => T5Config::infer(header)?,
        };
        let weights = T5Weights::load_paced(gpu, src, header, &config).await?;
        Ok(T5Encoder { config, weights })
    }

    /// `last_hidden_state` `[ids.len(), d_model]` for token ids (padded as the tokenizer gives them).
    pub fn forward(&self, gpu: &Gpu, b: &mut Batch, ids: &[u32]) -> Result<Tensor> {
        let c = &self.config;
        if ids.is_empty() {
            return Err(Error::InvalidArgument("T5 text encoder: no token ids".into()));
        }
        let bias = relative_position_bias(&self.weights.relative_attention_bias, c, ids.len());
        let bias = gpu.upload_f32(&[c.heads, ids.len(), ids.len()], &bias)?;
        let mut h = self.weights.shared.gather(gpu, b, ids)?; // no sqrt(d_model) scaling in T5
        for blk in &self.weights.blocks {
            h = blk.forward(gpu, b, c, &h, &bias)?;
        }
        rms_norm(gpu, b, &h, &self.weights.final_layer_norm, c.eps)
    }
}
