//! CPU reference for `shaders/rope.wgsl`, computed from the positions directly in f64 (not from
//! `kernels::rope::rope_tables`), so a test against it checks the table builder and the kernel.

/// FLUX RoPE (BFL `rope` / `apply_rope`, src/flux/math.py @ 802fb47) on every `D = Σ axes_dim`-wide head of
/// the column slice `[offset, offset + width)` of `x` (rows of `c`); row `r` has position `ids[r]`. Returns
/// all of
/// `x` with the slice rotated. Interleaved pairs: pair p of a head is `(v[2p], v[2p+1])`; pairs are
/// assigned to axes by concatenation, axis a with dim d taking d/2 pairs of `ω_j = theta^(−2j/d)`.
pub fn rope(
    x: &[f32],
    c: usize,
    offset: usize,
    width: usize,
    ids: &[[f32; 3]],
    axes_dim: &[usize],
    theta: f64,
) -> Vec<f32> {
    // (axis, ω) for each pair of a head.
    let mut freqs = Vec::new();
    for (a, &d) in axes_dim.iter().enumerate() {
        for j in 0..d / 2 {
            freqs.push((a, 1.0 / theta.powf((2 * j) as f64 / d as f64)));
        }
    }
    let head = 2 * freqs.len();
    let mut y = x.to_vec();
    for (row, pos) in y.chunks_mut(c).zip(ids) {
        for h in (offset..offset + width).step_by(head) {
            for (p, &(a, w)) in freqs.iter().enumerate() {
                let phi = pos.get(a).map_or(0.0, |&v| v as f64) * w;
                let (s, co) = phi.sin_cos();
                let (re, im) = (row[h + 2 * p] as f64, row[h + 2 * p + 1] as f64);
                row[h + 2 * p] = (re * co - im * s) as f32;
                row[h + 2 * p + 1] = (re * s + im * co) as f32;
            }
        }
    }
    y
}

/// FLUX QK norm then RoPE (BFL `QKNorm`, src/flux/modules/layers.py @ 802fb47, then `apply_rope`,
/// src/flux/math.py @ 802fb47), the composition the fused kernel `qk_norm_rope` replaces: per-head RMSNorm
/// (`reference::norm::rms_norm`, weights `wq` on the q
/// slice, `wk` on the k slice, each `width` wide at `q_off` / `k_off` of rows of `c`), then [`rope`]
/// on both slices. Row `r` has position `ids[r]`.
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope(
    x: &[f32],
    c: usize,
    (q_off, k_off, width): (usize, usize, usize),
    (wq, wk): (&[f32], &[f32]),
    eps: f32,
    ids: &[[f32; 3]],
    axes_dim: &[usize],
    theta: f64,
) -> Vec<f32> {
    use super::norm::{columns, rms_norm, with_columns};
    let mut y = x.to_vec();
    for (off, w) in [(q_off, wq), (k_off, wk)] {
        let normed = rms_norm(&columns(&y, c, off, width), w, eps);
        y = with_columns(&y, c, off, &normed);
    }
    for off in [q_off, k_off] {
        y = rope(&y, c, off, width, ids, axes_dim, theta);
    }
    y
}
