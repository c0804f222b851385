//! The only module that touches `wgpu`. Everything above it (kernels, models,
//! the app) talks to a [`Gpu`] value passed by reference: there is no global
//! device. wgpu changes its API between majors; this keeps the churn here.

mod batch;
mod bind_cache;
mod buffer;
mod context;
mod counters;
mod pipeline;
mod tensor;
#[cfg(target_arch = "wasm32")]
mod web;

pub use crate::dtype::DType;
pub use batch::{Batch, Binding};
pub use buffer::{BufferStats, GpuBuffer};
pub use context::{CoopMatrixConfig, CoopScalar, Gpu, GpuFeatures, GpuInfo, GpuOptions};
pub use counters::WorkStats;
pub use pipeline::{Overrides, ShaderSpec};
pub use tensor::Tensor;

/// Splits a 1-D workgroup count into a 2-D grid that respects the per-dimension
/// dispatch limit. Shaders recover the linear index as `wid.x + wid.y * nwg.x`.
pub fn grid_1d(workgroups: u32, max_per_dim: u32) -> [u32; 3] {
    let max = max_per_dim.max(1);
    if workgroups <= max {
        [workgroups.max(1), 1, 1]
    } else {
        let y = workgroups.div_ceil(max);
        [workgroups.div_ceil(y), y, 1]
    }
}
