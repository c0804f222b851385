//! `iclora bench stream`: a weights file streamed over HTTP Range requests (`weights::http`) into
//! GPU buffers by the real loader (`weights::load::load_tensor_as`), timed, with the process's
//! peak resident memory; plus the generator of the ≥ 1 GiB GGUF it is run on (benches/stream.sh
//! compares it with `curl -o /dev/null` of the same URL).
//!
//! Each tensor is dropped after it is loaded (its buffer goes back to the pool and is reused by
//! the next tensor of the same size): on a software adapter GPU buffers are process memory, so
//! keeping a 1 GiB model would hide the loader's own bound in the RSS. What is measured is the
//! path every model load takes — Range request, repack/convert, `write_buffer`, submit — at the
//! file's full size.

use std::io::Write;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu};
use crate::model::flux::tree::{DOUBLE_BLOCKS, SINGLE_BLOCKS};
use crate::model::flux::{FluxConfig, FluxTree, LinearKey};
use crate::reference::random::Rng;
use crate::weights::gguf::write_gguf_header;
use crate::weights::http::HttpSource;
use crate::weights::load::{load_tensor_as, read_header, Convert};
use crate::weights::tensor_info::{FileDType, MetaValue};

/// What one streaming run did.
#[derive(Debug, Clone)]
pub struct StreamReport {
    pub tensors: usize,
    /// Bytes of tensor data read from the file (the header's first fetch not counted).
    pub file_bytes: u64,
    /// Bytes written into GPU buffers (after repacking / conversion).
    pub gpu_bytes: u64,
    /// From the first tensor read to the GPU being idle after the last.
    pub secs: f64,
    /// Connection retries the source needed.
    pub retries: u64,
    /// Bytes the GPU buffer pool holds for reuse at the end (freed tensors; on a software adapter
    /// part of the process's memory).
    pub pooled_bytes: u64,
}

impl StreamReport {
    /// File MB/s (10⁶ bytes).
    pub fn mb_per_s(&self) -> f64 {
        self.file_bytes as f64 / 1e6 / self.secs.max(1e-9)
    }
}

/// Streams every tensor of the file at `url` into a GPU buffer, converted per tensor as
/// `Convert::for_tensor(info, convert)` decides (already-quantized tensors are kept).
pub fn bench_stream(
    gpu: &Gpu,
    url: &str,
    convert: Convert,
    mut progress: impl FnMut(usize, usize),
) -> Result<StreamReport> {
    let mut src = HttpSource::open(url)?;
    let header = read_header(&mut src)?;
    header.require_supported()?;
    let start = Instant::now();
    let (mut file_bytes, mut gpu_bytes) = (0, 0);
    for (i, info) in header.tensors.iter().enumerate() {
        let t = load_tensor_as(gpu, &mut src, &header, info, Convert::for_tensor(info, convert))?;
        file_bytes += info.size;
        gpu_bytes += t.gpu_bytes();
        progress(i + 1, header.tensors.len());
    }
    gpu.wait_idle()?;
    Ok(StreamReport {
        tensors: header.tensors.len(),
        file_bytes,
        gpu_bytes,
        secs: start.elapsed().as_secs_f64(),
        retries: src.retries(),
        pooled_bytes: gpu.pooled_bytes(),
    })
}

/// The weight matrices of FLUX.1's blocks (the key tree's, `model::flux::tree`: BFL names,
/// city96-style GGUF) at width `hidden` (FLUX.1: 3072; MLP 4×): two double blocks in Q8_0 per
/// single block in Q4_0, until at least `min_bytes` of tensor data. `hidden` must be a multiple
/// of 32.
pub fn flux_gguf_plan(min_bytes: u64, hidden: u64) -> Vec<(String, Vec<u64>, DType)> {
    let h = (hidden.max(32) / 32 * 32) as usize;
    let c = FluxConfig {
        heads: 1,
        head_dim: h,
        mlp_hidden: 4 * h,
        double_blocks: 1,
        single_blocks: 1,
        ..FluxConfig::flux1_dev()
    };
    let mut keys = FluxTree::keys(&c);
    // Block 0's matrices, named relative to the block.
    let relative =
        |k: &LinearKey| (k.bfl.split_once(".0.").map_or(k.bfl.clone(), |(_, r)| r.to_string()), k.n as u64, k.k as u64);
    let double: Vec<_> = keys.double_blocks[0].linears_mut().map(|k| relative(k)).into();
    let single: Vec<_> = keys.single_blocks[0].linears_mut().map(|k| relative(k)).into();
    let size = |n: u64, k: u64, d: DType| n * k / d.block_elems() as u64 * d.gguf_block_bytes() as u64;
    let (mut plan, mut total, mut i) = (Vec::new(), 0u64, 0);
    while total < min_bytes {
        let (kind, parts, d) =
            if i % 3 == 2 { (SINGLE_BLOCKS.0, &single, DType::Q4_0) } else { (DOUBLE_BLOCKS.0, &double, DType::Q8_0) };
        let idx = if i % 3 == 2 { i / 3 } else { i - i / 3 };
        for (name, n, k) in parts {
            plan.push((format!("{kind}.{idx}.{name}.weight"), vec![*n, *k], d));
            total += size(*n, *k, d);
        }
        i += 1;
    }
    plan
}

/// Writes the [`flux_gguf_plan`] file to `path` (header by `gguf::write_gguf_header`, so the
/// ~1 GiB never sits in memory); each tensor is one random row of blocks (F16 scales kept finite)
/// repeated: the values do not matter to streaming. Returns the file's size.
pub fn write_flux_gguf(path: &str, min_bytes: u64, hidden: u64) -> Result<u64> {
    let io = |e: std::io::Error| Error::Io { file: path.into(), message: e.to_string() };
    let plan: Vec<(String, Vec<u64>, FileDType)> =
        flux_gguf_plan(min_bytes, hidden).into_iter().map(|(n, s, d)| (n, s, FileDType::Gpu(d))).collect();
    let meta = vec![("general.architecture".to_string(), MetaValue::Str("flux".into()))];
    let (header, align) = write_gguf_header(&meta, &plan)?;
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path).map_err(io)?);
    f.write_all(&header).map_err(io)?;
    let mut written = header.len() as u64;
    let mut rng = Rng::new(7);
    for (_, shape, dtype) in &plan {
        let FileDType::Gpu(d) = *dtype else { continue };
        let (be, bb) = (d.block_elems(), d.gguf_block_bytes());
        let per_row = shape[1] as usize / be;
        let mut row = rng.bytes(per_row * bb);
        for b in row.chunks_exact_mut(bb) {
            b[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
        for _ in 0..shape[0] {
            f.write_all(&row).map_err(io)?;
        }
        let len = shape[0] * row.len() as u64;
        let pad = len.div_ceil(align as u64) * align as u64 - len;
        f.write_all(&vec![0u8; pad as usize]).map_err(io)?;
        written += len + pad;
    }
    f.flush().map_err(io)?;
    Ok(written)
}

/// Peak resident memory of this process in KiB (Linux `VmHWM`), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}
