//! F8 decoding (safetensors `Dtype::F8_E4M3` / `F8_E5M2`, huggingface/safetensors
//! safetensors/src/tensor.rs @ 24b0b28) and ComfyUI "scaled fp8" checkpoints (the `scaled_fp8` marker:
//! `model_config_from_unet`, ComfyUI comfy/model_detection.py @ d415a44): an F8_E4M3 weight `<layer>.weight`
//! with an F32 scalar `<layer>.scale_weight` holds the real weight `fp8_value · scale_weight`. ComfyUI
//! (`comfy/ops.py`, `scaled_fp8_ops`) makes
//! `scale_weight` a 0-d F32 parameter (default 1), an optional 0-d `scale_input` that only its fp8
//! matmul path uses to quantize activations, and marks the file with a `scaled_fp8` tensor whose
//! dtype names the fp8 format. We compute in F16/F32, so only `scale_weight` matters: it is applied
//! while the F8 bytes are widened to F16 (`load::load_tensor*`), before any conversion.
//!
//! Other scale schemes (per-channel or block-wise `scale_weight`, `weight_scale` / `input_scale`
//! from other fp8 exporters, ComfyUI's newer `comfy_quant` layers) would silently load wrong
//! weights if ignored, so they are `Error::UnsupportedFormat` naming the tensor.

use half::f16;

use super::load::{read_floats, ByteSource};
use super::tensor_info::{FileDType, TensorInfo, WeightsHeader};
use crate::error::{Error, Result};

/// F8_E4M3 (`float8_e4m3fn`, the E4M3 of arXiv 2209.05433 that safetensors' `Dtype::F8_E4M3` cites,
/// safetensors/src/tensor.rs @ 24b0b28): bias 7, no infinities, 0x7F/0xFF NaN, subnormals `m · 2^-9`.
pub fn f8_e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = ((b >> 3) & 0xF, (b & 7) as f32);
    if e == 15 && m == 7.0 {
        return f32::NAN;
    }
    let mag = if e == 0 { m * 2f32.powi(-9) } else { (1.0 + m / 8.0) * 2f32.powi(e as i32 - 7) };
    sign * mag
}

/// F8_E5M2: the top byte of an IEEE half.
pub fn f8_e5m2_to_f32(b: u8) -> f32 {
    f16::from_bits((b as u16) << 8).to_f32()
}

/// F8 bytes → little-endian F16 bytes, padded to whole 32-bit words. Exact:
/// every E4M3 and E5M2 value is an F16 value. Done on the CPU for now; a GPU
/// conversion kernel (upload the F8 bytes, widen there) is a later step.
pub fn f8_to_f16(dtype: FileDType, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(2) * 4);
    for &b in bytes {
        let h = match dtype {
            FileDType::F8E5M2 => (b as u16) << 8,
            _ => f16::from_f32(f8_e4m3_to_f32(b)).to_bits(),
        };
        out.extend_from_slice(&h.to_le_bytes());
    }
    out.resize(out.len().div_ceil(4) * 4, 0);
    out
}

/// [`f8_to_f16`] of `fp8 · scale`, the product formed in f32 and rounded once to F16 (relative
/// error ≤ 2⁻¹¹ for normal results). A product beyond F16's range (|x| > 65504) is an error
/// rather than an infinity in the weights.
pub fn f8_to_f16_scaled(dtype: FileDType, bytes: &[u8], scale: f32, what: &str) -> Result<Vec<u8>> {
    if scale == 1.0 {
        return Ok(f8_to_f16(dtype, bytes));
    }
    let mut out = Vec::with_capacity(bytes.len().div_ceil(2) * 4);
    for &b in bytes {
        let v = match dtype {
            FileDType::F8E5M2 => f8_e5m2_to_f32(b),
            _ => f8_e4m3_to_f32(b),
        } * scale;
        if v.abs() > 65504.0 {
            return Err(Error::UnsupportedFormat {
                op: "load weights",
                format: format!("scaled {dtype}"),
                why: format!("{what}: fp8 value × scale_weight {scale} = {v} does not fit in F16"),
            });
        }
        out.extend_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
    }
    out.resize(out.len().div_ceil(4) * 4, 0);
    Ok(out)
}

/// Sibling tensors that scale a weight in schemes we do not implement.
const UNKNOWN_SCALES: [&str; 5] = ["weight_scale", "weight_scale_2", "input_scale", "comfy_quant", "scale"];

fn unsupported(file: &str, name: &str, why: String) -> Error {
    Error::UnsupportedFormat {
        op: "load weights",
        format: "scaled weights".into(),
        why: format!("`{name}` in `{file}`: {why}"),
    }
}

/// The scale `info` (a `<layer>.weight`) must be multiplied by: `Ok(1.0)` for an unscaled tensor,
/// the value of `<layer>.scale_weight` in a ComfyUI scaled-fp8 file. Errors: a `scale_weight`
/// that is not a single float, a scale ≠ 1 on a weight that is not F8, a sibling of another
/// scaling scheme (`weight_scale`, `input_scale`, `comfy_quant`, ...).
pub fn weight_scale(src: &mut dyn ByteSource, header: &WeightsHeader, info: &TensorInfo) -> Result<f32> {
    let Some(layer) = info.name.strip_suffix(".weight") else { return Ok(1.0) };
    let file = &header.file;
    for other in UNKNOWN_SCALES {
        let name = format!("{layer}.{other}");
        // `<x>.scale` is also an ordinary parameter (BFL's RMSNorm `query_norm.scale`); it only
        // means a weight scale next to a quantized-looking (F8 / integer) weight.
        let f8 = matches!(info.dtype, FileDType::F8E4M3 | FileDType::F8E5M2 | FileDType::Other { .. });
        if header.tensor(&name).is_some() && (other != "scale" || f8) {
            return Err(unsupported(file, &name, format!("a `{other}` tensor scales `{}` in a scheme this loader does not implement (only ComfyUI's per-tensor `scale_weight`)", info.name)));
        }
    }
    let Some(s) = header.tensor(&format!("{layer}.scale_weight")) else { return Ok(1.0) };
    if s.numel() != 1 {
        return Err(unsupported(file, &s.name, format!("shape {:?}: only a per-tensor (single-value) scale_weight is supported, not per-channel or block-wise scales", s.shape)));
    }
    let values = read_floats(src, s)?
        .ok_or_else(|| unsupported(file, &s.name, format!("a scale must be a float, not {}", s.dtype)))?;
    let scale = values.first().copied().unwrap_or(1.0);
    if !scale.is_finite() {
        return Err(unsupported(file, &s.name, format!("scale {scale} is not finite")));
    }
    if scale != 1.0 && !matches!(info.dtype, FileDType::F8E4M3 | FileDType::F8E5M2) {
        return Err(unsupported(
            file,
            &s.name,
            format!("scale {scale} on a {} weight (scaled weights must be F8)", info.dtype),
        ));
    }
    Ok(scale)
}

/// Whether `header` is a ComfyUI scaled-fp8 file (a `scaled_fp8` marker tensor, under any
/// prefix, or any `*.scale_weight`).
pub fn is_scaled_fp8(header: &WeightsHeader) -> bool {
    header
        .tensors
        .iter()
        .any(|t| t.name == "scaled_fp8" || t.name.ends_with(".scaled_fp8") || t.name.ends_with(".scale_weight"))
}
