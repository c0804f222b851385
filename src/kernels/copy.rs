//! Wrapper for `shaders/copy.wgsl`: slicing and concatenation of `[rows, cols]` matrices of 32-bit
//! elements (F32, U32) along rows (tokens) and columns (features), all built on one block copy,
//! [`copy_into`]. FLUX uses them for the joint text+image sequence and for the single block's
//! `concat_features(attn, mlp)` (BFL `SingleStreamBlock.forward`, src/flux/modules/layers.py @ 802fb47).
//! Reference: `reference::copy`.
//!
//! Large tensors (the single block's `[L, 15360]` input exceeds 128 MiB at a few thousand tokens) are
//! copied in row chunks, each bound as a sub-range within the device's storage binding limit.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::elementwise::Activation;
use super::{launch_1d, shape_err, Variant};
use crate::error::{Error, Result};
use crate::gpu::{Batch, Binding, DType, Gpu, ShaderSpec, Tensor};

pub static SHADER: ShaderSpec = ShaderSpec {
    name: "copy",
    sources: &[include_str!("../../shaders/activations.wgsl"), include_str!("../../shaders/copy.wgsl")],
    needs_f16: false,
    needs_subgroups: false,
};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    src_stride: u32,
    src_offset: u32,
    dst_stride: u32,
    dst_offset: u32,
    _pad: [u32; 2],
}

const WG: u32 = 256;

pub fn variants() -> Vec<Variant> {
    vec![
        Variant::new("copy_2d", &[("WG", WG as f64)]),
        Variant::new("copy_2d", &[("WG", WG as f64), ("ACT", Activation::GeluTanh as u32 as f64)]),
        Variant::new("transpose", &[("WG", WG as f64)]),
    ]
}

/// A rectangular block of a matrix: `rows × cols` starting at `(row0, col0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub row0: usize,
    pub col0: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Block {
    /// The whole of a `[rows, cols]` matrix.
    pub fn all(t: &Tensor) -> Result<Block> {
        let (rows, cols) = matrix("copy", t)?;
        Ok(Block { row0: 0, col0: 0, rows, cols })
    }
}

/// `(rows, cols)` of a 2-D tensor of a 32-bit format.
fn matrix(op: &'static str, t: &Tensor) -> Result<(usize, usize)> {
    if !matches!(t.dtype(), DType::F32 | DType::U32) {
        return Err(Error::UnsupportedFormat {
            op,
            format: t.dtype().to_string(),
            why: "copies take 32-bit tensors (F32, U32)".into(),
        });
    }
    match *t.shape() {
        [r, c] => Ok((r, c)),
        _ => Err(shape_err(op, "a matrix [rows, cols]", t.shape())),
    }
}

fn same_format(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::UnsupportedFormat {
            op,
            format: b.dtype().to_string(),
            why: format!("the other tensor is {}", a.dtype()),
        });
    }
    Ok(())
}

fn fits(op: &'static str, what: &str, shape: (usize, usize), b: Block) -> Result<()> {
    if b.row0 + b.rows > shape.0 || b.col0 + b.cols > shape.1 {
        return Err(shape_err(op, format!("{what} block {b:?} inside a [{}, {}] matrix", shape.0, shape.1), b));
    }
    Ok(())
}

/// Copies `block` of `src` into `dst` with its top-left corner at `at = (row, col)`. Both are 2-D
/// tensors of the same 32-bit format and must be different buffers; `dst` is written in place when the
/// batch runs. An empty block records nothing.
pub fn copy_into(
    gpu: &Gpu,
    batch: &mut Batch,
    dst: &Tensor,
    at: (usize, usize),
    src: &Tensor,
    block: Block,
) -> Result<()> {
    copy_into_with(gpu, batch, dst, at, src, block, Activation::None)
}

/// [`copy_into`] applying `act` to each value on the way (F32 tensors; `Activation::None` copies
/// bits): one pass where a slice, an activation and a concatenation would take three.
pub fn copy_into_with(
    gpu: &Gpu,
    batch: &mut Batch,
    dst: &Tensor,
    at: (usize, usize),
    src: &Tensor,
    block: Block,
    act: Activation,
) -> Result<()> {
    const OP: &str = "copy_into";
    let (ds, ss) = (matrix(OP, dst)?, matrix(OP, src)?);
    same_format(OP, dst, src)?;
    if act != Activation::None && src.dtype() != DType::F32 {
        return Err(Error::UnsupportedFormat {
            op: OP,
            format: src.dtype().to_string(),
            why: format!("{act:?} applies to F32 values"),
        });
    }
    fits(OP, "source", ss, block)?;
    fits(OP, "destination", ds, Block { row0: at.0, col0: at.1, ..block })?;
    if Arc::ptr_eq(dst.buffer(), src.buffer()) {
        return Err(Error::InvalidArgument(format!("{OP}: source and destination share a buffer ({src:?}, {dst:?})")));
    }
    if block.rows == 0 || block.cols == 0 {
        return Ok(());
    }
    let info = gpu.info();
    let align = (info.storage_offset_alignment as usize).max(4);
    let limit = info.max_storage_binding as usize;
    // A chunk of k rows spans at most k · stride elements plus the slack of aligning its start down.
    let rows_within = |stride: usize| limit.saturating_sub(align) / (stride * 4);
    let per = rows_within(ss.1).min(rows_within(ds.1)).min(block.rows);
    if per == 0 {
        return Err(Error::LimitExceeded {
            what: format!("{OP}: one row of {src:?} or {dst:?} (bytes)"),
            needed: (ss.1.max(ds.1) * 4 + align) as u64,
            available: limit as u64,
        });
    }
    let u32_of = |v: usize| u32::try_from(v).map_err(|_| shape_err(OP, "sizes < 2^32", v));
    let mut r0 = 0;
    while r0 < block.rows {
        let k = per.min(block.rows - r0);
        let (s_off, s_len, s_first) = range(align, (block.row0 + r0) * ss.1 + block.col0, (k - 1) * ss.1 + block.cols);
        let (d_off, d_len, d_first) = range(align, (at.0 + r0) * ds.1 + at.1, (k - 1) * ds.1 + block.cols);
        let p = Params {
            rows: u32_of(k)?,
            cols: u32_of(block.cols)?,
            src_stride: u32_of(ss.1)?,
            src_offset: u32_of(s_first)?,
            dst_stride: u32_of(ds.1)?,
            dst_offset: u32_of(d_first)?,
            _pad: [0; 2],
        };
        u32_of(k * block.cols)?;
        let (wg, grid) = launch_1d(gpu, k * block.cols, WG);
        batch.dispatch(
            gpu,
            &SHADER,
            "copy_2d",
            &[("WG", wg as f64), ("ACT", act as u32 as f64)],
            &[
                Binding::Uniform(bytemuck::bytes_of(&p)),
                Binding::Range(src, s_off as u64, s_len as u64),
                Binding::Range(dst, d_off as u64, d_len as u64),
            ],
            grid,
        )?;
        r0 += k;
    }
    Ok(())
}

/// The bound byte range `(offset, length)` covering `span` elements from element `first`, with the offset
/// aligned down to `align`, and the element index of `first` inside that range.
fn range(align: usize, first: usize, span: usize) -> (usize, usize, usize) {
    let start = first * 4;
    let offset = start / align * align;
    (offset, start + span * 4 - offset, (start - offset) / 4)
}

/// Columns `start .. start + width` of `t` `[rows, cols]` → `[rows, width]`.
pub fn slice_cols(gpu: &Gpu, batch: &mut Batch, t: &Tensor, start: usize, width: usize) -> Result<Tensor> {
    let (rows, cols) = matrix("slice_cols", t)?;
    if width == 0 || start + width > cols {
        return Err(shape_err("slice_cols", format!("1 ≤ width and start + width ≤ {cols}"), (start, width)));
    }
    let out = gpu.empty(&[rows, width], t.dtype())?;
    copy_into(gpu, batch, &out, (0, 0), t, Block { row0: 0, col0: start, rows, cols: width })?;
    Ok(out)
}

/// Rows `start .. start + count` of `t` `[rows, cols]` → `[count, cols]` (e.g. the image tokens after
/// the single blocks, `x[L_txt:]`).
pub fn slice_rows(gpu: &Gpu, batch: &mut Batch, t: &Tensor, start: usize, count: usize) -> Result<Tensor> {
    let (rows, cols) = matrix("slice_rows", t)?;
    if count == 0 || start + count > rows {
        return Err(shape_err("slice_rows", format!("1 ≤ count and start + count ≤ {rows}"), (start, count)));
    }
    let out = gpu.empty(&[count, cols], t.dtype())?;
    copy_into(gpu, batch, &out, (0, 0), t, Block { row0: start, col0: 0, rows: count, cols })?;
    Ok(out)
}

/// `a` `[ra, cols]` on top of `b` `[rb, cols]` → `[ra + rb, cols]` (FLUX: text tokens, then image tokens).
pub fn concat_rows(gpu: &Gpu, batch: &mut Batch, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let ((ra, ca), (rb, cb)) = (matrix("concat_rows", a)?, matrix("concat_rows", b)?);
    same_format("concat_rows", a, b)?;
    if ca != cb {
        return Err(shape_err("concat_rows", format!("b [_, {ca}]"), b.shape()));
    }
    let out = gpu.empty(&[ra + rb, ca], a.dtype())?;
    copy_into(gpu, batch, &out, (0, 0), a, Block::all(a)?)?;
    copy_into(gpu, batch, &out, (ra, 0), b, Block::all(b)?)?;
    Ok(out)
}

/// `a` `[rows, ca]` beside `b` `[rows, cb]` → `[rows, ca + cb]` (single block: attention output first,
/// then the MLP activation, BFL `SingleStreamBlock.forward`, src/flux/modules/layers.py @ 802fb47).
pub fn concat_cols(gpu: &Gpu, batch: &mut Batch, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let ((ra, ca), (rb, cb)) = (matrix("concat_cols", a)?, matrix("concat_cols", b)?);
    same_format("concat_cols", a, b)?;
    if ra != rb {
        return Err(shape_err("concat_cols", format!("b [{ra}, _]"), b.shape()));
    }
    let out = gpu.empty(&[ra, ca + cb], a.dtype())?;
    copy_into(gpu, batch, &out, (0, 0), a, Block::all(a)?)?;
    copy_into(gpu, batch, &out, (0, ca), b, Block::all(b)?)?;
    Ok(out)
}

/// `t` `[rows, cols]` → `[cols, rows]` (the VAE attention's `[C, H·W]` ⇄ `[H·W, C]`, BFL `AttnBlock`,
/// src/flux/modules/autoencoder.py @ 802fb47). Whole tensors are bound: one larger than the storage binding
/// limit gives `LimitExceeded`.
pub fn transpose(gpu: &Gpu, batch: &mut Batch, t: &Tensor) -> Result<Tensor> {
    const OP: &str = "transpose";
    let (rows, cols) = matrix(OP, t)?;
    let n = u32::try_from(rows * cols).map_err(|_| shape_err(OP, "fewer than 2^32 elements", t.shape()))?;
    let limit = gpu.info().max_storage_binding;
    if t.gpu_bytes() > limit {
        return Err(Error::LimitExceeded {
            what: format!("{OP}: {t:?} in one storage binding (bytes)"),
            needed: t.gpu_bytes(),
            available: limit,
        });
    }
    let out = gpu.empty(&[cols, rows], t.dtype())?;
    if n == 0 {
        return Ok(out);
    }
    let p = Params {
        rows: rows as u32,
        cols: cols as u32,
        src_stride: 0,
        src_offset: 0,
        dst_stride: 0,
        dst_offset: 0,
        _pad: [0; 2],
    };
    let (wg, grid) = launch_1d(gpu, rows * cols, WG);
    batch.dispatch(
        gpu,
        &SHADER,
        "transpose",
        &[("WG", wg as f64)],
        &[Binding::Uniform(bytemuck::bytes_of(&p)), Binding::Tensor(t), Binding::Tensor(&out)],
        grid,
    )?;
    Ok(out)
}
