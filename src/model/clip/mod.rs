//! The CLIP-L text tower (transformers `CLIPTextModel`,
//! src/transformers/models/clip/modeling_clip.py @ 679021a): config, weights (HF names) and the forward
//! pass with the pooled output, batch 1, f32 activations.

pub mod config;
pub mod lora;
pub mod model;
pub mod weights;

pub use config::ClipConfig;
pub use model::{pooled_position, ClipOutput, ClipTextEncoder};
pub use weights::ClipWeights;
