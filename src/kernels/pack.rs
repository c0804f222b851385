//! Wrapper for `shaders/pack.wgsl`: FLUX latent packing `[C, h, w]` ⇄ `[(h/2)(w/2), 4C]`
//! (diffusers `FluxPipeline._pack_latents` / `_unpack_latents`,
//! src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c; C = 16 for FLUX). Reference: `reference::pack`.

use bytemuck::{Pod, Zeroable};

use super::{expect_f32, launch_1d, shape_err, Variant};
use crate::error::Result;
use crate::gpu::{Batch, Binding, Gpu, ShaderSpec, Tensor};

pub static SHADER: ShaderSpec = ShaderSpec {
    name: "pack",
    sources: &[include_str!("../../shaders/pack.wgsl")],
    needs_f16: false,
    needs_subgroups: false,
};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
}

const WG: u32 = 256;
const ENTRIES: [&str; 2] = ["pack", "unpack"];

pub fn variants() -> Vec<Variant> {
    ENTRIES.iter().map(|e| Variant::new(e, &[("WG", WG as f64)])).collect()
}

fn params(op: &'static str, c: usize, h: usize, w: usize) -> Result<Params> {
    if c == 0 || h == 0 || w == 0 || !h.is_multiple_of(2) || !w.is_multiple_of(2) {
        return Err(shape_err(op, "a latent [C, h, w] with C ≥ 1 and h, w even and non-zero", [c, h, w]));
    }
    let n = c * h * w;
    let n = u32::try_from(n).map_err(|_| shape_err(op, "< 2^32 elements", n))?;
    Ok(Params { n, c: c as u32, h: h as u32, w: w as u32 })
}

fn dispatch(gpu: &Gpu, batch: &mut Batch, entry: &'static str, p: Params, x: &Tensor, y: &Tensor) -> Result<()> {
    let (wg, grid) = launch_1d(gpu, p.n as usize, WG);
    batch.dispatch(
        gpu,
        &SHADER,
        entry,
        &[("WG", wg as f64)],
        &[Binding::Uniform(bytemuck::bytes_of(&p)), Binding::Tensor(x), Binding::Tensor(y)],
        grid,
    )
}

/// Latent `[C, h, w]` (or `[1, C, h, w]`) F32 → tokens `[(h/2)(w/2), 4C]`; `h` and `w` must be even.
pub fn pack(gpu: &Gpu, batch: &mut Batch, latent: &Tensor) -> Result<Tensor> {
    expect_f32("pack", latent)?;
    let (c, h, w) = match *latent.shape() {
        [c, h, w] | [1, c, h, w] => (c, h, w),
        _ => return Err(shape_err("pack", "a latent [C, h, w] or [1, C, h, w]", latent.shape())),
    };
    let p = params("pack", c, h, w)?;
    let y = gpu.empty(&[(h / 2) * (w / 2), 4 * c], latent.dtype())?;
    dispatch(gpu, batch, "pack", p, latent, &y)?;
    Ok(y)
}

/// Tokens `[(h/2)(w/2), 4·channels]` (or with a leading 1) F32 → latent `[channels, h, w]`, the exact
/// inverse of [`pack`].
pub fn unpack(gpu: &Gpu, batch: &mut Batch, packed: &Tensor, channels: usize, h: usize, w: usize) -> Result<Tensor> {
    expect_f32("unpack", packed)?;
    let p = params("unpack", channels, h, w)?;
    let expected = [(h / 2) * (w / 2), 4 * channels];
    let ok = match *packed.shape() {
        [n, f] | [1, n, f] => [n, f] == expected,
        _ => false,
    };
    if !ok {
        return Err(shape_err(
            "unpack",
            format!("tokens {expected:?} for a [{channels}, {h}, {w}] latent"),
            packed.shape(),
        ));
    }
    let y = gpu.empty(&[channels, h, w], packed.dtype())?;
    dispatch(gpu, batch, "unpack", p, packed, &y)?;
    Ok(y)
}
