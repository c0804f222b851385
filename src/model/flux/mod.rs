//! The FLUX.1 transformer (BFL `Flux`, src/flux/model.py @ 802fb47; diffusers `FluxTransformer2DModel`,
//! src/diffusers/models/transformers/transformer_flux.py @ 58eb52c): config, the key tree (every weight's
//! BFL and diffusers names, written once), weights, blocks and the whole forward pass, batch 1, f32
//! activations.

pub mod blocks;
pub mod config;
pub mod lora;
pub mod model;
pub mod tree;
pub mod weights;

pub use config::{FluxConfig, KeyScheme};
pub use model::{timestep_embedding, FluxHead, FluxInputs, FluxModel};
pub use tree::{DoubleBlock, FluxTree, LinearKey, ScaleKey, SingleBlock};
pub use weights::FluxWeights;
pub mod random;
