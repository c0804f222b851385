//! The FLUX transformer's weights on the GPU: the tree of `tree.rs` built by a checkpoint loader
//! that reads each key in the file's scheme (diffusers or BFL names, detected).
//!
//! diffusers' split projections (`to_q`/`to_k`/`to_v`, single blocks' `proj_mlp`) are fused into
//! our layout (BFL's `qkv` / `linear1`, rows concatenated) on the GPU as they load
//! (`TensorLoader::fused_matrix`). Biases and norm scales become F32.

use super::config::{FluxConfig, KeyScheme};
use super::tree::{Build, FluxTree, LinearKey, ScaleKey};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};
pub use crate::model::layers::Linear;
use crate::weights::load::{ByteSource, LoadOptions, Pacer, Uploads, CHUNK_BYTES, PACE_BYTES};
use crate::weights::loader::{Missing, TensorLoader};
use crate::weights::tensor_info::WeightsHeader;

/// The transformer's weights on the GPU: the tree (`tree.rs`) with a Linear at each Linear key and
/// an F32 tensor at each norm scale key.
pub type FluxWeights = FluxTree<Linear, Tensor>;

/// Builds the tree from a checkpoint: each key read in the file's scheme by the checked loader.
struct Loader<'a> {
    l: TensorLoader<'a>,
    scheme: KeyScheme,
}

impl Build for Loader<'_> {
    type Linear = Linear;
    type Scale = Tensor;
    type Error = Error;

    /// `weight` `[n, k]` and `bias` `[n]` under the key's BFL name, or its diffusers parts fused.
    fn linear(&mut self, key: LinearKey) -> Result<Linear> {
        Linear::load(&mut self.l, &key.names(&self.scheme, "weight"), &key.names(&self.scheme, "bias"), key.k)
    }

    fn scale(&mut self, key: ScaleKey) -> Result<Tensor> {
        self.l.vector(&key.name(&self.scheme), key.len)
    }

    fn scale_first(&self) -> bool {
        matches!(self.scheme, KeyScheme::Diffusers { .. })
    }
}

impl FluxWeights {
    /// Loads every tensor `config` calls for from `src` (whose parsed header is `header`), in
    /// diffusers or BFL names (detected). A missing tensor is `Error::MissingTensor`, a tensor of
    /// another shape than the config implies `Error::TensorShape`, both naming the tensor.
    pub fn load(gpu: &Gpu, src: &mut dyn ByteSource, header: &WeightsHeader, c: &FluxConfig) -> Result<FluxWeights> {
        FluxWeights::load_with(gpu, src, header, c, &LoadOptions::default())
    }

    /// [`load`](Self::load) with options: `opts.convert` converts the weight matrices while they
    /// stream (e.g. BF16 → Q8_0 on the GPU), per tensor as `Convert::for_tensor` decides; biases
    /// and norm scales are F32 either way.
    pub fn load_with(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        c: &FluxConfig,
        opts: &LoadOptions,
    ) -> Result<FluxWeights> {
        let (weights, uploads) = FluxWeights::plan(gpu, src, header, c, opts)?;
        uploads.run_now(gpu, src)?;
        Ok(weights)
    }

    /// [`load_with`](Self::load_with) for async callers (the browser's worker): the matrices
    /// stream with a wait for the GPU's queue every [`PACE_BYTES`], so that a browser's staging
    /// memory stays bounded whatever the file's size.
    pub async fn load_paced(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        c: &FluxConfig,
        opts: &LoadOptions,
    ) -> Result<FluxWeights> {
        let (weights, uploads) = FluxWeights::plan(gpu, src, header, c, opts)?;
        uploads.run(gpu, src, CHUNK_BYTES, Pacer::every(PACE_BYTES)).await?;
        Ok(weights)
    }

    /// The weight tree with its matrices allocated, and the uploads that fill them.
    fn plan(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        c: &FluxConfig,
        opts: &LoadOptions,
    ) -> Result<(FluxWeights, Uploads)> {
        // A config built in code skipped `from_diffusers_json`'s caps; they bound the block lists.
        c.check_caps(&header.file)?;
        c.validate()?;
        let scheme = KeyScheme::detect(header)?;
        let l = TensorLoader::new(gpu, src, header, "FLUX weights", Missing::Tensor).converting(opts.convert);
        let mut loader = Loader { l, scheme };
        let weights = FluxTree::build(c, &mut loader)?;
        Ok((weights, loader.l.finish().0))
    }
}
