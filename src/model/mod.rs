//! Models built from the kernels: each takes its weights through `weights::loader` and runs on the
//! GPU only through `kernels` (no wgpu here).

pub mod clip;
pub mod flux;
pub mod layers;
pub mod t5;
pub mod taef1;
pub mod tokenize;
pub mod vae;
