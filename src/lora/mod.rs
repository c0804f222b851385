//! LoRA adapters for the FLUX transformer (FLUX_REFERENCE.md §6): parsed from safetensors in
//! the diffusers/PEFT, kohya, BFL-native and XLabs key formats (`parse`), mapped onto our fused
//! BFL weights with row slices (`targets`), and applied at run time through the LoRA-augmented
//! matmul without touching the base weights (`apply`: `FluxModel::set_loras`).

pub mod apply;
pub mod parse;
pub mod random;
pub mod targets;

pub use apply::LoraApplied;
pub use parse::{LoraAdapter, LoraFormat, LoraModule, LoraReport};
