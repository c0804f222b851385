//! Wrapper for `shaders/upsample.wgsl`: nearest-neighbour ×2 of a `[C, H, W]` image
//! (BFL `Upsample`, src/flux/modules/autoencoder.py @ 802fb47). Reference: `reference::upsample`.

use bytemuck::{Pod, Zeroable};

use super::{expect_f32, launch_1d, shape_err, Variant};
use crate::error::Result;
use crate::gpu::{Batch, Binding, Gpu, ShaderSpec, Tensor};

pub static SHADER: ShaderSpec = ShaderSpec {
    name: "upsample",
    sources: &[include_str!("../../shaders/upsample.wgsl")],
    needs_f16: false,
    needs_subgroups: false,
};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    h: u32,
    w: u32,
    _pad: u32,
}

const WG: u32 = 256;

pub fn variants() -> Vec<Variant> {
    vec![Variant::new("nearest2x", &[("WG", WG as f64)])]
}

/// `[C, H, W]` (or `[1, C, H, W]`) F32 → `[C, 2H, 2W]` (same rank): output `(y, x)` = input `(y/2, x/2)`.
pub fn nearest2x(gpu: &Gpu, batch: &mut Batch, x: &Tensor) -> Result<Tensor> {
    expect_f32("upsample", x)?;
    let (lead, c, h, w) = match *x.shape() {
        [c, h, w] => (None, c, h, w),
        [1, c, h, w] => (Some(1), c, h, w),
        _ => return Err(shape_err("upsample", "an image [C, H, W] or [1, C, H, W]", x.shape())),
    };
    let n = c * 4 * h * w;
    if n == 0 {
        return Err(shape_err("upsample", "a non-empty image", x.shape()));
    }
    let n32 = u32::try_from(n).map_err(|_| shape_err("upsample", "< 2^32 output elements", n))?;
    let shape: Vec<usize> = lead.into_iter().chain([c, 2 * h, 2 * w]).collect();
    let y = gpu.empty(&shape, x.dtype())?;
    let p = Params { n: n32, h: h as u32, w: w as u32, _pad: 0 };
    let (wg, grid) = launch_1d(gpu, n, WG);
    batch.dispatch(
        gpu,
        &SHADER,
        "nearest2x",
        &[("WG", wg as f64)],
        &[Binding::Uniform(bytemuck::bytes_of(&p)), Binding::Tensor(x), Binding::Tensor(&y)],
        grid,
    )?;
    Ok(y)
}
