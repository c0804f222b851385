//! One typed wrapper per shader file (same stem as `shaders/<name>.wgsl`):
//! shape and format checks, then dispatch into a [`Batch`]. Each wrapper lists
//! the override variants it uses so the naga test can validate all of them.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, Gpu, ShaderSpec, Tensor};

pub mod elementwise;
pub mod embedding;
pub mod conv2d;
pub mod upsample;
pub mod pack;
pub mod copy;
pub mod matmul;
pub mod matmul_coop;
pub mod attention;
pub mod softmax;
pub mod norm;
pub mod rope;
pub mod quantize;
pub mod reduce;

/// One pipeline a wrapper may create: an entry point and its override values.
#[derive(Debug, Clone)]
pub struct Variant {
    pub entry: &'static str,
    pub overrides: Vec<(&'static str, f64)>,
}

impl Variant {
    pub fn new(entry: &'static str, overrides: &[(&'static str, f64)]) -> Variant {
        Variant { entry, overrides: overrides.to_vec() }
    }
}

/// Every shader program the engine can build, with every variant it uses.
/// `tests/shaders_validate.rs` validates all of them with naga, no GPU needed.
pub fn all_shaders() -> Vec<(&'static ShaderSpec, Vec<Variant>)> {
    vec![
        (&elementwise::SHADER, elementwise::variants()),
        (&embedding::SHADER, embedding::variants()),
        (&conv2d::SHADER, conv2d::variants()),
        (&upsample::SHADER, upsample::variants()),
        (&pack::SHADER, pack::variants()),
        (&copy::SHADER, copy::variants()),
        (&matmul::SHADER, matmul::variants(false)),
        (&matmul::SHADER_F16, matmul::variants(true)),
        (&matmul::SHADER_SG, matmul::variants_sg()),
        (&matmul_coop::SHADER_F16X16, matmul_coop::variants()),
        (&matmul_coop::SHADER_F32X8, matmul_coop::variants()),
        (&attention::SHADER, attention::variants()),
        (&softmax::SHADER, softmax::variants()),
        (&norm::SHADER, norm::variants()),
        (&rope::SHADER, rope::variants()),
        (&quantize::SHADER, quantize::variants()),
        (&reduce::SHADER, reduce::variants()),
    ]
}

/// Workgroup size (from the device limits) and grid for `n` one-per-invocation items.
pub(crate) fn launch_1d(gpu: &Gpu, n: usize, preferred_wg: u32) -> (u32, [u32; 3]) {
    let wg = gpu.workgroup_size(preferred_wg);
    let groups = (n as u64).div_ceil(wg as u64).min(u32::MAX as u64) as u32;
    (wg, grid_1d(groups, gpu.info().max_workgroups_per_dim))
}

pub(crate) fn expect_f32(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() != crate::gpu::DType::F32 {
        return Err(Error::UnsupportedFormat { op, format: t.dtype().to_string(), why: "this kernel takes F32 tensors".into() });
    }
    Ok(())
}

pub(crate) fn shape_err(op: &'static str, expected: impl Into<String>, got: impl std::fmt::Debug) -> Error {
    Error::ShapeMismatch { op, expected: expected.into(), got: format!("{got:?}") }
}
