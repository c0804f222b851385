//! Layers every model shares.

use crate::error::Result;
use crate::gpu::{Batch, Gpu, Tensor};
use crate::kernels::elementwise::Activation;
use crate::kernels::matmul::{matmul, Epilogue, LoraStack, Precision};

/// `y = x·Wᵀ + b`: `w` `[N, K]` in any weight format, `b` F32 `[N]`; plus `lora`, the run-time
/// LoRA adapters on this weight (`lora::LoraHost::set_loras`), never merged into `w` (merging,
/// `LoraHost::merge_loras`, replaces `w`); `precision`, the arithmetic of its matmul tiles (F32
/// unless the model asks for F16, e.g. `FluxModel::set_precision`).
#[derive(Clone)]
pub struct Linear {
    pub w: Tensor,
    pub b: Tensor,
    pub lora: Option<LoraStack>,
    pub precision: Precision,
}

impl Linear {
    /// A plain Linear: no LoRA, F32 tiles.
    pub fn new(w: Tensor, b: Tensor) -> Linear {
        Linear { w, b, lora: None, precision: Precision::F32 }
    }

    /// `x·Wᵀ + b` (plus its LoRA stack), then `act` if given, in the Linear's tile precision.
    pub fn forward(&self, gpu: &Gpu, b: &mut Batch, x: &Tensor, act: Option<Activation>) -> Result<Tensor> {
        let epilogue = Epilogue {
            bias: Some(&self.b),
            lora: self.lora.as_ref(),
            act,
            precision: self.precision,
            ..Default::default()
        };
        matmul(gpu, b, x, &self.w, &epilogue)
    }
}
