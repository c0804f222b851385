//! The CLIP-L text tower (FLUX_REFERENCE.md §5.2): config, weights (HF names) and the forward
//! pass with the pooled output, batch 1, f32 activations.

pub mod config;
pub mod model;
pub mod weights;

pub use config::ClipConfig;
pub use model::{pooled_position, ClipOutput, ClipTextEncoder};
pub use weights::ClipWeights;
