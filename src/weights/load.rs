//! From a parsed header and a source of byte ranges (`bytes::ByteSource`: a file, memory, HTTP
//! Range requests, the browser's cache) to GPU tensors, one tensor at a time and in chunks.
//!
//! Memory bound: loading a tensor holds at most one chunk of file bytes
//! (`CHUNK_BYTES` = 16 MiB) plus its converted form (≤ 2 chunks: F8 → F16
//! doubles, repacking grows blocks by ≤ 12%), i.e. ≤ 48 MiB whatever the
//! tensor or model size; each chunk's staged GPU write is flushed (an empty
//! submit) before the next is read, so wgpu's staging memory is bounded by
//! the same chunk. Reading a header holds the header bytes (≤ `MAX_HEADER_BYTES`).
//!
//! Conversion while loading (`load_tensor_as`, [`Convert`]): a float tensor can
//! become F16, Q8_0 or Q4_0 on the GPU (`kernels::quantize`, bit-identical to
//! ggml's reference quantizers), so a 24 GB BF16 checkpoint takes ~13.5 GB as
//! Q8_0 or ~7.5 GB as Q4_0 on the GPU (blocks padded to words: 36 and 20 bytes
//! per 32 weights) and is never resident in its source format. Chunks
//! are whole rows (whole blocks or element pairs when one row exceeds a chunk);
//! each is uploaded in its source format (F8 widened to F16 on the CPU first)
//! into a scratch tensor and converted by one kernel dispatch into its place in
//! the destination, then submitted before the next chunk is read. The bound is
//! then the destination tensor plus ~2 chunks: on the CPU the file bytes and
//! their repacked/widened copy (≤ 3 × `CHUNK_BYTES` for F8), on the GPU one
//! scratch chunk (≤ 2 × `CHUNK_BYTES`) plus wgpu's staging copy of it; the
//! scratch buffer returns to the pool and is reused by the next chunk.

use half::f16;

pub use super::bytes::{ByteSource, FileSource, MemSource};
pub use super::fp8::{f8_e4m3_to_f32, f8_e5m2_to_f32, f8_to_f16};
use super::fp8::{f8_to_f16_scaled, weight_scale};
use super::gguf::parse_gguf_header;
use super::repack::repack;
use super::safetensors::parse_safetensors_header;
use super::tensor_info::{malformed, unsupported, FileDType, Parsed, TensorInfo, WeightsHeader};
use super::upload::now;
pub use super::upload::{Pacer, Uploads, PACE_BYTES};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};
use crate::kernels::quantize::quantize_into;

/// Largest read issued while loading a tensor.
pub const CHUNK_BYTES: usize = 16 << 20;
/// First read when looking for a header (a FLUX safetensors header is ~100 KB).
pub const FIRST_FETCH: usize = 1 << 20;

/// Parses a header of either format from a prefix (GGUF if it starts with
/// the magic `GGUF`, else safetensors).
pub fn parse_header(prefix: &[u8], file_len: u64, name: &str) -> Result<Parsed> {
    if prefix.len() < 8 && (prefix.len() as u64) < file_len {
        return Ok(Parsed::NeedMore(file_len.min(8)));
    }
    if prefix.starts_with(b"GGUF") {
        parse_gguf_header(prefix, file_len, name)
    } else {
        parse_safetensors_header(prefix, file_len, name)
    }
}

/// Reads and parses a header: `FIRST_FETCH` bytes, then more while the
/// parser asks for them.
pub fn read_header(src: &mut dyn ByteSource) -> Result<WeightsHeader> {
    let (len, name) = (src.len(), src.name().to_string());
    let mut prefix = src.read_range(0, len.min(FIRST_FETCH as u64) as usize)?;
    loop {
        match parse_header(&prefix, len, &name)? {
            Parsed::Header(h) => return Ok(h),
            Parsed::NeedMore(n) if n > prefix.len() as u64 && n <= len => {
                let more = src.read_range(prefix.len() as u64, (n - prefix.len() as u64) as usize)?;
                prefix.extend_from_slice(&more);
            }
            Parsed::NeedMore(n) => {
                return Err(malformed(&name, format!("the parser asked for {n} bytes of a {len}-byte file")))
            }
        }
    }
}

fn to_usize(file: &str, what: &str, v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::LimitExceeded {
        what: format!("{what} in `{file}`"),
        needed: v,
        available: usize::MAX as u64,
    })
}

/// The shape and format a tensor gets on the GPU: floats keep the PyTorch
/// shape; quantized weights become `[rows, ne0]` (ne0 = the innermost
/// dimension, the one blocks run along); F8 becomes F16.
pub fn gpu_layout(file: &str, info: &TensorInfo) -> Result<(Vec<usize>, DType)> {
    let shape = info.shape.iter().map(|&d| to_usize(file, &info.name, d)).collect::<Result<Vec<_>>>()?;
    match info.dtype {
        FileDType::Gpu(d) if d.is_quantized() => {
            let ne0 = shape.last().copied().unwrap_or(1);
            let rows = to_usize(file, &info.name, info.numel())?.checked_div(ne0).unwrap_or(0);
            Ok((vec![rows, ne0], d))
        }
        FileDType::Gpu(d) => Ok((shape, d)),
        FileDType::F8E4M3 | FileDType::F8E5M2 => Ok((shape, DType::F16)),
        FileDType::Other { .. } => Err(unsupported(file, info)),
    }
}

/// Loads one tensor of `header` from `src` onto the GPU (see `gpu_layout`).
/// A ComfyUI scaled-fp8 weight (`<layer>.scale_weight` in `header`) is multiplied by its scale
/// while it widens to F16 (`weights::fp8`); other scale schemes are `UnsupportedFormat`.
pub fn load_tensor(gpu: &Gpu, src: &mut dyn ByteSource, header: &WeightsHeader, info: &TensorInfo) -> Result<Tensor> {
    let scale = weight_scale(src, header, info)?;
    load_chunked(gpu, src, &header.file, info, CHUNK_BYTES, scale)
}

/// `load_tensor` with reads of at most `chunk_bytes` (rounded down to whole
/// blocks, at least one block); no weight scale is applied (the caller has no header).
pub fn load_tensor_chunked(
    gpu: &Gpu,
    src: &mut dyn ByteSource,
    file: &str,
    info: &TensorInfo,
    chunk_bytes: usize,
) -> Result<Tensor> {
    load_chunked(gpu, src, file, info, chunk_bytes, 1.0)
}

fn load_chunked(
    gpu: &Gpu,
    src: &mut dyn ByteSource,
    file: &str,
    info: &TensorInfo,
    chunk_bytes: usize,
    scale: f32,
) -> Result<Tensor> {
    load_as_chunked(gpu, src, file, info, Convert::Keep, chunk_bytes, scale)
}

/// Writes `info`'s bytes as stored (repacked, F8 widened) into `dst` from element `offset` on.
#[allow(clippy::too_many_arguments)]
async fn fill_stored(
    gpu: &Gpu,
    src: &mut dyn ByteSource,
    file: &str,
    info: &TensorInfo,
    chunk_bytes: usize,
    scale: f32,
    dst: &Tensor,
    offset: usize,
    pace: &mut Pacer,
) -> Result<()> {
    // Every chunk must land on a whole GPU word: whole blocks for quantized
    // formats, 4 bytes for floats, 2 F8 bytes (= one F16 word).
    let unit = match info.dtype {
        FileDType::Gpu(d) if d.is_quantized() => d.gguf_block_bytes(),
        FileDType::F8E4M3 | FileDType::F8E5M2 => 2,
        _ => 4,
    };
    let chunk = (chunk_bytes / unit).max(1) * unit;
    let (mut done, mut at) = (0u64, dst.dtype().gpu_bytes(offset) as u64);
    while done < info.size {
        let n = chunk.min(to_usize(file, &info.name, info.size - done)?);
        let bytes = pace.read(src, info.offset + done, n).await?;
        let converted = match info.dtype {
            FileDType::Gpu(d) => repack(d, &bytes)?,
            FileDType::F8E4M3 | FileDType::F8E5M2 => f8_to_f16_scaled(info.dtype, &bytes, scale, &info.name)?,
            FileDType::Other { .. } => return Err(unsupported(file, info)),
        };
        gpu.write_buffer(dst.buffer(), at, &converted)?;
        // An empty submission flushes the staged write, bounding wgpu's staging memory.
        gpu.submit(gpu.batch())?;
        pace.wrote(gpu, converted.len()).await?;
        at += converted.len() as u64;
        done += n as u64;
    }
    Ok(())
}

/// What [`load_tensor_as`] does with a tensor's element format. Named `keep`, `f16`, `q8_0`,
/// `q4_0` (the studio's form, the worker's messages, the CLI's `--convert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Convert {
    /// As stored (F8 becomes F16), exactly [`load_tensor`].
    #[default]
    Keep,
    /// Float sources (F32, BF16) to F16, on the GPU.
    F16,
    /// Float sources quantized to Q8_0 (ggml `quantize_row_q8_0_ref`), on the GPU.
    Q8_0,
    /// Float sources quantized to Q4_0 (ggml `quantize_row_q4_0_ref`), on the GPU.
    Q4_0,
}

impl std::str::FromStr for Convert {
    type Err = Error;

    fn from_str(s: &str) -> Result<Convert> {
        serde_json::from_value(serde_json::Value::String(s.into()))
            .map_err(|_| Error::InvalidArgument(format!("unknown weight conversion `{s}` (keep, f16, q8_0 or q4_0)")))
    }
}

impl Convert {
    /// The GPU format the conversion produces (`None` for `Keep`).
    pub fn target(self) -> Option<DType> {
        match self {
            Convert::Keep => None,
            Convert::F16 => Some(DType::F16),
            Convert::Q8_0 => Some(DType::Q8_0),
            Convert::Q4_0 => Some(DType::Q4_0),
        }
    }

    /// The conversion a model loader should apply to `info` when the user asked for `requested`:
    /// only 2-D matrices stored as floats (F32, F16, BF16, F8) are converted. Q8_0/Q4_0 go to
    /// matrices whose rows are whole 32-element blocks; other matrices (an embedder of width 24, say)
    /// become F16 instead. Vectors and other ranks (biases, norm scales) and already-quantized
    /// tensors are kept as stored.
    pub fn for_tensor(info: &TensorInfo, requested: Convert) -> Convert {
        let float = matches!(
            info.dtype,
            FileDType::Gpu(DType::F32 | DType::F16 | DType::BF16) | FileDType::F8E4M3 | FileDType::F8E5M2
        );
        match (info.shape.as_slice(), requested) {
            (_, Convert::Keep) => Convert::Keep,
            ([_, _], _) if !float => Convert::Keep,
            ([_, k], Convert::Q8_0 | Convert::Q4_0) if k % 32 != 0 => Convert::F16,
            ([_, _], c) => c,
            _ => Convert::Keep,
        }
    }
}

/// Options of model loaders (e.g. `FluxModel::load_with`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Applied per tensor through [`Convert::for_tensor`].
    pub convert: Convert,
}

/// Loads one tensor converted as `convert` asks (see the module doc for streaming and memory):
/// - `Keep`, or a target equal to what the tensor loads as anyway (F16 from F16 or F8): [`load_tensor`].
/// - F32/F16/BF16/F8 sources to F16 (same shape) or to Q8_0/Q4_0 (shape `[rows, innermost]`, the
///   loader's shape for quantized weights); Q8_0/Q4_0 need an innermost dimension that is a
///   multiple of 32, else `Error::ShapeMismatch` naming the tensor ([`Convert::for_tensor`] never asks).
/// - Already-quantized sources (GGUF Q4_0…Q6_K) are kept as stored whatever `convert` says:
///   re-quantizing would only lose precision, and dequantizing to F16 would only cost memory.
/// - A ComfyUI scaled-fp8 weight is scaled while it widens, before any conversion (as [`load_tensor`]).
pub fn load_tensor_as(
    gpu: &Gpu,
    src: &mut dyn ByteSource,
    header: &WeightsHeader,
    info: &TensorInfo,
    convert: Convert,
) -> Result<Tensor> {
    let scale = weight_scale(src, header, info)?;
    load_as_chunked(gpu, src, &header.file, info, convert, CHUNK_BYTES, scale)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// [`load_tensor_as`] with reads of at most `chunk_bytes` file bytes (at least one block or element pair);
/// no weight scale is applied (the caller has no header).
pub fn load_tensor_as_chunked(
    gpu: &Gpu,
    src: &mut dyn ByteSource,
    file: &str,
    info: &TensorInfo,
    convert: Convert,
    chunk_bytes: usize,
) -> Result<Tensor> {
    load_as_chunked(gpu, src, file, info, convert, chunk_bytes, 1.0)
}

fn load_as_chunked(
    gpu: &Gpu,
    src: &mut dyn ByteSource,
    file: &str,
    info: &TensorInfo,
    convert: Convert,
    chunk_bytes: usize,
    scale: f32,
) -> Result<Tensor> {
    let (shape, dtype) = converted_layout(file, info, convert)?;
    let t = gpu.empty(&shape, dtype)?;
    now(fill(gpu, src, file, info, convert, chunk_bytes, scale, &t, 0, &mut Pacer::never()))?;
    Ok(t)
}

/// The GPU shape and format `info` takes once loaded as `convert` asks (see [`load_tensor_as`]).
pub fn converted_layout(file: &str, info: &TensorInfo, convert: Convert) -> Result<(Vec<usize>, DType)> {
    let (shape, stored) = gpu_layout(file, info)?;
    let target = match convert.target() {
        Some(t) if !stored.is_quantized() && t != stored => t,
        _ => return Ok((shape, stored)),
    };
    if !target.is_quantized() {
        return Ok((shape, target));
    }
    let row = shape.last().copied().unwrap_or(1).max(1);
    if !row.is_multiple_of(target.block_elems()) {
        return Err(Error::ShapeMismatch {
            op: "load_tensor_as",
            expected: format!("rows of whole {}-element blocks to make {target}", target.block_elems()),
            got: format!("`{}` {:?} in `{file}`", info.name, info.shape),
        });
    }
    let numel: usize = shape.iter().product();
    Ok((vec![numel / row, row], target))
}

/// Loads `info` (converted as `convert` asks) into rows of `dst`, starting at row `first_row`:
/// how a fused projection (q | k | v | mlp) is assembled from split parts on the GPU, one part at
/// a time, so that the fused matrix never exists in the CPU's (wasm's) memory. `dst` must have the
/// format and row width `info` loads as ([`converted_layout`]) and room for its rows.
pub fn load_rows_into(
    gpu: &Gpu,
    src: &mut dyn ByteSource,
    header: &WeightsHeader,
    info: &TensorInfo,
    convert: Convert,
    dst: &Tensor,
    first_row: usize,
) -> Result<()> {
    let scale = weight_scale(src, header, info)?;
    load_rows_into_chunked(gpu, src, &header.file, info, convert, CHUNK_BYTES, scale, dst, first_row)
}

/// [`load_rows_into`] with reads of at most `chunk_bytes` file bytes and an explicit weight scale.
#[allow(clippy::too_many_arguments)]
pub fn load_rows_into_chunked(
    gpu: &Gpu,
    src: &mut dyn ByteSource,
    file: &str,
    info: &TensorInfo,
    convert: Convert,
    chunk_bytes: usize,
    scale: f32,
    dst: &Tensor,
    first_row: usize,
) -> Result<()> {
    let offset = place_rows(file, info, convert, dst, first_row)?;
    now(fill(gpu, src, file, info, convert, chunk_bytes, scale, dst, offset, &mut Pacer::never()))
}

/// The element offset of row `first_row` of `dst`, where `info` (loaded as `convert` asks) goes,
/// after checking that it fits there.
pub(super) fn place_rows(
    file: &str,
    info: &TensorInfo,
    convert: Convert,
    dst: &Tensor,
    first_row: usize,
) -> Result<usize> {
    let (shape, dtype) = converted_layout(file, info, convert)?;
    let row = shape.last().copied().unwrap_or(1).max(1);
    let numel: usize = shape.iter().product();
    let offset = first_row.checked_mul(row);
    // Parts start on whole GPU words: F16/BF16 pairs (quantized rows are whole blocks already).
    let word_aligned = |o: usize| !matches!(dtype, DType::F16 | DType::BF16) || o.is_multiple_of(2);
    match offset {
        Some(o)
            if dtype == dst.dtype()
                && dst.shape().last() == Some(&row)
                && word_aligned(o)
                && o.checked_add(numel).is_some_and(|end| end <= dst.numel()) =>
        {
            Ok(o)
        }
        _ => Err(Error::ShapeMismatch {
            op: "load_rows_into",
            expected: format!("{dtype} rows of {row} placed at row {first_row} of the destination"),
            got: format!("`{}` {:?} into a {} tensor {:?}", info.name, info.shape, dst.dtype(), dst.shape()),
        }),
    }
}

/// Streams `info` into `dst` from element `offset` on, converting as `convert` asks; the caller
/// checked that `dst` has the converted format and room.
#[allow(clippy::too_many_arguments)]
pub(super) async fn fill(
    gpu: &Gpu,
    src: &mut dyn ByteSource,
    file: &str,
    info: &TensorInfo,
    convert: Convert,
    chunk_bytes: usize,
    scale: f32,
    dst: &Tensor,
    offset: usize,
    pace: &mut Pacer,
) -> Result<()> {
    let (shape, stored) = gpu_layout(file, info)?;
    if !convert.target().is_some_and(|t| !stored.is_quantized() && t != stored) {
        return fill_stored(gpu, src, file, info, chunk_bytes, scale, dst, offset, pace).await;
    }
    let target = dst.dtype();
    // What one chunk is uploaded as, and file bytes per element.
    let (source, eb) = match info.dtype {
        FileDType::Gpu(d) => (d, if d == DType::F32 { 4 } else { 2 }),
        _ => (DType::F16, 1),
    };
    let row = shape.last().copied().unwrap_or(1).max(1);
    let numel: usize = shape.iter().product();
    let unit = if target.is_quantized() { target.block_elems() } else { 2 };
    let rows_unit = row / gcd(row, unit) * unit;
    let chunk = if rows_unit * eb <= chunk_bytes {
        chunk_bytes / (rows_unit * eb) * rows_unit
    } else {
        (chunk_bytes / (unit * eb)).max(1) * unit
    };
    let mut done = 0;
    while done < numel {
        let n = chunk.min(numel - done);
        let bytes = pace.read(src, info.offset + (done * eb) as u64, n * eb).await?;
        let staged = match info.dtype {
            FileDType::Gpu(d) => repack(d, &bytes)?,
            f8 => f8_to_f16_scaled(f8, &bytes, scale, &info.name)?,
        };
        let scratch = gpu.upload_raw(&[n], source, &staged)?;
        let mut batch = gpu.batch();
        quantize_into(gpu, &mut batch, &scratch, dst, offset + done)?;
        gpu.submit(batch)?;
        pace.wrote(gpu, staged.len()).await?;
        done += n;
    }
    Ok(())
}

/// Reads a float tensor (F32, F16, BF16, F8_E4M3, F8_E5M2) whole, as f32 values, for the small
/// tensors models keep on the CPU side (biases, norm scales, LoRA factors, noise). `Ok(None)` for
/// any other dtype (quantized, integer), which the caller reports in its own terms.
pub fn read_floats(src: &mut dyn ByteSource, info: &TensorInfo) -> Result<Option<Vec<f32>>> {
    let half = |b: &[u8], f: fn([u8; 2]) -> f32| -> Vec<f32> { b.chunks_exact(2).map(|c| f([c[0], c[1]])).collect() };
    let decode = |b: &[u8]| -> Option<Vec<f32>> {
        Some(match info.dtype {
            FileDType::Gpu(DType::F32) => {
                b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            FileDType::Gpu(DType::F16) => half(b, |c| f16::from_le_bytes(c).to_f32()),
            FileDType::Gpu(DType::BF16) => half(b, |c| half::bf16::from_le_bytes(c).to_f32()),
            FileDType::F8E4M3 => b.iter().map(|&v| f8_e4m3_to_f32(v)).collect(),
            FileDType::F8E5M2 => b.iter().map(|&v| f8_e5m2_to_f32(v)).collect(),
            _ => return None,
        })
    };
    if decode(&[]).is_none() {
        return Ok(None);
    }
    let len = usize::try_from(info.size).map_err(|_| Error::LimitExceeded {
        what: format!("tensor `{}`", info.name),
        needed: info.size,
        available: usize::MAX as u64,
    })?;
    Ok(decode(&src.read_range(info.offset, len)?))
}
