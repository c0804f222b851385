//! Wrapper for `shaders/quantize.wgsl`: F32/F16/BF16 tensors → F16, Q8_0 or Q4_0 in our GPU layout
//! (`src/dtype.rs`), on the GPU, so a BF16 checkpoint can be loaded quantized while it streams
//! (`weights::load::load_tensor_as`). Quantization is bit-identical to ggml's `quantize_row_q8_0_ref` /
//! `quantize_row_q4_0_ref` (see the shader's header for how, and for blocks below 2^-100).
//! Reference: `reference::quantize`.
//!
//! Tensors larger than one storage binding are converted in several dispatches over byte ranges of
//! the input and the output, never rejected.

use bytemuck::{Pod, Zeroable};

use super::{launch_1d, shape_err, Variant};
use crate::error::{Error, Result};
use crate::gpu::{Batch, Binding, DType, Gpu, ShaderSpec, Tensor};

pub static SHADER: ShaderSpec = ShaderSpec {
    name: "quantize",
    sources: &[include_str!("../../shaders/quant.wgsl"), include_str!("../../shaders/quantize.wgsl")],
    needs_f16: false,
    needs_subgroups: false,
};

/// Input formats the kernel reads.
pub const SOURCES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
/// Output formats it writes.
pub const TARGETS: [DType; 3] = [DType::F16, DType::Q8_0, DType::Q4_0];

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    items: u32,
    n: u32,
    dst_word: u32,
    _pad: u32,
}

fn entry(target: DType) -> &'static str {
    match target {
        DType::Q8_0 => "to_q8_0",
        DType::Q4_0 => "to_q4_0",
        _ => "to_f16",
    }
}

pub fn variants() -> Vec<Variant> {
    TARGETS
        .iter()
        .flat_map(|t| {
            SOURCES.iter().map(move |s| Variant::new(entry(*t), &[("FORMAT", s.shader_id() as f64), ("WG", WG as f64)]))
        })
        .collect()
}

/// Elements one output unit covers (a word of two halves, or a block) and its words.
fn unit(target: DType) -> (usize, usize) {
    match target {
        DType::F16 => (2, 1),
        q => (q.block_elems(), q.gpu_block_words()),
    }
}

fn check_formats(op: &'static str, source: DType, target: DType) -> Result<()> {
    if !SOURCES.contains(&source) {
        return Err(Error::UnsupportedFormat {
            op,
            format: source.to_string(),
            why: "the input must be F32, F16 or BF16".into(),
        });
    }
    if !TARGETS.contains(&target) {
        return Err(Error::UnsupportedFormat {
            op,
            format: target.to_string(),
            why: "the output must be F16, Q8_0 or Q4_0".into(),
        });
    }
    Ok(())
}

/// `x` (F32, F16 or BF16, any shape) converted to `target` (F16, Q8_0 or Q4_0). F16 keeps the shape;
/// the quantized formats need the innermost dimension to be a multiple of 32 (blocks run along it)
/// and give `[rows, innermost]`, the loader's shape for quantized weights.
pub fn quantize(gpu: &Gpu, batch: &mut Batch, x: &Tensor, target: DType) -> Result<Tensor> {
    check_formats("quantize", x.dtype(), target)?;
    let shape = if target.is_quantized() {
        if !x.dim_rev(0).is_multiple_of(target.block_elems()) {
            return Err(shape_err(
                "quantize",
                format!("an innermost dimension that is a multiple of 32 for {target}"),
                x.shape(),
            ));
        }
        vec![x.rows(), x.dim_rev(0)]
    } else {
        x.shape().to_vec()
    };
    let y = gpu.empty(&shape, target)?;
    quantize_into(gpu, batch, x, &y, 0)?;
    Ok(y)
}

/// Converts all of `x` (F32, F16 or BF16; its elements in flat order) into `dst` (F16, Q8_0 or Q4_0;
/// the format is `dst`'s) from element `offset` of `dst` on: the streaming form, where `x` is one
/// chunk of a tensor being loaded. For Q8_0/Q4_0, `offset` and `x.numel()` must be multiples of 32 and
/// `dst`'s innermost dimension too (so blocks never straddle rows); for F16, `offset` must be even and
/// an odd `x.numel()` must end at the end of `dst` (a word holds two elements).
pub fn quantize_into(gpu: &Gpu, batch: &mut Batch, x: &Tensor, dst: &Tensor, offset: usize) -> Result<()> {
    let (source, target) = (x.dtype(), dst.dtype());
    check_formats("quantize_into", source, target)?;
    let (ue, uw) = unit(target);
    let n = x.numel();
    let end = offset.checked_add(n).filter(|&e| e <= dst.numel());
    let fits = match target {
        DType::F16 => offset.is_multiple_of(2) && (n.is_multiple_of(2) || end == Some(dst.numel())),
        _ => offset.is_multiple_of(ue) && n.is_multiple_of(ue) && dst.dim_rev(0).is_multiple_of(ue),
    };
    if end.is_none() || !fits {
        return Err(shape_err(
            "quantize_into",
            format!(
                "{n} elements placed at element {offset} of a {target} tensor {:?} on whole {target} units",
                dst.shape()
            ),
            format!("offset {offset}, input {:?}", x.shape()),
        ));
    }
    // One dispatch covers a piece of `step`-multiple elements: input byte offsets then stay aligned
    // to the storage offset alignment; the output range is bound from an aligned word below its start.
    let info = gpu.info();
    let align = info.storage_offset_alignment.max(4) as usize;
    let eb = if source == DType::F32 { 4 } else { 2 };
    let step = ue * align;
    let limit = info.max_storage_binding as usize;
    let out_per_step = step / ue * uw * 4;
    let steps = (limit / (step * eb)).min(limit.saturating_sub(align) / out_per_step);
    if steps == 0 {
        return Err(Error::LimitExceeded {
            what: "quantize: storage binding (bytes)".into(),
            needed: (step * eb) as u64,
            available: limit as u64,
        });
    }
    let piece = steps * step;
    let too_big = |v: usize| u32::try_from(v).map_err(|_| shape_err("quantize_into", "< 2^32 elements per piece", v));
    let mut start = 0;
    while start < n {
        let len = piece.min(n - start);
        let items = len.div_ceil(ue);
        let out_byte = (offset + start) / ue * uw * 4;
        let bound_at = out_byte / align * align;
        let out_len = (out_byte - bound_at + items * uw * 4) as u64;
        let p =
            Params { items: too_big(items)?, n: too_big(len)?, dst_word: too_big((out_byte - bound_at) / 4)?, _pad: 0 };
        let (wg, grid) = launch_1d(gpu, items, WG);
        batch.dispatch(
            gpu,
            &SHADER,
            entry(target),
            &[("FORMAT", source.shader_id() as f64), ("WG", wg as f64)],
            &[
                Binding::Uniform(bytemuck::bytes_of(&p)),
                Binding::Range(x, (start * eb) as u64, source.gpu_bytes(len) as u64),
                Binding::Range(dst, bound_at as u64, out_len),
            ],
            grid,
        )?;
        start += len;
    }
    Ok(())
}
