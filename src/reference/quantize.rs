//! CPU reference of `shaders/quantize.wgsl`: f32 values → F16 / Q8_0 / Q4_0 in the *file* layout
//! (little-endian halves; GGUF blocks, ggml `block_q8_0` / `block_q4_0` in src/ggml-common.h @ d99724f), so
//! the result can be written to a GGUF file, dequantized with `reference::quant::dequantize` and repacked for
//! the GPU with
//! `weights::repack::repack`.
//!
//! Q8_0 and Q4_0 are ggml's reference quantizers, statement for statement in f32 (Rust neither
//! fuses nor reorders float operations), e.g. ggml-quants.c `quantize_row_q8_0_ref`:
//! `d = amax / 127; id = d ? 1/d : 0; qs[j] = roundf(x[j]·id)`, and `quantize_row_q4_0_ref`:
//! `max` = the signed value of largest magnitude (first on ties), `d = max / -8; id = d ? 1/d : 0;
//! q = MIN(15, (int8_t)(x·id + 8.5f))`, byte j = q[j] | q[j+16] << 4; `d` stored as f16 (round to
//! nearest even). One deliberate difference: a block whose largest magnitude is below [`TINY`]
//! (2^-100) is stored as `d = 0` with the codes of an all-zero block (0 for Q8_0, 8 for Q4_0), where
//! ggml's `1/d` overflows to inf for the smallest of them; its stored f16 `d` is 0 either way.

use half::f16;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Largest magnitude below which a block counts as zero (2^-100).
pub const TINY: f32 = 7.888_609e-31;

fn block_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let (d, id) = if amax >= TINY {
        let d = amax / 127.0;
        (d, 1.0 / d)
    } else {
        (0.0, 0.0)
    };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    // roundf: halves away from zero (f32::round); the clamp never acts for finite inputs.
    out.extend(x.iter().map(|v| ((v * id).round().clamp(-127.0, 127.0) as i8) as u8));
}

fn block_q4_0(x: &[f32], out: &mut Vec<u8>) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let (d, id) = if amax >= TINY {
        let d = max / -8.0;
        (d, 1.0 / d)
    } else {
        (0.0, 0.0)
    };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    // (int8_t) truncates toward zero; `as i8` does too (and saturates, irrelevant in range).
    let code = |v: f32| ((v * id + 8.5) as i8).clamp(0, 15) as u8;
    out.extend((0..16).map(|j| code(x[j]) | (code(x[j + 16]) << 4)));
}

/// `x` → `dtype` (F16, Q8_0 or Q4_0) in the file layout. Quantized formats need `x.len()` to be a
/// multiple of 32; blocks are consecutive runs of 32 values (rows must be whole blocks).
pub fn quantize(dtype: DType, x: &[f32]) -> Result<Vec<u8>> {
    let block: fn(&[f32], &mut Vec<u8>) = match dtype {
        DType::F16 => return Ok(x.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect()),
        DType::Q8_0 => block_q8_0,
        DType::Q4_0 => block_q4_0,
        other => {
            return Err(Error::UnsupportedFormat {
                op: "quantize",
                format: other.to_string(),
                why: "the reference writes F16, Q8_0 or Q4_0".into(),
            })
        }
    };
    if !x.len().is_multiple_of(32) {
        return Err(Error::ShapeMismatch {
            op: "quantize",
            expected: "a multiple of 32 values".into(),
            got: format!("{}", x.len()),
        });
    }
    let mut out = Vec::with_capacity(x.len() / 32 * dtype.gguf_block_bytes());
    for b in x.chunks_exact(32) {
        block(b, &mut out);
    }
    Ok(out)
}
