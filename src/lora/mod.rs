//! LoRA adapters for the FLUX transformer and the CLIP text encoder (as diffusers' `FluxLoraLoaderMixin`
//! loads them, src/diffusers/loaders/lora_pipeline.py @ 58eb52c): parsed from safetensors in the
//! diffusers/PEFT, kohya, BFL-native and XLabs key formats
//! (`parse`), mapped onto our fused BFL weights with row slices (`targets`) or onto CLIP's Linears
//! (`clip`), grouped per weight (`stack`), and applied at run time through the LoRA-augmented
//! matmul without touching the base weights, or merged into F32/F16 weights (`merge`), by any
//! model that is a [`LoraHost`] (`host`: the FLUX transformer and the CLIP text encoder).

pub mod clip;
pub mod host;
pub mod merge;
pub mod parse;
pub mod random;
pub(crate) mod stack;
pub mod targets;

pub use host::LoraHost;
pub use parse::{LoraAdapter, LoraFormat, LoraModule, LoraReport};
pub use stack::LoraApplied;
