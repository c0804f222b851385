//! Random adapters for benchmarks (`iclora bench flux-step --loras N --rank R`): the layout of
//! IC-LoRA's released adapters (ai-toolkit, diffusers names), i.e. one rank-`r` module on every
//! attention and MLP Linear of the blocks, q/k/v separately (diffusers names,
//! src/diffusers/models/transformers/transformer_flux.py @ 58eb52c).

use super::parse::{LoraAdapter, LoraFormat, LoraModule, LoraReport};
use super::targets::Targets;
use crate::error::{Error, Result};
use crate::model::flux::FluxConfig;
use crate::reference::random::Rng;

/// diffusers module names (under `transformer_blocks.{i}.`) an ai-toolkit FLUX LoRA trains.
const DOUBLE: [&str; 12] = [
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
];
/// The same under `single_transformer_blocks.{i}.`.
const SINGLE: [&str; 5] = ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out"];

impl LoraAdapter {
    /// A random rank-`rank` adapter (alpha = rank) on every attention/MLP Linear of the blocks of
    /// a model of config `c`. Values are small and finite; they only matter for timing.
    pub fn random(c: &FluxConfig, rank: usize, seed: u64) -> Result<LoraAdapter> {
        if rank == 0 {
            return Err(Error::InvalidArgument("a random LoRA needs rank >= 1".into()));
        }
        let t = Targets::new(c);
        let mut rng = Rng::new(seed);
        let names =
            (0..c.double_blocks).flat_map(|i| DOUBLE.iter().map(move |m| format!("transformer_blocks.{i}.{m}"))).chain(
                (0..c.single_blocks)
                    .flat_map(|i| SINGLE.iter().map(move |m| format!("single_transformer_blocks.{i}.{m}"))),
            );
        let mut modules = Vec::new();
        let mut layers: Vec<String> = Vec::new();
        for key in names {
            let target = t
                .diffusers
                .get(&key)
                .cloned()
                .ok_or_else(|| Error::InvalidArgument(format!("random LoRA: no module `{key}` in this config")))?;
            let amp = 1.0 / (target.k as f32).sqrt();
            let a = rng.vec(rank * target.k, -amp, amp);
            let b = rng.vec(target.len * rank, -0.01, 0.01);
            if !layers.contains(&target.bfl) {
                layers.push(target.bfl.clone());
            }
            modules.push(LoraModule { key, target, rank, a, b, alpha: rank as f32 });
        }
        let report = LoraReport {
            file: format!("random-r{rank}-s{seed}"),
            formats: vec![LoraFormat::Diffusers],
            ranks: vec![rank],
            layers,
            ..Default::default()
        };
        Ok(LoraAdapter { modules, clip: Vec::new(), report })
    }
}
