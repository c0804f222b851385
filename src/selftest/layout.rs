//! Self-test runs of the layout kernels (copies, packing, upsampling, gathers): all bit-exact.

use super::compute::random_weight;
use super::{dim, random, Rng};
use crate::gpu::{Batch, DType, Gpu, Tensor};
use crate::kernels::{copy, embedding as ke, pack as kp, upsample as ku};
use crate::reference::{copy as copy_ref, embedding as embedding_ref, pack as pack_ref, upsample as upsample_ref};
use crate::Result;

type Out = Result<(Tensor, Vec<f32>)>;

/// dims `[rows, cols, start, width]`.
pub fn slice_cols(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng) -> Out {
    let (cols, start, width) = (dim(dims, 1), dim(dims, 2), dim(dims, 3));
    let (t, tv) = random(g, &[dim(dims, 0), cols], rng, -1.0, 1.0)?;
    Ok((copy::slice_cols(g, b, &t, start, width)?, copy_ref::slice_cols(&tv, cols, start, width)))
}

/// dims `[rows a, rows b, cols]`.
pub fn concat_rows(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng) -> Out {
    let cols = dim(dims, 2);
    let (x, xv) = random(g, &[dim(dims, 0), cols], rng, -1.0, 1.0)?;
    let (y, yv) = random(g, &[dim(dims, 1), cols], rng, -1.0, 1.0)?;
    Ok((copy::concat_rows(g, b, &x, &y)?, copy_ref::concat_rows(&xv, &yv)))
}

/// dims `[rows, cols a, cols b]`.
pub fn concat_cols(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng) -> Out {
    let (rows, ca, cb) = (dim(dims, 0), dim(dims, 1), dim(dims, 2));
    let (x, xv) = random(g, &[rows, ca], rng, -1.0, 1.0)?;
    let (y, yv) = random(g, &[rows, cb], rng, -1.0, 1.0)?;
    Ok((copy::concat_cols(g, b, &x, &y)?, copy_ref::concat_cols(&xv, ca, &yv, cb)))
}

/// dims `[C, h, w]` of the latent: 2×2 patches to tokens, or (`inverse`) tokens back.
pub fn pack(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng, inverse: bool) -> Out {
    let (c, h, w) = (dim(dims, 0), dim(dims, 1), dim(dims, 2));
    if inverse {
        let (t, tv) = random(g, &[(h / 2) * (w / 2), 4 * c], rng, -1.0, 1.0)?;
        Ok((kp::unpack(g, b, &t, c, h, w)?, pack_ref::unpack(&tv, c, h, w)))
    } else {
        let (t, tv) = random(g, &[c, h, w], rng, -1.0, 1.0)?;
        Ok((kp::pack(g, b, &t)?, pack_ref::pack(&tv, c, h, w)))
    }
}

/// dims `[C, H, W]`.
pub fn upsample(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng) -> Out {
    let (t, tv) = random(g, dims, rng, -1.0, 1.0)?;
    Ok((ku::nearest2x(g, b, &t)?, upsample_ref::nearest2x(&tv, dim(dims, 0), dim(dims, 1), dim(dims, 2))))
}

/// dims `[vocab, K, ids]`; the last id (of several) is out of range and must give a zero row.
pub fn embedding(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng, format: DType) -> Out {
    let (vocab, k, n) = (dim(dims, 0), dim(dims, 1), dim(dims, 2));
    let (table, values) = random_weight(g, rng, format, vocab, k)?;
    let ids: Vec<u32> =
        (0..n).map(|i| if i + 1 == n && n > 1 { vocab as u32 + 3 } else { rng.below(vocab) as u32 }).collect();
    let idt = g.upload_u32(&[n], &ids)?;
    Ok((ke::embedding(g, b, &table, &idt)?, embedding_ref::embedding(&values, k, &ids)))
}
