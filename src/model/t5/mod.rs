//! The T5 v1.1 encoder (transformers `T5EncoderModel`, src/transformers/models/t5/modeling_t5.py @ 6b8b757):
//! config, weights (HF names) and the forward pass,
//! batch 1, f32 activations and residual stream.

pub mod config;
pub mod model;
pub mod weights;

pub use config::T5Config;
pub use model::{relative_position_bias, relative_position_bucket, T5Encoder};
pub use weights::{T5Keys, T5Weights};
