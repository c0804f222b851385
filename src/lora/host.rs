//! LoRA behaviour, written once for every model that takes adapters: a model says which of its
//! Linears modules may target and under which names (`LoraHost`), and gets run-time application
//! (`set_loras`: every Linear some adapter touches gets one `LoraStack`, all `A`s stacked, all `B`s
//! concatenated, one slice per module, applied by its matmul as `y += Σ sᵢ (x·Aᵢᵀ)·Bᵢᵀ`; the base
//! weights are never changed, so adapters can be swapped, removed or rescaled without reloading),
//! rescaling, removal, and merging into the base weights (`merge.rs`). The FLUX transformer
//! (src/model/flux/lora.rs) and the CLIP text encoder (src/model/clip/lora.rs) implement it.

use std::collections::HashMap;

use super::parse::{LoraAdapter, LoraModule};
use super::stack::{install, plan, rescale, LoraApplied, Plan};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::matmul::LoraStack;
use crate::model::layers::Linear;

/// A model whose Linears take LoRA adapters.
pub trait LoraHost {
    /// The modules of `adapter` meant for this model (the transformer's or the text encoder's).
    fn modules<'a>(&self, adapter: &'a LoraAdapter) -> &'a [LoraModule];

    /// Every Linear a module may target, `[n, k]`, under the name of the modules' targets
    /// (`Target::bfl`).
    fn lora_shapes(&self) -> HashMap<String, (usize, usize)>;

    /// The same Linears, under the same names.
    fn lora_linears(&mut self) -> Vec<(String, &mut Linear)>;

    /// Whether `m`'s rows are in the other half order than this model's weight (FLUX's final
    /// layer: diffusers `swap_scale_shift`).
    fn swapped(&self, _m: &LoraModule) -> bool {
        false
    }

    /// Applies `adapters` (each with its strength; 1.0 = as trained) at run time, replacing any
    /// earlier set; adapters with no module for this model add nothing. On error (a module of
    /// another config: `Error::Lora`; too many adapters on one weight) nothing changes.
    fn set_loras(&mut self, gpu: &Gpu, adapters: &[(&LoraAdapter, f32)]) -> Result<LoraApplied> {
        let plan = plan_of(self, adapters)?;
        let shapes = self.lora_shapes();
        install(gpu, adapters, &plan, &shapes, slots(self))
    }

    /// New strengths for the adapters of the last [`set_loras`](Self::set_loras) (same adapters,
    /// same order): only the scales change, nothing is uploaded. On error nothing changes.
    fn set_lora_scales(&mut self, adapters: &[(&LoraAdapter, f32)]) -> Result<()> {
        let plan = plan_of(self, adapters)?;
        rescale(&plan, slots(self))
    }

    /// Removes every run-time LoRA (the model computes the base output again; merged adapters
    /// stay).
    fn clear_loras(&mut self) {
        for (_, slot) in slots(self) {
            *slot = None;
        }
    }

    /// Adds every module of `adapters` (each with its strength) into the base weights
    /// (`W += s·(α/r)·B·A`): later forward passes need no LoRA epilogue; run-time LoRAs stay on
    /// top. Errors, with nothing changed: a targeted weight that is not F32 or F16
    /// (`Error::UnsupportedFormat`: merging would re-quantize it; use `set_loras`), the plan's
    /// errors. A GPU error midway undoes the weights merged so far.
    fn merge_loras(&mut self, gpu: &Gpu, adapters: &[(&LoraAdapter, f32)]) -> Result<LoraApplied> {
        let plan = plan_of(self, adapters)?;
        super::merge::merge_signed(gpu, &plan, adapters, self.lora_linears(), 1.0)
    }

    /// Subtracts what [`merge_loras`](Self::merge_loras) with the same `adapters` and strengths
    /// added. The result equals the original weights up to one rounding of each changed value
    /// (f32: ~1e-7 relative; f16: one ulp); reload the model for bit-exact weights.
    fn unmerge_loras(&mut self, gpu: &Gpu, adapters: &[(&LoraAdapter, f32)]) -> Result<LoraApplied> {
        let plan = plan_of(self, adapters)?;
        super::merge::merge_signed(gpu, &plan, adapters, self.lora_linears(), -1.0)
    }
}

/// Every module of `adapters` grouped by the Linear it changes, checked against `host`.
fn plan_of<'a, H: LoraHost + ?Sized>(host: &H, adapters: &[(&'a LoraAdapter, f32)]) -> Result<Plan<'a>> {
    plan(adapters, |a| host.modules(a), &host.lora_shapes(), |m| host.swapped(m))
}

/// Every Linear's run-time LoRA slot under its name.
fn slots<H: LoraHost + ?Sized>(host: &mut H) -> Vec<(String, &mut Option<LoraStack>)> {
    host.lora_linears().into_iter().map(|(n, l)| (n, &mut l.lora)).collect()
}
