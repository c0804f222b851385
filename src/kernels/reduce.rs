//! Wrapper for `shaders/reduce.wgsl`: whole-tensor reductions to a few numbers the CPU reads back
//! (the step cache's decision, `pipeline::step_cache`). Reference: `reference::reduce`.

use bytemuck::{Pod, Zeroable};

use super::{expect_f32, shape_err, Variant};
use crate::error::{Error, Result};
use crate::gpu::{Batch, Binding, Gpu, Tensor};

/// The kernel after the workgroup-reduction prelude of this device (see `kernels::Reducing`).
pub static SHADERS: super::Reducing = super::reducing!("reduce", [include_str!("../../shaders/reduce.wgsl")]);

const WG: u32 = 256;
/// Workgroups of one reduction: enough to keep a large GPU busy on a 20-million-element tensor
/// (a 1024×1536 canvas's image stream), few enough that the read-back stays 2 KiB.
const MAX_GROUPS: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    groups: u32,
    _pad: [u32; 2],
}

pub fn variants() -> Vec<Variant> {
    vec![Variant::new("abs_diff_sums", &[("WG", WG as f64)])]
}

/// The shader's tree halves the workgroup: the largest power of two the device allows.
fn workgroup(gpu: &Gpu) -> u32 {
    let wg = gpu.workgroup_size(WG);
    1 << (31 - wg.leading_zeros())
}

/// Partial sums `[groups, 2]` of `Σ|a − b|` and `Σ|b|` over two F32 tensors of the same size;
/// read them back and pass them to [`relative_l1`].
pub fn abs_diff_sums(gpu: &Gpu, batch: &mut Batch, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "abs_diff_sums";
    expect_f32(OP, a)?;
    expect_f32(OP, b)?;
    if a.numel() != b.numel() || a.numel() == 0 {
        return Err(shape_err(
            OP,
            format!("a non-empty tensor of {} elements like {:?}", a.numel(), a.shape()),
            b.shape(),
        ));
    }
    let wg = workgroup(gpu);
    let n = a.numel();
    let groups = (n as u64).div_ceil(wg as u64).min(MAX_GROUPS as u64) as u32;
    // The shader's element index runs past n by up to one stride before the loop ends.
    let limit = u32::MAX as u64 - groups as u64 * wg as u64;
    if n as u64 > limit {
        return Err(Error::LimitExceeded { what: format!("{OP}: elements"), needed: n as u64, available: limit });
    }
    let p = Params { n: n as u32, groups, _pad: [0; 2] };
    let sums = gpu.empty(&[groups as usize, 2], crate::gpu::DType::F32)?;
    batch.dispatch(
        gpu,
        SHADERS.pick(gpu),
        OP,
        &[("WG", wg as f64)],
        &[Binding::Uniform(bytemuck::bytes_of(&p)), Binding::Tensor(a), Binding::Tensor(b), Binding::Tensor(&sums)],
        [groups, 1, 1],
    )?;
    Ok(sums)
}

/// `Σ|a − b| / Σ|b|` (= mean|a − b| / mean|b|) from [`abs_diff_sums`]'s read-back, summed in f64;
/// infinite when `b` is all zeros and `a` is not, 0 when both are.
pub fn relative_l1(partials: &[f32]) -> f64 {
    let (d, s) = partials.chunks_exact(2).fold((0.0f64, 0.0f64), |(d, s), p| (d + p[0] as f64, s + p[1] as f64));
    if d == 0.0 {
        0.0
    } else {
        d / s
    }
}
