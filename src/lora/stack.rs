//! Model-independent LoRA planning (scale `alpha/rank`, split q/k/v onto fused weights: diffusers
//! `_convert_kohya_flux_lora_to_diffusers`, src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c), shared
//! by the FLUX transformer (`apply`, `merge`) and the CLIP text encoder (`clip`): the adapters' modules are
//! grouped by the
//! Linear they change (checked against the model's shapes), and each group becomes one slice of
//! that Linear's `LoraStack` (run time) or one term of its merged delta (`merge`).

use std::collections::{BTreeMap, HashMap};

use super::parse::{LoraAdapter, LoraModule};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::matmul::{AdapterSlice, LoraStack, MAX_ADAPTERS};

impl Clone for LoraStack {
    /// Shares the GPU tensors (like `Tensor::clone`); the scales are copied.
    fn clone(&self) -> LoraStack {
        LoraStack { a: self.a.clone(), b: self.b.clone(), adapters: self.adapters.clone() }
    }
}

/// What `set_loras` (FLUX transformer or CLIP text encoder) or `merge_loras` (`LoraHost`) applied.
#[derive(Debug, Clone)]
pub struct LoraApplied {
    /// One per adapter, in the order given.
    pub adapters: Vec<super::parse::LoraReport>,
    /// Linears that now carry a LoRA stack (or, merged, a changed weight).
    pub weights: usize,
    /// Their names (BFL names for the transformer, HF names for CLIP), sorted.
    pub layers: Vec<String>,
    /// Slices over all stacks (a module of a split-projection LoRA is one slice).
    pub slices: usize,
}

/// One module of one adapter on one weight.
pub(crate) struct Piece<'a> {
    pub adapter: usize,
    pub m: &'a LoraModule,
    pub strength: f32,
    /// The module's rows are in the other final-layer half order than the loaded base (diffusers
    /// `swap_scale_shift`, src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c).
    pub swap: bool,
}

/// Pieces applied as one stack slice: one piece with its own `alpha/r`, or (when a weight would
/// need more than `MAX_ADAPTERS` slices) all of one adapter's pieces as one block-diagonal slice
/// spanning them, each block pre-scaled by its `alpha/r` (the `alpha / rank` of diffusers'
/// `_convert_kohya_flux_lora_to_diffusers`, src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c).
pub(crate) struct Group<'a> {
    pub pieces: Vec<Piece<'a>>,
}

impl Group<'_> {
    pub fn slice(&self) -> AdapterSlice {
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
    pub fn factors(&self) -> (Vec<f32>, Vec<f32>) {
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

/// Groups per Linear name.
pub(crate) type Plan<'a> = BTreeMap<String, Vec<Group<'a>>>;

/// Groups every module (`modules(adapter)`: the transformer's or CLIP's part) by the Linear it
/// changes, checked against `shapes` (name → `[n, k]`); `swap(module)` says whether its rows are
/// in the other final-layer half order. Errors: a non-finite strength, a module the model does
/// not have (`Error::Lora`), more than `MAX_ADAPTERS` slices on one weight.
pub(crate) fn plan<'a>(
    adapters: &[(&'a LoraAdapter, f32)],
    modules: impl Fn(&'a LoraAdapter) -> &'a [LoraModule],
    shapes: &HashMap<String, (usize, usize)>,
    swap: impl Fn(&LoraModule) -> bool,
) -> Result<Plan<'a>> {
    let mut pieces: BTreeMap<String, Vec<Piece<'a>>> = BTreeMap::new();
    for (i, (ad, strength)) in adapters.iter().enumerate() {
        if !strength.is_finite() {
            return Err(Error::InvalidArgument(format!("LoRA `{}`: scale {strength} is not finite", ad.report.file)));
        }
        for m in modules(ad) {
            let t = &m.target;
            let fits = shapes.get(&t.bfl).is_some_and(|&(n, k)| {
                k == t.k && t.n0 + t.len <= n && m.a.len() == m.rank * k && m.b.len() == t.len * m.rank
            });
            if !fits {
                let why = format!(
                    "targets `{}` rows {}..{} × {} which this model does not have (parsed for another config?)",
                    t.bfl,
                    t.n0,
                    t.n0 + t.len,
                    t.k
                );
                return Err(Error::Lora { file: ad.report.file.clone(), key: m.key.clone(), why });
            }
            pieces.entry(t.bfl.clone()).or_default().push(Piece { adapter: i, m, strength: *strength, swap: swap(m) });
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
            return Err(Error::LimitExceeded {
                what: format!("LoRA adapters on `{name}`"),
                needed: groups.len() as u64,
                available: MAX_ADAPTERS as u64,
            });
        }
        plan.insert(name, groups);
    }
    Ok(plan)
}

/// Uploads one `LoraStack` per planned Linear and installs them into `slots` (every LoRA slot of
/// the model under its name; slots without a plan entry are cleared). Nothing is installed when an
/// upload fails.
pub(crate) fn install(
    gpu: &Gpu,
    adapters: &[(&LoraAdapter, f32)],
    plan: &Plan,
    shapes: &HashMap<String, (usize, usize)>,
    slots: Vec<(String, &mut Option<LoraStack>)>,
) -> Result<LoraApplied> {
    let mut stacks: HashMap<String, LoraStack> = HashMap::new();
    let mut slices = 0;
    for (name, groups) in plan {
        let parts: Vec<(Vec<f32>, Vec<f32>, AdapterSlice)> = groups
            .iter()
            .map(|g| {
                let (a, b) = g.factors();
                (a, b, g.slice())
            })
            .collect();
        let refs: Vec<(&[f32], &[f32], AdapterSlice)> =
            parts.iter().map(|(a, b, s)| (a.as_slice(), b.as_slice(), *s)).collect();
        slices += refs.len();
        let k = shapes.get(name).map_or(0, |s| s.1);
        stacks.insert(name.clone(), LoraStack::new(gpu, k, &refs)?);
    }
    let layers: Vec<String> = plan.keys().cloned().collect();
    for (name, slot) in slots {
        *slot = stacks.remove(&name);
    }
    Ok(LoraApplied {
        adapters: adapters.iter().map(|(a, _)| a.report.clone()).collect(),
        weights: layers.len(),
        layers,
        slices,
    })
}

/// New scales for the stacks in `slots` from `plan` (same adapters, same order as installed):
/// nothing is uploaded. On error nothing changes.
pub(crate) fn rescale(plan: &Plan, slots: Vec<(String, &mut Option<LoraStack>)>) -> Result<()> {
    let mut updates = Vec::new();
    for (name, slot) in slots {
        let want: Vec<AdapterSlice> = plan.get(&name).map(|g| g.iter().map(Group::slice).collect()).unwrap_or_default();
        let have = slot.as_ref().map(|s| s.adapters.clone()).unwrap_or_default();
        let same = want.len() == have.len()
            && want.iter().zip(&have).all(|(a, b)| (a.n0, a.len, a.rank) == (b.n0, b.len, b.rank));
        if !same {
            return Err(Error::InvalidArgument(format!(
                "set_lora_scales: `{name}` carries other adapters than given; call set_loras"
            )));
        }
        updates.push((slot, want));
    }
    for (slot, want) in updates {
        if let Some(stack) = slot {
            for (i, s) in want.iter().enumerate() {
                stack.set_scale(i, s.scale);
            }
        }
    }
    Ok(())
}
