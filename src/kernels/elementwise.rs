//! Wrapper for `shaders/elementwise.wgsl`: activations, add/mul with row
//! broadcast, gated residual. Reference: `reference::elementwise`.

use bytemuck::{Pod, Zeroable};

use super::{expect_f32, launch_1d, shape_err, Variant};
use crate::error::Result;
use crate::gpu::{Batch, Binding, Gpu, ShaderSpec, Tensor};

pub static SHADER: ShaderSpec = ShaderSpec {
    name: "elementwise",
    sources: &[include_str!("../../shaders/activations.wgsl"), include_str!("../../shaders/elementwise.wgsl")],
    needs_f16: false,
    needs_subgroups: false,
};

/// Activation functions; the discriminant is the WGSL id in `activations.wgsl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    GeluTanh = 0,
    QuickGelu = 1,
    Silu = 2,
    None = 3,
    /// The tiny preview decoder's input clamp `3·tanh(x/3)` (`model::taef1`).
    Tanh = 4,
}

impl Activation {
    pub const ALL: [Activation; 5] =
        [Activation::GeluTanh, Activation::QuickGelu, Activation::Silu, Activation::None, Activation::Tanh];
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    b_len: u32,
    _pad: [u32; 2],
}

const WG: u32 = 256;

pub fn variants() -> Vec<Variant> {
    let mut v: Vec<Variant> =
        Activation::ALL.iter().map(|a| Variant::new("unary", &[("WG", WG as f64), ("OP", *a as u32 as f64)])).collect();
    v.push(Variant::new("binary", &[("WG", WG as f64), ("OP", 0.0)]));
    v.push(Variant::new("binary", &[("WG", WG as f64), ("OP", 1.0)]));
    v.push(Variant::new("binary", &[("WG", WG as f64), ("OP", 2.0)]));
    v.push(Variant::new("gated_add", &[("WG", WG as f64)]));
    v.push(Variant::new("masked_blend", &[("WG", WG as f64)]));
    v
}

fn params(n: usize, b_len: usize) -> Result<Params> {
    let n32 = u32::try_from(n).map_err(|_| shape_err("elementwise", "< 2^32 elements", n))?;
    Ok(Params { n: n32, b_len: b_len.max(1) as u32, _pad: [0; 2] })
}

/// `act(x)` elementwise.
pub fn activation(gpu: &Gpu, batch: &mut Batch, x: &Tensor, act: Activation) -> Result<Tensor> {
    expect_f32("activation", x)?;
    let y = gpu.empty(x.shape(), x.dtype())?;
    let p = params(x.numel(), 1)?;
    let (wg, grid) = launch_1d(gpu, x.numel(), WG);
    batch.dispatch(
        gpu,
        &SHADER,
        "unary",
        &[("WG", wg as f64), ("OP", act as u32 as f64)],
        &[Binding::Uniform(bytemuck::bytes_of(&p)), Binding::Tensor(x), Binding::Tensor(&y)],
        grid,
    )?;
    Ok(y)
}

fn check_broadcast(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    expect_f32(op, a)?;
    expect_f32(op, b)?;
    if b.numel() == 0 || !a.numel().is_multiple_of(b.numel()) {
        return Err(shape_err(op, format!("a tensor whose size divides that of {:?}", a.shape()), b.shape()));
    }
    Ok(())
}

fn binary(gpu: &Gpu, batch: &mut Batch, a: &Tensor, b: &Tensor, op: u32, name: &'static str) -> Result<Tensor> {
    check_broadcast(name, a, b)?;
    let y = gpu.empty(a.shape(), a.dtype())?;
    let p = params(a.numel(), b.numel())?;
    let (wg, grid) = launch_1d(gpu, a.numel(), WG);
    batch.dispatch(
        gpu,
        &SHADER,
        "binary",
        &[("WG", wg as f64), ("OP", op as f64)],
        &[Binding::Uniform(bytemuck::bytes_of(&p)), Binding::Tensor(a), Binding::Tensor(&y), Binding::Tensor(b)],
        grid,
    )?;
    Ok(y)
}

/// `a + b`, with `b` repeated along the rows of `a` when smaller (e.g. a bias row).
pub fn add(gpu: &Gpu, batch: &mut Batch, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(gpu, batch, a, b, 0, "add")
}

/// `a ⊙ b`, with `b` repeated along the rows of `a` when smaller.
pub fn mul(gpu: &Gpu, batch: &mut Batch, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(gpu, batch, a, b, 1, "mul")
}

/// `x · scale + offset` with both scalars broadcast: one elementwise pass per part that is not
/// the identity (a zero offset adds nothing).
pub fn affine(gpu: &Gpu, batch: &mut Batch, x: &Tensor, scale: f32, offset: f32) -> Result<Tensor> {
    let y = mul(gpu, batch, x, &gpu.upload_f32(&[1], &[scale])?)?;
    if offset == 0.0 {
        return Ok(y);
    }
    add(gpu, batch, &y, &gpu.upload_f32(&[1], &[offset])?)
}

/// `a − b`, with `b` repeated along the rows of `a` when smaller (the step cache's residuals).
pub fn sub(gpu: &Gpu, batch: &mut Batch, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(gpu, batch, a, b, 2, "sub")
}

/// Gated residual `a + gate ⊙ b`; `a`, `b` are `[rows, C]`, `gate` is `[C]` (or divides C).
pub fn gated_add(gpu: &Gpu, batch: &mut Batch, a: &Tensor, gate: &Tensor, b: &Tensor) -> Result<Tensor> {
    expect_f32("gated_add", b)?;
    if a.shape() != b.shape() {
        return Err(shape_err("gated_add", format!("b of shape {:?}", a.shape()), b.shape()));
    }
    check_broadcast("gated_add", a, gate)?;
    let y = gpu.empty(a.shape(), a.dtype())?;
    let p = params(a.numel(), gate.numel())?;
    let (wg, grid) = launch_1d(gpu, a.numel(), WG);
    batch.dispatch(
        gpu,
        &SHADER,
        "gated_add",
        &[("WG", wg as f64)],
        &[
            Binding::Uniform(bytemuck::bytes_of(&p)),
            Binding::Tensor(a),
            Binding::Tensor(&y),
            Binding::Tensor(b),
            Binding::Tensor(gate),
        ],
        grid,
    )?;
    Ok(y)
}

/// Rows whose [`masked_blend`] threshold is this are never imposed (sigmas never exceed 1).
pub const NEVER_IMPOSED: f32 = f32::MAX;

/// RePaint-style re-imposition (IC-LoRA reference panels): row `r` of `x` `[rows, C]` becomes
/// `(1 − σ)·target[r] + σ·noise[r]` when `thresholds[r] ≤ σ`, else stays `x[r]`; `σ` is the
/// one-element tensor `sigma` (so a sampler records it without re-uploading the rest). Threshold
/// 0 imposes at every σ, [`NEVER_IMPOSED`] never. `target` and `noise` have `x`'s shape,
/// `thresholds` one value per row.
pub fn masked_blend(
    gpu: &Gpu,
    batch: &mut Batch,
    x: &Tensor,
    thresholds: &Tensor,
    target: &Tensor,
    noise: &Tensor,
    sigma: &Tensor,
) -> Result<Tensor> {
    for t in [x, thresholds, target, noise, sigma] {
        expect_f32("masked_blend", t)?;
    }
    for (what, t) in [("target", target), ("noise", noise)] {
        if t.shape() != x.shape() {
            return Err(shape_err("masked_blend", format!("{what} of shape {:?}", x.shape()), t.shape()));
        }
    }
    if thresholds.numel() != x.rows() {
        return Err(shape_err(
            "masked_blend",
            format!("{} row thresholds for x {:?}", x.rows(), x.shape()),
            thresholds.shape(),
        ));
    }
    if sigma.numel() != 1 {
        return Err(shape_err("masked_blend", "a one-element sigma", sigma.shape()));
    }
    let y = gpu.empty(x.shape(), x.dtype())?;
    let p = params(x.numel(), x.dim_rev(0))?;
    let (wg, grid) = launch_1d(gpu, x.numel(), WG);
    batch.dispatch(
        gpu,
        &SHADER,
        "masked_blend",
        &[("WG", wg as f64)],
        &[
            Binding::Uniform(bytemuck::bytes_of(&p)),
            Binding::Tensor(x),
            Binding::Tensor(&y),
            Binding::Tensor(target),
            Binding::Tensor(thresholds),
            Binding::Tensor(noise),
            Binding::Tensor(sigma),
        ],
        grid,
    )?;
    Ok(y)
}
