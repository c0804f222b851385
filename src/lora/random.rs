//! Random adapters for benchmarks (`iclora bench flux-step --loras N --rank R`): the layout of
//! IC-LoRA's released adapters (ai-toolkit, diffusers names), i.e. one rank-`r` module on every
//! attention and MLP Linear of the blocks, q/k/v separately (diffusers names,
//! src/diffusers/models/transformers/transformer_flux.py @ 58eb52c).

use super::parse::{LoraAdapter, LoraFormat, LoraModule, LoraReport};
use super::targets::Targets;
use crate::error::{Error, Result};
use crate::model::flux::{FluxConfig, FluxTree, LinearKey};
use crate::reference::random::Rng;

/// The diffusers modules an ai-toolkit FLUX LoRA trains: every part of the blocks' attention and
/// MLP Linears (q, k and v separately), not their modulations.
fn trained_modules(c: &FluxConfig) -> Vec<String> {
    let mut keys = FluxTree::keys(c);
    let mut v: Vec<&LinearKey> = Vec::new();
    for d in &mut keys.double_blocks {
        let [q0, p0, a0, b0, _mod0, q1, p1, a1, b1, _mod1] = d.linears_mut();
        v.extend([&*q0, p0, a0, b0, q1, p1, a1, b1]);
    }
    for s in &mut keys.single_blocks {
        let [l1, l2, _modulation] = s.linears_mut();
        v.extend([&*l1, l2]);
    }
    v.into_iter().flat_map(|k| k.diffusers.iter().map(|(name, _)| name.clone())).collect()
}

impl LoraAdapter {
    /// A random rank-`rank` adapter (alpha = rank) on every attention/MLP Linear of the blocks of
    /// a model of config `c`. Values are small and finite; they only matter for timing.
    pub fn random(c: &FluxConfig, rank: usize, seed: u64) -> Result<LoraAdapter> {
        if rank == 0 {
            return Err(Error::InvalidArgument("a random LoRA needs rank >= 1".into()));
        }
        let t = Targets::new(c);
        let mut rng = Rng::new(seed);
        let names = trained_modules(c);
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
