//! How a matmul's operands are bound when they exceed one storage binding: row ranges of x, y
//! and W per dispatch (`chunks`), each bound whole or as an aligned byte range, as scalars or as
//! 16-byte vectors. Used by `matmul.rs`.

use crate::error::{Error, Result};
use crate::gpu::{Binding, Gpu, Tensor};

/// The whole tensor, or the byte range of `rows` rows from `row0`.
pub(super) fn rows_binding(t: &Tensor, whole: bool, row0: usize, rows: usize, row_bytes: usize) -> Binding<'_> {
    if whole {
        return Binding::Tensor(t);
    }
    let off = (row0 * row_bytes) as u64;
    let size = ((rows * row_bytes).div_ceil(4) * 4) as u64;
    Binding::Range(t, off, size.min(t.buffer().size().saturating_sub(off)))
}

/// Like [`rows_binding`], for a view as `array<vec4<u32>>`: None unless offset and size are whole
/// 16-byte vectors (a partial last vector would read as out of bounds).
pub(super) fn vec4_binding(t: &Tensor, whole: bool, row0: usize, rows: usize, row_bytes: usize) -> Option<Binding<'_>> {
    let (off, size) =
        if whole { (0, t.buffer().size()) } else { ((row0 * row_bytes) as u64, (rows * row_bytes) as u64) };
    (off % 16 == 0 && size % 16 == 0 && off + size <= t.buffer().size()).then_some({
        if whole {
            Binding::Tensor(t)
        } else {
            Binding::Range(t, off, size)
        }
    })
}

/// Rows per dispatch of x/y (`m_chunk`) and of W (`n_chunk`) so that every bound range fits one
/// storage binding and starts at an aligned offset. Whole extents when everything fits.
pub(super) fn chunks(
    gpu: &Gpu,
    m: usize,
    n: usize,
    x_row: usize,
    y_row: usize,
    w_row: usize,
) -> Result<(usize, usize)> {
    let info = gpu.info();
    let (limit, align) = (info.max_storage_binding as usize, info.storage_offset_alignment.max(4) as usize);
    // Smallest row count whose byte size is a multiple of the offset alignment, for every row size given.
    let step = |rows: &[usize]| (1..=align).find(|r| rows.iter().all(|b| (r * b) % align == 0)).unwrap_or(align);
    let fit = |count: usize, rows: &[usize], what: &str| -> Result<usize> {
        let widest = rows.iter().copied().max().unwrap_or(1).max(1);
        if count * widest <= limit {
            return Ok(count.max(1));
        }
        let s = step(rows);
        let per = limit / widest / s * s;
        if per == 0 {
            return Err(Error::LimitExceeded {
                what: format!("matmul: {s} rows of {what} ({widest} bytes each) in one binding"),
                needed: (s * widest) as u64,
                available: limit as u64,
            });
        }
        Ok(per)
    };
    Ok((fit(m, &[x_row, y_row], "activations")?, fit(n, &[w_row], "weights")?))
}
