//! The transformer as a LoRA host (`lora::LoraHost`): its Linears under their BFL names, paired
//! with the key tree's keys by the one visitor (`FluxTree::linears_mut`).

use std::collections::HashMap;

use super::model::FluxModel;
use super::tree::{FluxTree, FINAL_MODULATION};
use crate::lora::targets::bfl_linears;
use crate::lora::{LoraAdapter, LoraHost, LoraModule};
use crate::model::layers::Linear;

impl LoraHost for FluxModel {
    fn modules<'a>(&self, adapter: &'a LoraAdapter) -> &'a [LoraModule] {
        &adapter.modules
    }

    fn lora_shapes(&self) -> HashMap<String, (usize, usize)> {
        bfl_linears(&self.config).into_iter().map(|(n, r, k)| (n, (r, k))).collect()
    }

    fn lora_linears(&mut self) -> Vec<(String, &mut Linear)> {
        let keys = FluxTree::keys(&self.config).linear_keys();
        keys.into_iter().map(|k| k.bfl).zip(self.weights.linears_mut()).collect()
    }

    fn swapped(&self, m: &LoraModule) -> bool {
        // The loaded final layer keeps its checkpoint's half order (diffusers: scale first).
        let base_diffusers_halves = self.weights.final_layer.shift_at != 0;
        m.target.bfl == FINAL_MODULATION.0 && m.target.diffusers_halves != base_diffusers_halves
    }
}
