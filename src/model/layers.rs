//! Layers every model shares: a Linear and an embedding table, loaded with the one checked loader
//! (`weights::loader::TensorLoader`).

use crate::error::{Error, Result};
use crate::gpu::{Batch, Gpu, Tensor};
use crate::kernels::elementwise::{add, Activation};
use crate::kernels::embedding::embedding;
use crate::kernels::matmul::{matmul, Epilogue, LoraStack, Precision};
use crate::weights::loader::TensorLoader;

/// `y = x·Wᵀ + b`: `w` `[N, K]` in any weight format, `b` F32 `[N]` (none in T5); plus `lora`, the run-time
/// LoRA adapters on this weight (`lora::LoraHost::set_loras`), never merged into `w` (merging,
/// `LoraHost::merge_loras`, replaces `w`); `precision`, the arithmetic of its matmul tiles (F32
/// unless the model asks for F16, e.g. `FluxModel::set_precision`).
#[derive(Clone)]
pub struct Linear {
    pub w: Tensor,
    pub b: Option<Tensor>,
    pub lora: Option<LoraStack>,
    pub precision: Precision,
}

impl Linear {
    /// A plain Linear: no LoRA, F32 tiles.
    pub fn new(w: Tensor, b: Tensor) -> Linear {
        Linear { w, b: Some(b), lora: None, precision: Precision::F32 }
    }

    /// A Linear without bias (T5's projections), loaded as `name` `[n, k]`.
    pub fn load_unbiased(l: &mut TensorLoader, name: &str, n: usize, k: usize) -> Result<Linear> {
        Ok(Linear { w: l.matrix(name, n, k)?, b: None, lora: None, precision: Precision::F32 })
    }

    /// `weight` `[n, k]` (or `k` columns fused from split parts, each `(name, rows)`, as
    /// [`TensorLoader::fused_matrix`]) and `bias` `[n]` (the parts' biases concatenated).
    pub fn load(
        l: &mut TensorLoader,
        weights: &[(String, usize)],
        biases: &[(String, usize)],
        k: usize,
    ) -> Result<Linear> {
        Ok(Linear::new(l.fused_matrix(weights, k)?, l.concat_vector(biases)?))
    }

    /// `x·Wᵀ + b` (plus its LoRA stack), then `act` if given, in the Linear's tile precision.
    pub fn forward(&self, gpu: &Gpu, b: &mut Batch, x: &Tensor, act: Option<Activation>) -> Result<Tensor> {
        let epilogue = Epilogue {
            bias: self.b.as_ref(),
            lora: self.lora.as_ref(),
            act,
            precision: self.precision,
            ..Default::default()
        };
        matmul(gpu, b, x, &self.w, &epilogue)
    }
}

/// An embedding table held as row ranges `(first row, [n, k] tensor)`.
pub struct EmbeddingTable {
    pub rows: usize,
    pub k: usize,
    pub parts: Vec<(usize, Tensor)>,
}

impl EmbeddingTable {
    /// The table `[rows, k]` (first present of `names`) in row ranges of at most `max_bytes` each
    /// ([`TensorLoader::row_ranges`]): T5-XXL's `[32128, 4096]` is larger than one storage binding.
    pub fn load(l: &mut TensorLoader, names: &[&str], rows: usize, k: usize, max_bytes: u64) -> Result<EmbeddingTable> {
        Ok(EmbeddingTable { rows, k, parts: l.row_ranges(names, rows, k, max_bytes)? })
    }

    /// Rows `ids` as F32 `[ids.len(), k]`: one gather per range, ids outside a range read as zero
    /// rows there (the kernel's rule for out-of-range ids), and the partial results summed.
    pub fn gather(&self, gpu: &Gpu, b: &mut Batch, ids: &[u32]) -> Result<Tensor> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.rows) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the embedding table of {} rows",
                self.rows
            )));
        }
        let mut out: Option<Tensor> = None;
        for (start, t) in &self.parts {
            let (start, n) = (*start as u32, t.shape()[0] as u32);
            let local: Vec<u32> =
                ids.iter().map(|&i| if i >= start && i - start < n { i - start } else { u32::MAX }).collect();
            let ids_t = gpu.upload_u32(&[local.len()], &local)?;
            let part = embedding(gpu, b, t, &ids_t)?;
            out = Some(match out {
                None => part,
                Some(acc) => add(gpu, b, &acc, &part)?,
            });
        }
        out.ok_or_else(|| Error::InvalidArgument("empty embedding table".into()))
    }
}
