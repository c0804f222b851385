//! The text encoder as a LoRA host (`lora::LoraHost`): its Linears under the names
//! `lora::clip::clip_linear_name` gives CLIP LoRA keys.

use std::collections::HashMap;

use super::model::ClipTextEncoder;
use crate::lora::clip::{clip_linears, LAYER_LINEARS};
use crate::lora::{LoraAdapter, LoraHost, LoraModule};
use crate::model::layers::Linear;

impl LoraHost for ClipTextEncoder {
    fn modules<'a>(&self, adapter: &'a LoraAdapter) -> &'a [LoraModule] {
        &adapter.clip
    }

    fn lora_shapes(&self) -> HashMap<String, (usize, usize)> {
        clip_linears(&self.config).into_iter().map(|(n, r, k)| (n, (r, k))).collect()
    }

    fn lora_linears(&mut self) -> Vec<(String, &mut Linear)> {
        let mut v = Vec::new();
        for (i, l) in self.weights.layers.iter_mut().enumerate() {
            let a = &mut l.self_attn;
            // In LAYER_LINEARS' order.
            let fields = [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.out_proj, &mut l.fc1, &mut l.fc2];
            for ((name, _), lin) in LAYER_LINEARS.iter().zip(fields) {
                v.push((format!("text_model.encoder.layers.{i}.{name}"), lin));
            }
        }
        v
    }
}
