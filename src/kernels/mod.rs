//! One typed wrapper per shader file (same stem as `shaders/<name>.wgsl`):
//! shape and format checks, then dispatch into a [`Batch`]. Each wrapper lists
//! the override variants it uses so the naga test can validate all of them.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, Gpu, ShaderSpec, Tensor};

pub mod attention;
pub mod conv2d;
pub mod copy;
pub mod elementwise;
pub mod embedding;
pub mod matmul;
mod matmul_chunks;
pub mod matmul_coop;
pub mod norm;
pub mod pack;
pub mod quantize;
pub mod reduce;
pub mod rope;
pub mod softmax;
pub mod upsample;

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

/// The workgroup reductions prepended to kernels that reduce rows per workgroup (their contract is
/// in the files): through workgroup memory on any adapter, or through subgroup operations.
pub const PRELUDE_REDUCE: &str = include_str!("../../shaders/prelude_reduce.wgsl");
pub const PRELUDE_REDUCE_SG: &str = include_str!("../../shaders/prelude_reduce_sg.wgsl");
/// `wg_sum` / `wg_max`, on top of either prelude's `wg_reduce`.
pub const PRELUDE_REDUCE_API: &str = include_str!("../../shaders/prelude_reduce_api.wgsl");

/// One kernel source as two programs: after `prelude_reduce.wgsl` and after
/// `prelude_reduce_sg.wgsl` (each followed by `prelude_reduce_api.wgsl`). Built with [`reducing!`].
pub struct Reducing {
    pub workgroup: ShaderSpec,
    pub subgroup: ShaderSpec,
}

impl Reducing {
    /// The program for this device: subgroup reductions where it has subgroups (one barrier pair
    /// per reduction instead of a log2(WG)-step tree). `GpuOptions::allow_subgroups = false`
    /// gives the workgroup-memory program, which the tests and the self-test run side by side.
    pub fn pick(&'static self, gpu: &Gpu) -> &'static ShaderSpec {
        if gpu.features().subgroups {
            &self.subgroup
        } else {
            &self.workgroup
        }
    }

    /// Both programs with the same variants, for [`all_shaders`].
    fn both(&'static self, variants: Vec<Variant>) -> [(&'static ShaderSpec, Vec<Variant>); 2] {
        [(&self.workgroup, variants.clone()), (&self.subgroup, variants)]
    }
}

/// `reducing!("norm", [ACT, NORM])`: the [`Reducing`] pair of programs named `norm` and `norm_sg`.
macro_rules! reducing {
    ($name:literal, [$($src:expr),+ $(,)?]) => {
        $crate::kernels::Reducing {
            workgroup: $crate::gpu::ShaderSpec {
                name: $name,
                sources: &[$crate::kernels::PRELUDE_REDUCE, $crate::kernels::PRELUDE_REDUCE_API, $($src),+],
                needs_f16: false,
                needs_subgroups: false,
            },
            subgroup: $crate::gpu::ShaderSpec {
                name: concat!($name, "_sg"),
                sources: &[$crate::kernels::PRELUDE_REDUCE_SG, $crate::kernels::PRELUDE_REDUCE_API, $($src),+],
                needs_f16: false,
                needs_subgroups: true,
            },
        }
    };
}
pub(crate) use reducing;

/// The kernel paths a model at `precision` runs on this device, as the page's status line and
/// adapter table name them: e.g. "f32 tiles, subgroup reductions".
pub fn describe_paths(gpu: &Gpu, precision: matmul::Precision) -> String {
    let f = gpu.features();
    let mut parts = vec![match precision {
        matmul::Precision::F16 => "f16 tiles".to_string(),
        matmul::Precision::F32 => "f32 tiles".to_string(),
    }];
    if let Some(c) = f.cooperative_matrix {
        parts.push(format!("cooperative matrices {}×{}×{}", c.m, c.n, c.k));
    }
    parts.push(if f.subgroups { "subgroup reductions" } else { "workgroup-memory reductions" }.to_string());
    parts.join(", ")
}

/// Every shader program the engine can build, with every variant it uses.
/// `tests/shaders_validate.rs` validates all of them with naga, no GPU needed.
pub fn all_shaders() -> Vec<(&'static ShaderSpec, Vec<Variant>)> {
    let mut v = vec![
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
        (&quantize::SHADER, quantize::variants()),
    ];
    v.extend(softmax::SHADERS.both(softmax::variants()));
    v.extend(norm::SHADERS.both(norm::variants()));
    v.extend(rope::SHADERS.both(rope::variants()));
    v.extend(reduce::SHADERS.both(reduce::variants()));
    v
}

/// Workgroup size (from the device limits) and grid for `n` one-per-invocation items.
pub(crate) fn launch_1d(gpu: &Gpu, n: usize, preferred_wg: u32) -> (u32, [u32; 3]) {
    let wg = gpu.workgroup_size(preferred_wg);
    let groups = (n as u64).div_ceil(wg as u64).min(u32::MAX as u64) as u32;
    (wg, grid_1d(groups, gpu.info().max_workgroups_per_dim))
}

pub(crate) fn expect_f32(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() != crate::gpu::DType::F32 {
        return Err(Error::UnsupportedFormat {
            op,
            format: t.dtype().to_string(),
            why: "this kernel takes F32 tensors".into(),
        });
    }
    Ok(())
}

pub(crate) fn shape_err(op: &'static str, expected: impl Into<String>, got: impl std::fmt::Debug) -> Error {
    Error::ShapeMismatch { op, expected: expected.into(), got: format!("{got:?}") }
}
