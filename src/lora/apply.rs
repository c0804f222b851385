//! Run-time LoRA on the FLUX transformer (`alpha / rank` scaling and q/k/v slices as in diffusers'
//! `_convert_kohya_flux_lora_to_diffusers`, src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c): every
//! Linear some adapter touches gets one `LoraStack` (all `A`s stacked, all `B`s concatenated, one slice per
//! module) that its matmul applies as `y += Σ sᵢ (x·Aᵢᵀ)·Bᵢᵀ`. The base weights are never
//! changed, so adapters can be swapped, removed or rescaled without reloading the model. The
//! grouping into stacks is shared with the CLIP text encoder (`stack`, `clip`).

use std::collections::HashMap;

use super::parse::{LoraAdapter, LoraModule};
use super::stack::{install, plan, rescale, LoraApplied, Plan};
use super::targets::bfl_linears;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::matmul::LoraStack;
use crate::model::flux::weights::{FluxWeights, Linear};
use crate::model::flux::FluxModel;

/// Every Linear of the weights under its BFL name (the names of `targets::bfl_linears`).
pub(crate) fn linears_mut(w: &mut FluxWeights) -> Vec<(String, &mut Linear)> {
    let mut v: Vec<(String, &mut Linear)> =
        vec![("img_in".into(), &mut w.x_embedder), ("txt_in".into(), &mut w.context_embedder)];
    let t = &mut w.time_text_embed;
    let mut embedders = vec![("time_in", &mut t.timestep), ("vector_in", &mut t.text)];
    if let Some(g) = &mut t.guidance {
        embedders.push(("guidance_in", g));
    }
    for (n, e) in embedders {
        v.push((format!("{n}.in_layer"), &mut e.linear_1));
        v.push((format!("{n}.out_layer"), &mut e.linear_2));
    }
    for (i, d) in w.transformer_blocks.iter_mut().enumerate() {
        let b = format!("double_blocks.{i}.");
        for (n, l) in [
            ("img_mod.lin", &mut d.img_mod),
            ("txt_mod.lin", &mut d.txt_mod),
            ("img_attn.qkv", &mut d.img_qkv),
            ("txt_attn.qkv", &mut d.txt_qkv),
            ("img_attn.proj", &mut d.img_proj),
            ("txt_attn.proj", &mut d.txt_proj),
            ("img_mlp.0", &mut d.img_mlp_0),
            ("img_mlp.2", &mut d.img_mlp_2),
            ("txt_mlp.0", &mut d.txt_mlp_0),
            ("txt_mlp.2", &mut d.txt_mlp_2),
        ] {
            v.push((format!("{b}{n}"), l));
        }
    }
    for (i, s) in w.single_transformer_blocks.iter_mut().enumerate() {
        let b = format!("single_blocks.{i}.");
        for (n, l) in [("modulation.lin", &mut s.modulation), ("linear1", &mut s.linear1), ("linear2", &mut s.linear2)]
        {
            v.push((format!("{b}{n}"), l));
        }
    }
    v.push(("final_layer.adaLN_modulation.1".into(), &mut w.norm_out.linear));
    v.push(("final_layer.linear".into(), &mut w.proj_out));
    v
}

/// Every Linear's run-time LoRA slot under its BFL name.
fn lora_slots(w: &mut FluxWeights) -> Vec<(String, &mut Option<LoraStack>)> {
    linears_mut(w).into_iter().map(|(n, l)| (n, &mut l.lora)).collect()
}

impl FluxModel {
    /// Every Linear's shape `[n, k]` under its BFL name.
    pub(crate) fn lora_shapes(&self) -> HashMap<String, (usize, usize)> {
        bfl_linears(&self.config).into_iter().map(|(n, r, k)| (n, (r, k))).collect()
    }

    /// Groups every adapter module by the weight it changes, checked against this model.
    pub(crate) fn lora_plan<'a>(&self, adapters: &[(&'a LoraAdapter, f32)]) -> Result<Plan<'a>> {
        // The loaded final layer keeps its checkpoint's half order (diffusers: scale first).
        let base_diffusers_halves = self.weights.norm_out.shift_at != 0;
        let swap = |m: &LoraModule| {
            m.target.bfl == "final_layer.adaLN_modulation.1" && m.target.diffusers_halves != base_diffusers_halves
        };
        plan(adapters, |a| a.modules.as_slice(), &self.lora_shapes(), swap)
    }

    /// Applies `adapters` (each with its strength; 1.0 = as trained) at run time, replacing any
    /// earlier set. On error nothing changes. The base weights are never modified.
    pub fn set_loras(&mut self, gpu: &Gpu, adapters: &[(&LoraAdapter, f32)]) -> Result<LoraApplied> {
        let plan = self.lora_plan(adapters)?;
        let shapes = self.lora_shapes();
        install(gpu, adapters, &plan, &shapes, lora_slots(&mut self.weights))
    }

    /// New strengths for the adapters of the last [`set_loras`](Self::set_loras) (same adapters,
    /// same order): only the scales change, nothing is uploaded. On error nothing changes.
    pub fn set_lora_scales(&mut self, adapters: &[(&LoraAdapter, f32)]) -> Result<()> {
        let plan = self.lora_plan(adapters)?;
        rescale(&plan, lora_slots(&mut self.weights))
    }

    /// Removes every run-time LoRA (the model computes the base output again; merged adapters,
    /// see `merge_loras`, stay).
    pub fn clear_loras(&mut self) {
        for (_, slot) in lora_slots(&mut self.weights) {
            *slot = None;
        }
    }
}
