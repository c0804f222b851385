//! CPU dequantization of GGUF blocks, written straight from ggml's `dequantize_row_*`
//! (src/ggml-quants.c @ d99724f; block layouts in src/ggml-common.h @ d99724f). Reference for
//! `shaders/quant.wgsl`.

use half::{bf16, f16};

use crate::dtype::DType;
use crate::error::{Error, Result};

fn h(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// (scale, min) of sub-block `s` of a Q4_K/Q5_K super-block (ggml `get_scale_min_k4`).
fn scale_min_k4(sc: &[u8], s: usize) -> (f32, f32) {
    if s < 4 {
        ((sc[s] & 63) as f32, (sc[s + 4] & 63) as f32)
    } else {
        (((sc[s + 4] & 0xF) | ((sc[s - 4] >> 6) << 4)) as f32, ((sc[s + 4] >> 4) | ((sc[s] >> 6) << 4)) as f32)
    }
}

fn block(dtype: DType, b: &[u8], y: &mut [f32]) {
    match dtype {
        DType::Q8_0 => {
            let d = h(b, 0);
            for j in 0..32 {
                y[j] = d * (b[2 + j] as i8) as f32;
            }
        }
        DType::Q4_0 | DType::Q4_1 => {
            let (d, m, qs) =
                if dtype == DType::Q4_0 { (h(b, 0), 0.0, &b[2..18]) } else { (h(b, 0), h(b, 2), &b[4..20]) };
            let off = if dtype == DType::Q4_0 { -8.0 } else { 0.0 };
            for j in 0..16 {
                y[j] = d * ((qs[j] & 0xF) as f32 + off) + m;
                y[j + 16] = d * ((qs[j] >> 4) as f32 + off) + m;
            }
        }
        DType::Q5_0 | DType::Q5_1 => {
            let q1 = dtype == DType::Q5_1;
            let (d, m) = (h(b, 0), if q1 { h(b, 2) } else { 0.0 });
            let o = if q1 { 4 } else { 2 };
            let qh = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            let qs = &b[o + 4..o + 20];
            let off = if q1 { 0.0 } else { -16.0 };
            for j in 0..16 {
                let hb0 = ((qh >> j) & 1) as u8;
                let hb1 = ((qh >> (j + 16)) & 1) as u8;
                y[j] = d * (((qs[j] & 0xF) | (hb0 << 4)) as f32 + off) + m;
                y[j + 16] = d * (((qs[j] >> 4) | (hb1 << 4)) as f32 + off) + m;
            }
        }
        DType::Q4K | DType::Q5K => {
            let (d, dmin) = (h(b, 0), h(b, 2));
            let sc = &b[4..16];
            let (qh, qs) = if dtype == DType::Q5K { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
            for c in 0..4 {
                let (s0, m0) = scale_min_k4(sc, 2 * c);
                let (s1, m1) = scale_min_k4(sc, 2 * c + 1);
                for l in 0..32 {
                    let q = qs[32 * c + l];
                    let (mut lo, mut hi) = ((q & 0xF) as f32, (q >> 4) as f32);
                    if dtype == DType::Q5K {
                        lo += 16.0 * ((qh[l] >> (2 * c)) & 1) as f32;
                        hi += 16.0 * ((qh[l] >> (2 * c + 1)) & 1) as f32;
                    }
                    y[64 * c + l] = d * s0 * lo - dmin * m0;
                    y[64 * c + 32 + l] = d * s1 * hi - dmin * m1;
                }
            }
        }
        DType::Q6K => {
            let d = h(b, 208);
            for n in 0..2 {
                let ql = &b[64 * n..];
                let qh = &b[128 + 32 * n..];
                let s = &b[192 + 8 * n..];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    let sc = |k: usize| (s[is + k] as i8) as f32;
                    y[128 * n + l] = d * sc(0) * q1 as f32;
                    y[128 * n + l + 32] = d * sc(2) * q2 as f32;
                    y[128 * n + l + 64] = d * sc(4) * q3 as f32;
                    y[128 * n + l + 96] = d * sc(6) * q4 as f32;
                }
            }
        }
        _ => {}
    }
}

/// Dequantizes `data` in the file layout of `dtype` (GGUF blocks, or little-endian F32/F16/BF16).
pub fn dequantize(dtype: DType, data: &[u8]) -> Result<Vec<f32>> {
    let bb = dtype.gguf_block_bytes();
    if !data.len().is_multiple_of(bb) {
        return Err(Error::ShapeMismatch {
            op: "dequantize",
            expected: format!("a multiple of {bb} bytes"),
            got: format!("{} bytes", data.len()),
        });
    }
    Ok(match dtype {
        DType::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        DType::F16 => data.chunks_exact(2).map(|c| h(c, 0)).collect(),
        DType::BF16 => data.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::U32 => {
            return Err(Error::UnsupportedFormat {
                op: "dequantize",
                format: "U32".into(),
                why: "not a weight format".into(),
            })
        }
        q => {
            let n = q.block_elems();
            let mut y = vec![0.0; data.len() / bb * n];
            for (src, dst) in data.chunks_exact(bb).zip(y.chunks_exact_mut(n)) {
                block(q, src, dst);
            }
            y
        }
    })
}
