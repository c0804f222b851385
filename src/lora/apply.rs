//! Run-time LoRA on the FLUX transformer (FLUX_REFERENCE.md §6.1, §6.3): every Linear some
//! adapter touches gets one `LoraStack` (all `A`s stacked, all `B`s concatenated, one slice per
//! module) that its matmul applies as `y += Σ sᵢ (x·Aᵢᵀ)·Bᵢᵀ`. The base weights are never
//! changed, so adapters can be swapped, removed or rescaled without reloading the model.

use std::collections::{BTreeMap, HashMap};

use super::parse::{LoraAdapter, LoraModule, LoraReport};
use super::targets::bfl_linears;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::matmul::{AdapterSlice, LoraStack, MAX_ADAPTERS};
use crate::model::flux::weights::{FluxWeights, Linear};
use crate::model::flux::FluxModel;

impl Clone for LoraStack {
    /// Shares the GPU tensors (like `Tensor::clone`); the scales are copied.
    fn clone(&self) -> LoraStack {
        LoraStack { a: self.a.clone(), b: self.b.clone(), adapters: self.adapters.clone() }
    }
}

/// What [`FluxModel::set_loras`] applied.
#[derive(Debug, Clone)]
pub struct LoraApplied {
    /// One per adapter, in the order given.
    pub adapters: Vec<LoraReport>,
    /// Linears that now carry a LoRA stack.
    pub weights: usize,
    /// Slices over all stacks (a module of a split-projection LoRA is one slice).
    pub slices: usize,
}

/// One module of one adapter on one weight.
struct Piece<'a> {
    adapter: usize,
    m: &'a LoraModule,
    strength: f32,
    /// The module's rows are in the other final-layer half order than the loaded base (§6.3).
    swap: bool,
}

/// Pieces applied as one stack slice: one piece with its own `alpha/r`, or (when a weight would
/// need more than `MAX_ADAPTERS` slices) all of one adapter's pieces as one block-diagonal slice
/// spanning them, each block pre-scaled by its `alpha/r` (§6.3).
struct Group<'a> {
    pieces: Vec<Piece<'a>>,
}

impl Group<'_> {
    fn slice(&self) -> AdapterSlice {
        let Some(p0) = self.pieces.first() else {
            return AdapterSlice { n0: 0, len: 0, rank: 0, scale: 0.0 };
        };
        if self.pieces.len() == 1 {
            let t = &p0.m.target;
            return AdapterSlice { n0: t.n0, len: t.len, rank: p0.m.rank, scale: p0.strength * p0.m.scale() };
        }
        let n0 = self.pieces.iter().map(|p| p.m.target.n0).min().unwrap_or(0);
        let end = self.pieces.iter().map(|p| p.m.target.n0 + p.m.target.len).max().unwrap_or(0);
        AdapterSlice { n0, len: end - n0, rank: self.pieces.iter().map(|p| p.m.rank).sum(), scale: p0.strength }
    }

    /// `A` `[rank, k]` and `B` `[len, rank]` of [`slice`](Self::slice).
    fn factors(&self) -> (Vec<f32>, Vec<f32>) {
        let s = self.slice();
        let a: Vec<f32> = self.pieces.iter().flat_map(|p| p.m.a.iter().copied()).collect();
        let mut b = vec![0.0; s.len * s.rank];
        let mut col = 0;
        for p in &self.pieces {
            let (r, len) = (p.m.rank, p.m.target.len);
            let pre = if self.pieces.len() == 1 { 1.0 } else { p.m.scale() };
            for row in 0..len {
                // Final-layer halves: row i of the module is row (i + len/2) mod len of ours.
                let src = if p.swap { (row + len / 2) % len } else { row };
                let dst = p.m.target.n0 - s.n0 + row;
                for j in 0..r {
                    b[dst * s.rank + col + j] = pre * p.m.b[src * r + j];
                }
            }
            col += r;
        }
        (a, b)
    }
}

fn lora_err(file: &str, key: &str, why: String) -> Error {
    Error::Lora { file: file.into(), key: key.into(), why }
}

/// Every Linear of the weights under its BFL name (the names of `targets::bfl_linears`).
fn linears_mut(w: &mut FluxWeights) -> Vec<(String, &mut Linear)> {
    let mut v: Vec<(String, &mut Linear)> = vec![("img_in".into(), &mut w.x_embedder), ("txt_in".into(), &mut w.context_embedder)];
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
        for (n, l) in [("modulation.lin", &mut s.modulation), ("linear1", &mut s.linear1), ("linear2", &mut s.linear2)] {
            v.push((format!("{b}{n}"), l));
        }
    }
    v.push(("final_layer.adaLN_modulation.1".into(), &mut w.norm_out.linear));
    v.push(("final_layer.linear".into(), &mut w.proj_out));
    v
}

impl FluxModel {
    /// Groups every adapter module by the weight it changes, checked against this model.
    fn lora_plan<'a>(&self, adapters: &[(&'a LoraAdapter, f32)]) -> Result<BTreeMap<String, Vec<Group<'a>>>> {
        let shapes: HashMap<String, (usize, usize)> = bfl_linears(&self.config).into_iter().map(|(n, r, k)| (n, (r, k))).collect();
        // The loaded final layer keeps its checkpoint's half order (diffusers: scale first).
        let base_diffusers_halves = self.weights.norm_out.shift_at != 0;
        let mut pieces: BTreeMap<String, Vec<Piece<'a>>> = BTreeMap::new();
        for (i, (ad, strength)) in adapters.iter().enumerate() {
            if !strength.is_finite() {
                return Err(Error::InvalidArgument(format!("LoRA `{}`: scale {strength} is not finite", ad.report.file)));
            }
            for m in &ad.modules {
                let t = &m.target;
                let fits = shapes.get(&t.bfl).is_some_and(|&(n, k)| k == t.k && t.n0 + t.len <= n && m.a.len() == m.rank * k && m.b.len() == t.len * m.rank);
                if !fits {
                    let why = format!("targets `{}` rows {}..{} × {} which this model does not have (parsed for another config?)", t.bfl, t.n0, t.n0 + t.len, t.k);
                    return Err(lora_err(&ad.report.file, &m.key, why));
                }
                let swap = t.bfl == "final_layer.adaLN_modulation.1" && t.diffusers_halves != base_diffusers_halves;
                pieces.entry(t.bfl.clone()).or_default().push(Piece { adapter: i, m, strength: *strength, swap });
            }
        }
        let mut plan = BTreeMap::new();
        for (name, ps) in pieces {
            let groups: Vec<Group> = if ps.len() <= MAX_ADAPTERS {
                ps.into_iter().map(|p| Group { pieces: vec![p] }).collect()
            } else {
                let mut by_adapter: BTreeMap<usize, Vec<Piece>> = BTreeMap::new();
                for p in ps {
                    by_adapter.entry(p.adapter).or_default().push(p);
                }
                by_adapter.into_values().map(|pieces| Group { pieces }).collect()
            };
            if groups.len() > MAX_ADAPTERS {
                return Err(Error::LimitExceeded { what: format!("LoRA adapters on `{name}`"), needed: groups.len() as u64, available: MAX_ADAPTERS as u64 });
            }
            plan.insert(name, groups);
        }
        Ok(plan)
    }

    /// Applies `adapters` (each with its strength; 1.0 = as trained) at run time, replacing any
    /// earlier set. On error nothing changes. The base weights are never modified.
    pub fn set_loras(&mut self, gpu: &Gpu, adapters: &[(&LoraAdapter, f32)]) -> Result<LoraApplied> {
        let plan = self.lora_plan(adapters)?;
        let k_of: HashMap<String, usize> = bfl_linears(&self.config).into_iter().map(|(n, _, k)| (n, k)).collect();
        let mut stacks: HashMap<String, LoraStack> = HashMap::new();
        let mut slices = 0;
        for (name, groups) in &plan {
            let parts: Vec<(Vec<f32>, Vec<f32>, AdapterSlice)> = groups.iter().map(|g| {
                let (a, b) = g.factors();
                (a, b, g.slice())
            }).collect();
            let refs: Vec<(&[f32], &[f32], AdapterSlice)> = parts.iter().map(|(a, b, s)| (a.as_slice(), b.as_slice(), *s)).collect();
            slices += refs.len();
            stacks.insert(name.clone(), LoraStack::new(gpu, k_of.get(name).copied().unwrap_or(0), &refs)?);
        }
        let weights = stacks.len();
        for (name, l) in linears_mut(&mut self.weights) {
            l.lora = stacks.remove(&name);
        }
        Ok(LoraApplied { adapters: adapters.iter().map(|(a, _)| a.report.clone()).collect(), weights, slices })
    }

    /// New strengths for the adapters of the last [`set_loras`](Self::set_loras) (same adapters,
    /// same order): only the scales change, nothing is uploaded. On error nothing changes.
    pub fn set_lora_scales(&mut self, adapters: &[(&LoraAdapter, f32)]) -> Result<()> {
        let plan = self.lora_plan(adapters)?;
        let mut updates = Vec::new();
        for (name, l) in linears_mut(&mut self.weights) {
            let want: Vec<AdapterSlice> = plan.get(&name).map(|g| g.iter().map(Group::slice).collect()).unwrap_or_default();
            let have = l.lora.as_ref().map(|s| s.adapters.clone()).unwrap_or_default();
            let same = want.len() == have.len() && want.iter().zip(&have).all(|(a, b)| (a.n0, a.len, a.rank) == (b.n0, b.len, b.rank));
            if !same {
                return Err(Error::InvalidArgument(format!("set_lora_scales: `{name}` carries other adapters than given; call set_loras")));
            }
            updates.push((l, want));
        }
        for (l, want) in updates {
            if let Some(stack) = &mut l.lora {
                for (i, s) in want.iter().enumerate() {
                    stack.set_scale(i, s.scale);
                }
            }
        }
        Ok(())
    }

    /// Removes every LoRA (the model computes the base output again).
    pub fn clear_loras(&mut self) {
        for (_, l) in linears_mut(&mut self.weights) {
            l.lora = None;
        }
    }
}
