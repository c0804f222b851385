//! Random FLUX weights of any config in one weight format, for `iclora bench flux-step`: a
//! full-size FLUX.1 step can be timed without a checkpoint. Weights are uniform in ±1/√fan_in
//! (float formats; quantized formats get random quant bits with small scales) so activations stay
//! finite; biases are 0 and norm scales 1.
//!
//! All double blocks share one block's tensors, and so do all single blocks: memory is that of one
//! block of each kind whatever the block counts (timing does not depend on the values).

use super::config::FluxConfig;
use super::model::TIME_DIM;
use super::weights::{DoubleBlock, FluxWeights, Linear, MlpEmbedder, NormOut, SingleBlock, TimeTextEmbed};
use crate::error::Result;
use crate::gpu::{DType, Gpu, Tensor};
use crate::kernels::matmul::Precision;
use crate::reference::random::{weight_bytes, Rng};
use crate::weights::repack::repack;

struct Maker<'a> {
    gpu: &'a Gpu,
    dtype: DType,
    rng: Rng,
}

impl Maker<'_> {
    fn linear(&mut self, n: usize, k: usize) -> Result<Linear> {
        let bytes = weight_bytes(&mut self.rng, self.dtype, n * k, 1.0 / (k as f32).sqrt(), 0.01);
        let w = self.gpu.upload_raw(&[n, k], self.dtype, &repack(self.dtype, &bytes)?)?;
        Ok(Linear { w, b: self.gpu.upload_f32(&[n], &vec![0.0; n])?, lora: None, precision: Precision::F32 })
    }

    fn ones(&self, n: usize) -> Result<Tensor> {
        self.gpu.upload_f32(&[n], &vec![1.0; n])
    }

    fn embedder(&mut self, k: usize, h: usize) -> Result<MlpEmbedder> {
        Ok(MlpEmbedder { linear_1: self.linear(h, k)?, linear_2: self.linear(h, h)? })
    }
}

impl FluxWeights {
    /// Random weights for `c` with every matrix in `dtype` (a format the matmul takes; quantized
    /// formats need every input width to be a multiple of the block size). Block tensors are
    /// shared across blocks of one kind (see the module doc).
    pub fn random(gpu: &Gpu, c: &FluxConfig, dtype: DType, seed: u64) -> Result<FluxWeights> {
        c.validate()?;
        let mut m = Maker { gpu, dtype, rng: Rng::new(seed) };
        let (h, mlp, hd) = (c.hidden(), c.mlp_hidden, c.head_dim);
        let time_text_embed = TimeTextEmbed {
            timestep: m.embedder(TIME_DIM, h)?,
            guidance: if c.guidance { Some(m.embedder(TIME_DIM, h)?) } else { None },
            text: m.embedder(c.pooled_dim, h)?,
        };
        let double = DoubleBlock {
            img_mod: m.linear(6 * h, h)?,
            txt_mod: m.linear(6 * h, h)?,
            img_qkv: m.linear(3 * h, h)?,
            txt_qkv: m.linear(3 * h, h)?,
            img_norm_q: m.ones(hd)?,
            img_norm_k: m.ones(hd)?,
            txt_norm_q: m.ones(hd)?,
            txt_norm_k: m.ones(hd)?,
            img_proj: m.linear(h, h)?,
            txt_proj: m.linear(h, h)?,
            img_mlp_0: m.linear(mlp, h)?,
            img_mlp_2: m.linear(h, mlp)?,
            txt_mlp_0: m.linear(mlp, h)?,
            txt_mlp_2: m.linear(h, mlp)?,
        };
        let single = SingleBlock {
            modulation: m.linear(3 * h, h)?,
            linear1: m.linear(3 * h + mlp, h)?,
            norm_q: m.ones(hd)?,
            norm_k: m.ones(hd)?,
            linear2: m.linear(h, h + mlp)?,
        };
        Ok(FluxWeights {
            x_embedder: m.linear(h, c.in_channels)?,
            context_embedder: m.linear(h, c.context_dim)?,
            time_text_embed,
            transformer_blocks: vec![double; c.double_blocks],
            single_transformer_blocks: vec![single; c.single_blocks],
            norm_out: NormOut { linear: m.linear(2 * h, h)?, shift_at: h, scale_at: 0 },
            proj_out: m.linear(c.out_channels, h)?,
        })
    }
}
