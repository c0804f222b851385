//! GGUF block bytes → the GPU layout of `DType` (see `src/gpu/dtype.rs` and
//! `shaders/quant.wgsl`). GGUF blocks are 18, 34, 210… bytes long, so they do
//! not start on 4-byte boundaries; on the GPU every block is padded to whole
//! 32-bit words with its scale(s) in the first word.

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Converts `data` (a whole number of GGUF blocks of `dtype`, or plain
/// little-endian F32/F16/BF16 values) into the GPU layout.
pub fn repack(dtype: DType, data: &[u8]) -> Result<Vec<u8>> {
    let bb = dtype.gguf_block_bytes();
    if !data.len().is_multiple_of(bb) {
        return Err(Error::ShapeMismatch {
            op: "repack",
            expected: format!("a multiple of {bb} bytes ({dtype} blocks)"),
            got: format!("{} bytes", data.len()),
        });
    }
    if !dtype.is_quantized() {
        let mut out = data.to_vec();
        out.resize(data.len().div_ceil(4) * 4, 0);
        return Ok(out);
    }
    let words = dtype.gpu_block_words();
    let mut out = vec![0u8; data.len() / bb * words * 4];
    for (src, dst) in data.chunks_exact(bb).zip(out.chunks_exact_mut(words * 4)) {
        repack_block(dtype, src, dst);
    }
    Ok(out)
}

/// One block: `dst` is `gpu_block_words * 4` zeroed bytes.
fn repack_block(dtype: DType, src: &[u8], dst: &mut [u8]) {
    match dtype {
        // [d f16 | qs] → [d, pad | qs]
        DType::Q8_0 | DType::Q4_0 | DType::Q5_0 => {
            dst[0..2].copy_from_slice(&src[0..2]);
            dst[4..4 + src.len() - 2].copy_from_slice(&src[2..]);
        }
        // Already word-aligned fields: [d, m | ...], [d, dmin | scales | (qh) | qs].
        DType::Q4_1 | DType::Q5_1 | DType::Q4K | DType::Q5K => dst[..src.len()].copy_from_slice(src),
        // [ql 128 | qh 64 | scales 16 | d 2] → [d, pad | ql | qh | scales]
        DType::Q6K => {
            dst[0..2].copy_from_slice(&src[208..210]);
            dst[4..212].copy_from_slice(&src[0..208]);
        }
        _ => dst[..src.len()].copy_from_slice(src),
    }
}
