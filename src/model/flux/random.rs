//! Random FLUX weights of any config in one weight format, for `iclora bench flux-step`: a
//! full-size FLUX.1 step can be timed without a checkpoint. Weights are uniform in ±1/√fan_in
//! (float formats; quantized formats get random quant bits with small scales) so activations stay
//! finite; biases are 0 and norm scales 1.
//!
//! All double blocks share one block's tensors, and so do all single blocks: memory is that of one
//! block of each kind whatever the block counts (timing does not depend on the values).

use std::collections::HashMap;

use super::config::FluxConfig;
use super::tree::{Build, FluxTree, LinearKey, ScaleKey, DOUBLE_BLOCKS, SINGLE_BLOCKS};
use super::weights::{FluxWeights, Linear};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Tensor};
use crate::reference::random::{weight_bytes, Rng};
use crate::weights::repack::repack;

struct Maker<'a> {
    gpu: &'a Gpu,
    dtype: DType,
    rng: Rng,
    /// Block tensors made so far, by their name with the block index left out.
    shared: HashMap<String, Linear>,
}

/// `double_blocks.3.img_mod.lin` → `double_blocks.img_mod.lin`; `None` outside the blocks.
fn block_relative(bfl: &str) -> Option<String> {
    let (kind, rest) = bfl.split_once('.')?;
    let (_, name) = rest.split_once('.')?;
    [DOUBLE_BLOCKS.0, SINGLE_BLOCKS.0].contains(&kind).then(|| format!("{kind}.{name}"))
}

impl Maker<'_> {
    fn make(&mut self, n: usize, k: usize) -> Result<Linear> {
        let bytes = weight_bytes(&mut self.rng, self.dtype, n * k, 1.0 / (k as f32).sqrt(), 0.01);
        let w = self.gpu.upload_raw(&[n, k], self.dtype, &repack(self.dtype, &bytes)?)?;
        Ok(Linear::new(w, self.gpu.upload_f32(&[n], &vec![0.0; n])?))
    }
}

impl Build for Maker<'_> {
    type Linear = Linear;
    type Scale = Tensor;
    type Error = Error;

    fn linear(&mut self, key: LinearKey) -> Result<Linear> {
        let Some(rel) = block_relative(&key.bfl) else { return self.make(key.n, key.k) };
        if let Some(l) = self.shared.get(&rel) {
            return Ok(l.clone());
        }
        let l = self.make(key.n, key.k)?;
        self.shared.insert(rel, l.clone());
        Ok(l)
    }

    fn scale(&mut self, key: ScaleKey) -> Result<Tensor> {
        self.gpu.upload_f32(&[key.len], &vec![1.0; key.len])
    }

    fn scale_first(&self) -> bool {
        true
    }
}

impl FluxWeights {
    /// Random weights for `c` with every matrix in `dtype` (a format the matmul takes; quantized
    /// formats need every input width to be a multiple of the block size). Block matrices are
    /// shared across blocks of one kind (see the module doc).
    pub fn random(gpu: &Gpu, c: &FluxConfig, dtype: DType, seed: u64) -> Result<FluxWeights> {
        c.validate()?;
        FluxTree::build(c, &mut Maker { gpu, dtype, rng: Rng::new(seed), shared: HashMap::new() })
    }
}
