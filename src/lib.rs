//! iclora: In-Context LoRA for FLUX.1 on WebGPU.
//!
//! `gpu` owns wgpu; `kernels` are typed wrappers around the WGSL files in
//! `shaders/`; `reference` holds the plain-Rust versions every kernel is
//! tested against; `weights` knows file formats and the GPU layouts of
//! quantized blocks.

// In the browser wgpu's handles are neither Send nor Sync (one thread); the `Arc`s that share
// them natively across threads are then plain reference counts.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod clock;
pub mod dtype;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod limits;
pub mod lora;
pub mod model;
pub mod pipeline;
pub mod recipe;
pub mod reference;
pub mod selftest;
pub mod weights;

#[cfg(target_arch = "wasm32")]
pub mod app;

pub use error::{Error, Result};
