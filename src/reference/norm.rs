//! CPU reference for `shaders/norm.wgsl`: statistics accumulated in f64.

use super::elementwise::silu;

/// Mean and biased variance of `v` in f64 (two-pass).
fn moments(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&a| a as f64).sum::<f64>() / n;
    let var = v.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// LayerNorm over rows of `c` elements, biased variance, `· w + b` if `affine` (PyTorch `nn.LayerNorm`, as in
/// BFL's blocks, src/flux/modules/layers.py @ 802fb47, and `CLIPEncoderLayer`,
/// src/transformers/models/clip/modeling_clip.py @ 679021a).
pub fn layer_norm(x: &[f32], c: usize, affine: Option<(&[f32], &[f32])>, eps: f32) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(c) {
        let (mean, var) = moments(row);
        let r = 1.0 / (var + eps as f64).sqrt();
        for (i, &v) in row.iter().enumerate() {
            let mut o = (v as f64 - mean) * r;
            if let Some((w, b)) = affine {
                o = o * w[i] as f64 + b[i] as f64;
            }
            y.push(o as f32);
        }
    }
    y
}

/// FLUX AdaLN: `LN(x) · (1 + m[scale..]) + m[shift..]`, LN without affine (BFL `DoubleStreamBlock`,
/// src/flux/modules/layers.py @ 802fb47).
pub fn layer_norm_modulated(x: &[f32], c: usize, m: &[f32], shift: usize, scale: usize, eps: f32) -> Vec<f32> {
    let ln = layer_norm(x, c, None, eps);
    ln.iter()
        .enumerate()
        .map(|(i, &v)| {
            let j = i % c;
            (v as f64 * (1.0 + m[scale + j] as f64) + m[shift + j] as f64) as f32
        })
        .collect()
}

/// RMSNorm over consecutive groups of `w.len()` elements: `v / sqrt(mean(v²) + eps) · w` (BFL `RMSNorm`,
/// src/flux/modules/layers.py @ 802fb47; `T5LayerNorm`, src/transformers/models/t5/modeling_t5.py @ 6b8b757).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len());
    for g in x.chunks(w.len()) {
        let ms = g.iter().map(|&a| (a as f64).powi(2)).sum::<f64>() / g.len() as f64;
        let r = 1.0 / (ms + eps as f64).sqrt();
        y.extend(g.iter().zip(w).map(|(&v, &wi)| (v as f64 * r * wi as f64) as f32));
    }
    y
}

/// Columns `[offset, offset + width)` of each row of a row-major matrix with `c` columns.
pub fn columns(x: &[f32], c: usize, offset: usize, width: usize) -> Vec<f32> {
    x.chunks(c).flat_map(|row| row[offset..offset + width].iter().copied()).collect()
}

/// `x` (rows of `c`) with columns `[offset, offset + width)` replaced by `slice` (rows of `width`).
pub fn with_columns(x: &[f32], c: usize, offset: usize, slice: &[f32]) -> Vec<f32> {
    let mut y = x.to_vec();
    let width = slice.len() / (x.len() / c).max(1);
    for (row, s) in y.chunks_mut(c).zip(slice.chunks(width)) {
        row[offset..offset + width].copy_from_slice(s);
    }
    y
}

/// GroupNorm of `x` `[C, hw]` with `groups` groups, affine per channel, optional SiLU (BFL `ResnetBlock`,
/// src/flux/modules/autoencoder.py @ 802fb47).
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: &[f32],
    c: usize,
    hw: usize,
    groups: usize,
    w: &[f32],
    b: &[f32],
    eps: f32,
    act_silu: bool,
) -> Vec<f32> {
    let n = c / groups * hw;
    let mut y = Vec::with_capacity(x.len());
    for (g, v) in x.chunks(n).enumerate() {
        let (mean, var) = moments(v);
        let r = 1.0 / (var + eps as f64).sqrt();
        for (i, &a) in v.iter().enumerate() {
            let ch = g * (c / groups) + i / hw;
            let o = ((a as f64 - mean) * r * w[ch] as f64 + b[ch] as f64) as f32;
            y.push(if act_silu { silu(o) } else { o });
        }
    }
    y
}
