//! Self-test runs of the elementwise, softmax, norm and RoPE kernels.

use super::{dim, random, Rng};
use crate::gpu::{Batch, Gpu, Tensor};
use crate::kernels::elementwise::{self as ew, Activation};
use crate::kernels::norm::{self, Columns, Modulation};
use crate::kernels::{rope as kr, softmax as ks};
use crate::reference::{elementwise as ew_ref, norm as norm_ref, rope as rope_ref, softmax as softmax_ref};
use crate::Result;

type Out = Result<(Tensor, Vec<f32>)>;
type GpuBinary = fn(&Gpu, &mut Batch, &Tensor, &Tensor) -> Result<Tensor>;
type CpuBinary = fn(&[f32], &[f32]) -> Vec<f32>;
pub const ADD: (GpuBinary, CpuBinary) = (ew::add, ew_ref::add);
pub const MUL: (GpuBinary, CpuBinary) = (ew::mul, ew_ref::mul);

/// FLUX's LayerNorm / RMSNorm eps (BFL src/flux/modules/layers.py @ 802fb47); CLIP's affine LayerNorm uses
/// 1e-5 (transformers `CLIPTextConfig.layer_norm_eps`,
/// src/transformers/models/clip/configuration_clip.py @ 01841b3).
const EPS_FLUX: f32 = 1e-6;
const EPS_CLIP: f32 = 1e-5;
const FLUX_THETA: f64 = 10_000.0;

fn inner(dims: &[usize]) -> usize {
    dims.last().copied().unwrap_or(1)
}

pub fn act(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng, a: Activation) -> Out {
    // ±8 covers the saturating tails of every activation.
    let (x, xv) = random(g, dims, rng, -8.0, 8.0)?;
    Ok((ew::activation(g, b, &x, a)?, ew_ref::activation(&xv, a)))
}

/// `op(a, b)`; with `row_broadcast`, `b` is one row repeated over the rows of `a`.
pub fn binary(
    g: &Gpu,
    b: &mut Batch,
    dims: &[usize],
    rng: &mut Rng,
    row_broadcast: bool,
    op: (GpuBinary, CpuBinary),
) -> Out {
    let (x, xv) = random(g, dims, rng, -2.0, 2.0)?;
    let b_shape = if row_broadcast { vec![inner(dims)] } else { dims.to_vec() };
    let (y, yv) = random(g, &b_shape, rng, -2.0, 2.0)?;
    Ok((op.0(g, b, &x, &y)?, op.1(&xv, &yv)))
}

pub fn gated_add(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng) -> Out {
    let (x, xv) = random(g, dims, rng, -2.0, 2.0)?;
    let (y, yv) = random(g, dims, rng, -2.0, 2.0)?;
    let (gate, gv) = random(g, &[inner(dims)], rng, -1.0, 1.0)?;
    Ok((ew::gated_add(g, b, &x, &gate, &y)?, ew_ref::gated_add(&xv, &gv, &yv)))
}

pub fn softmax(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng) -> Out {
    let (x, xv) = random(g, dims, rng, -8.0, 8.0)?;
    Ok((ks::softmax(g, b, &x)?, softmax_ref::softmax(&xv, inner(dims))))
}

/// dims `[rows, C]`: FLUX's LayerNorm (no affine, eps 1e-6) or CLIP's (affine, eps 1e-5).
pub fn layer_norm(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng, affine: bool) -> Out {
    let c = dim(dims, 1);
    let (x, xv) = random(g, dims, rng, -3.0, 5.0)?;
    if !affine {
        return Ok((norm::layer_norm(g, b, &x, None, EPS_FLUX)?, norm_ref::layer_norm(&xv, c, None, EPS_FLUX)));
    }
    let (w, wv) = random(g, &[c], rng, -2.0, 2.0)?;
    let (bias, bv) = random(g, &[c], rng, -1.0, 1.0)?;
    let y = norm::layer_norm(g, b, &x, Some((&w, &bias)), EPS_CLIP)?;
    Ok((y, norm_ref::layer_norm(&xv, c, Some((&wv, &bv)), EPS_CLIP)))
}

/// dims `[rows, C]`; shift and scale read from one `[2C]` modulation vector (BFL final layer order).
pub fn ada_ln(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng) -> Out {
    let c = dim(dims, 1);
    let (x, xv) = random(g, dims, rng, -3.0, 3.0)?;
    let (m, mv) = random(g, &[2 * c], rng, -1.0, 1.0)?;
    let y = norm::layer_norm_modulated(g, b, &x, &Modulation { tensor: &m, shift: 0, scale: c }, EPS_FLUX)?;
    Ok((y, norm_ref::layer_norm_modulated(&xv, c, &mv, 0, c, EPS_FLUX)))
}

/// dims `[rows, C, D]`: RMSNorm over each D-wide group of a row (T5: D = C; QK norm: D = 128).
pub fn rms_norm(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng) -> Out {
    let (x, xv) = random(g, &[dim(dims, 0), dim(dims, 1)], rng, -3.0, 3.0)?;
    let (w, wv) = random(g, &[dim(dims, 2)], rng, 0.5, 1.5)?;
    Ok((norm::rms_norm(g, b, &x, &w, EPS_FLUX)?, norm_ref::rms_norm(&xv, &wv, EPS_FLUX)))
}

/// dims `[rows, C, offset, width, D]`: FLUX QK norm, in place on a column slice of a fused qkv.
pub fn qk_norm(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng) -> Out {
    let (c, offset, width) = (dim(dims, 1), dim(dims, 2), dim(dims, 3));
    let (x, xv) = random(g, &[dim(dims, 0), c], rng, -3.0, 3.0)?;
    let (w, wv) = random(g, &[dim(dims, 4)], rng, 0.5, 1.5)?;
    norm::rms_norm_columns_inplace(g, b, &x, Columns { offset, width }, &w, EPS_FLUX)?;
    let normed = norm_ref::rms_norm(&norm_ref::columns(&xv, c, offset, width), &wv, EPS_FLUX);
    Ok((x, norm_ref::with_columns(&xv, c, offset, &normed)))
}

/// dims `[C, H, W, groups]`: the VAE's `silu(GroupNorm(x))` (eps 1e-6).
pub fn group_norm(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng) -> Out {
    let (c, hw, groups) = (dim(dims, 0), dim(dims, 1) * dim(dims, 2), dim(dims, 3));
    let (x, xv) = random(g, &dims[..3.min(dims.len())], rng, -3.0, 3.0)?;
    let (w, wv) = random(g, &[c], rng, 0.5, 1.5)?;
    let (bias, bv) = random(g, &[c], rng, -0.5, 0.5)?;
    let y = norm::group_norm(g, b, &x, groups, &w, &bias, EPS_FLUX, true)?;
    Ok((y, norm_ref::group_norm(&xv, c, hw, groups, &wv, &bv, EPS_FLUX, true)))
}

/// The inputs of a RoPE run with dims `[rows, C, offset, width, D]`: FLUX's axes for D = 128
/// (BFL `EmbedND`, src/flux/modules/layers.py @ 802fb47; smaller heads keep the same 1:1:2 split), FLUX's
/// positions (2 text tokens, then a 2-row image grid) with the rows on the last ones, their tables, and a
/// random `[rows, C]` input.
struct RopeRun {
    axes: Vec<usize>,
    ids: Vec<[f32; 3]>,
    pos: usize,
    tables: kr::RopeTables,
    x: Tensor,
    xv: Vec<f32>,
}

fn rope_run(g: &Gpu, dims: &[usize], rng: &mut Rng) -> Result<RopeRun> {
    let (rows, c, d) = (dim(dims, 0), dim(dims, 1), dim(dims, 4));
    let axes = if d == 128 { vec![16, 56, 56] } else { vec![d / 4, d / 4, d / 2] };
    let ids = kr::flux_position_ids(2, 2, rows.div_ceil(2));
    let pos = ids.len() - rows;
    let tables = kr::RopeTables::new(g, &ids, &axes, FLUX_THETA)?;
    let (x, xv) = random(g, &[rows, c], rng, -3.0, 3.0)?;
    Ok(RopeRun { axes, ids, pos, tables, x, xv })
}

/// dims `[rows, C, q offset, width, D]`: FLUX's QK RMSNorm fused with RoPE (`qk_norm_rope`), in
/// place; k is the `width` columns after q's. Positions as in [`rope`].
pub fn qk_norm_rope(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng) -> Out {
    let (c, q_off, width, d) = (dim(dims, 1), dim(dims, 2), dim(dims, 3), dim(dims, 4));
    let RopeRun { axes, ids, pos, tables, x, xv } = rope_run(g, dims, rng)?;
    let (nq, wq) = random(g, &[d], rng, -1.5, 1.5)?;
    let (nk, wk) = random(g, &[d], rng, 0.2, 2.0)?;
    let (q, k) = (Columns { offset: q_off, width }, Columns { offset: q_off + width, width });
    let spec = kr::QkNormRope { q, k, norm_q: &nq, norm_k: &nk, eps: EPS_FLUX };
    kr::qk_norm_rope_inplace(g, b, &x, &spec, &tables, pos)?;
    let expected = rope_ref::qk_norm_rope(
        &xv,
        c,
        (q_off, q_off + width, width),
        (&wq, &wk),
        EPS_FLUX,
        &ids[pos..],
        &axes,
        FLUX_THETA,
    );
    Ok((x, expected))
}

/// dims `[rows, C, offset, width, D]`: RoPE on the D-wide heads of a column slice (inputs from
/// [`rope_run`]).
pub fn rope(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng, inplace: bool) -> Out {
    let (c, offset, width) = (dim(dims, 1), dim(dims, 2), dim(dims, 3));
    let RopeRun { axes, ids, pos, tables, x, xv } = rope_run(g, dims, rng)?;
    let cols = Columns { offset, width };
    let rotated = rope_ref::rope(&xv, c, offset, width, &ids[pos..], &axes, FLUX_THETA);
    if inplace {
        kr::rope_inplace(g, b, &x, cols, &tables, pos)?;
        Ok((x, rotated))
    } else {
        Ok((kr::rope(g, b, &x, cols, &tables, pos)?, norm_ref::columns(&rotated, c, offset, width)))
    }
}
