//! Wrapper for `shaders/softmax.wgsl`: numerically stable softmax over the last dim of an F32
//! tensor, one workgroup per row. Reference: `reference::softmax`.

use bytemuck::{Pod, Zeroable};

use super::{expect_f32, shape_err, Variant};
use crate::error::{Error, Result};
use crate::gpu::{grid_1d, Batch, Binding, Gpu, Tensor};

/// The kernel after the workgroup-reduction prelude of this device (see `kernels::Reducing`).
pub static SHADERS: super::Reducing = super::reducing!("softmax", [include_str!("../../shaders/softmax.wgsl")]);

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    _pad: [u32; 2],
}

pub fn variants() -> Vec<Variant> {
    vec![Variant::new("softmax_rows", &[("WG", WG as f64)])]
}

/// The workgroup-memory reduction (a tree) halves the workgroup: use the largest power of two the device allows.
fn workgroup(gpu: &Gpu) -> u32 {
    let wg = gpu.workgroup_size(WG);
    1 << (31 - wg.leading_zeros())
}

/// `softmax(x)` along the last dim; same shape as `x`.
pub fn softmax(gpu: &Gpu, batch: &mut Batch, x: &Tensor) -> Result<Tensor> {
    expect_f32("softmax", x)?;
    if x.shape().is_empty() {
        return Err(shape_err("softmax", "a tensor with at least one dim", x.shape()));
    }
    let n = x.dim_rev(0);
    let rows = if n == 0 { 0 } else { x.rows() };
    let too_big = |what: &str, v: usize| Error::LimitExceeded {
        what: format!("softmax: {what}"),
        needed: v as u64,
        available: u32::MAX as u64,
    };
    // Element indices in the shader are u32.
    u32::try_from(x.numel()).map_err(|_| too_big("elements", x.numel()))?;
    let p = Params {
        rows: u32::try_from(rows).map_err(|_| too_big("rows", rows))?,
        n: u32::try_from(n).map_err(|_| too_big("row length", n))?,
        _pad: [0; 2],
    };
    let y = gpu.empty(x.shape(), x.dtype())?;
    let wg = workgroup(gpu);
    batch.dispatch(
        gpu,
        SHADERS.pick(gpu),
        "softmax_rows",
        &[("WG", wg as f64)],
        &[Binding::Uniform(bytemuck::bytes_of(&p)), Binding::Tensor(x), Binding::Tensor(&y)],
        if rows == 0 { [0, 1, 1] } else { grid_1d(p.rows, gpu.info().max_workgroups_per_dim) },
    )?;
    Ok(y)
}
