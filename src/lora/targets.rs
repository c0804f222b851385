//! Where a LoRA module lands in our weights: every Linear of the FLUX transformer under its BFL
//! name (our fused layout), and the diffusers / kohya / XLabs names that map onto it with a row
//! slice, all read from the model's key tree (`model::flux::tree`; diffusers
//! `convert_flux_transformer_checkpoint_to_diffusers`, src/diffusers/loaders/single_file_utils.py
//! @ 58eb52c; the LoRA converters of src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c).

use std::collections::HashMap;

use crate::model::flux::{FluxConfig, FluxTree};

/// One weight a LoRA module can target: rows `n0 .. n0 + len` of the fused BFL Linear `bfl`
/// (`[n, k]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub bfl: String,
    pub n0: usize,
    pub len: usize,
    pub k: usize,
    /// The module's rows are in diffusers' final-layer order (scale | shift), i.e. the halves of
    /// BFL's `final_layer.adaLN_modulation.1` (shift | scale) swapped (diffusers `swap_scale_shift`,
    /// src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c).
    pub diffusers_halves: bool,
}

/// Every BFL Linear of `c` with its shape `[n, k]`, in forward order (from the key tree).
pub fn bfl_linears(c: &FluxConfig) -> Vec<(String, usize, usize)> {
    FluxTree::keys(c).linear_keys().into_iter().map(|k| (k.bfl, k.n, k.k)).collect()
}

/// Name tables for one config: module name (without prefix or suffix) → target.
pub struct Targets {
    /// BFL names (BFL-native LoRAs, and kohya after `_` → `.`).
    pub bfl: HashMap<String, Target>,
    /// kohya `lora_unet_` names (BFL path with `.` → `_`).
    pub kohya: HashMap<String, Target>,
    /// diffusers module names (diffusers/PEFT LoRAs), and their `_` forms (kohya "mixture"
    /// `lora_transformer_` keys).
    pub diffusers: HashMap<String, Target>,
    pub diffusers_underscored: HashMap<String, Target>,
    /// XLabs processor names (`double_blocks.0.processor.qkv_lora1`).
    pub xlabs: HashMap<String, Target>,
}

impl Targets {
    pub fn new(c: &FluxConfig) -> Targets {
        let (mut bfl, mut d, mut xlabs) = (HashMap::new(), Vec::new(), HashMap::new());
        for key in FluxTree::keys(c).linear_keys() {
            let whole = Target { bfl: key.bfl.clone(), n0: 0, len: key.n, k: key.k, diffusers_halves: false };
            let mut n0 = 0;
            for (name, rows) in &key.diffusers {
                let t = Target { n0, len: *rows, diffusers_halves: key.halves_swapped, ..whole.clone() };
                d.push((name.clone(), t));
                n0 += rows;
            }
            for (name, n0, len) in &key.xlabs {
                xlabs.insert(name.clone(), Target { n0: *n0, len: *len, ..whole.clone() });
            }
            bfl.insert(key.bfl, whole);
        }
        let kohya = bfl.iter().map(|(n, t): (&String, &Target)| (n.replace('.', "_"), t.clone())).collect();
        let diffusers_underscored = d.iter().map(|(n, t)| (n.replace('.', "_"), t.clone())).collect();
        Targets { bfl, kohya, diffusers: d.into_iter().collect(), diffusers_underscored, xlabs }
    }
}
