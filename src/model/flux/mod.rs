//! The FLUX.1 transformer (FLUX_REFERENCE.md §1): config, weights (diffusers or BFL names),
//! blocks and the whole forward pass, batch 1, f32 activations.

pub mod blocks;
pub mod config;
pub mod model;
pub mod weights;

pub use config::{FluxConfig, KeyScheme};
pub use model::{timestep_embedding, FluxHead, FluxInputs, FluxModel};
pub use weights::{DoubleBlock, FluxWeights, SingleBlock};
pub mod random;
