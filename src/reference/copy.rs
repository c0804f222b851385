//! CPU reference for `shaders/copy.wgsl`: block copies between row-major `[rows, cols]` matrices.

use super::elementwise::activate;
use crate::kernels::elementwise::Activation;

/// Copies the `rows × cols` block of `src` (row stride `src_cols`) starting at `(sr, sc)` into `dst`
/// (row stride `dst_cols`) at `(dr, dc)`.
pub fn copy_into(
    dst: &mut [f32],
    dst_cols: usize,
    at: (usize, usize),
    src: &[f32],
    src_cols: usize,
    block: (usize, usize, usize, usize),
) {
    copy_into_with(dst, dst_cols, at, src, src_cols, block, Activation::None)
}

/// [`copy_into`] with `act` applied to each copied value.
pub fn copy_into_with(
    dst: &mut [f32],
    dst_cols: usize,
    (dr, dc): (usize, usize),
    src: &[f32],
    src_cols: usize,
    (sr, sc, rows, cols): (usize, usize, usize, usize),
    act: Activation,
) {
    for r in 0..rows {
        let s = (sr + r) * src_cols + sc;
        let d = (dr + r) * dst_cols + dc;
        for (o, &v) in dst[d..d + cols].iter_mut().zip(&src[s..s + cols]) {
            *o = activate(v, act);
        }
    }
}

/// Columns `start .. start + width` of every row.
pub fn slice_cols(t: &[f32], cols: usize, start: usize, width: usize) -> Vec<f32> {
    t.chunks(cols).flat_map(|row| row[start..start + width].iter().copied()).collect()
}

/// Rows `start .. start + count`.
pub fn slice_rows(t: &[f32], cols: usize, start: usize, count: usize) -> Vec<f32> {
    t[start * cols..(start + count) * cols].to_vec()
}

/// `a` `[ra, cols]` followed by `b` `[rb, cols]`.
pub fn concat_rows(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().chain(b).copied().collect()
}

/// Row by row, `a`'s `ca` columns then `b`'s `cb` columns.
pub fn concat_cols(a: &[f32], ca: usize, b: &[f32], cb: usize) -> Vec<f32> {
    a.chunks(ca).zip(b.chunks(cb)).flat_map(|(x, y)| x.iter().chain(y).copied()).collect()
}

/// `[rows, cols]` → `[cols, rows]`.
pub fn transpose(t: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols * rows).map(|i| t[(i % rows) * cols + i / rows]).collect()
}
