//! Streaming planned uploads into GPU buffers with pacing. A model loader builds its weight tree
//! first ([`Uploads`] allocates each tensor and records where its bytes come from), then the bytes
//! stream in one pass that an async caller can pace ([`Pacer`]): in a browser the worker then
//! waits for the GPU's queue every few chunks instead of queuing a whole model's uploads. The
//! chunked reading and conversion itself is `load::fill`, shared with the synchronous loaders.

use super::fp8::weight_scale;
use super::load::{converted_layout, fill, place_rows, ByteSource, Convert, CHUNK_BYTES};
use super::tensor_info::{TensorInfo, WeightsHeader};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};

/// Runs a future that never waits (an upload without pacing) to its end on this thread: the
/// synchronous loaders share the paced code path.
pub(crate) fn now<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => Err(Error::InvalidArgument("an upload without pacing waited for the GPU".into())),
    }
}

/// Bytes written to the GPU between waits for it, when a loader paces its uploads.
///
/// Why: in a browser every `writeBuffer` is copied into shared memory until the GPU process takes
/// it, and a loader that never waits could queue uploads faster than they are taken, growing the
/// tab's memory with the model. Waiting for the queue every few chunks bounds the staged bytes to
/// about this much (benches/browser_memory.mjs; on SwiftShader the GPU process keeps up anyway).
pub const PACE_BYTES: usize = 4 * CHUNK_BYTES;

/// Counts uploaded bytes and waits for the GPU's queue every `every` bytes.
pub struct Pacer {
    every: Option<usize>,
    since: usize,
    /// How many times it waited.
    pub waits: u64,
}

impl Pacer {
    /// Never waits (native synchronous loading: wgpu's staging is flushed per chunk anyway).
    pub fn never() -> Pacer {
        Pacer { every: None, since: 0, waits: 0 }
    }

    /// Waits for the queue after every `bytes` uploaded.
    pub fn every(bytes: usize) -> Pacer {
        Pacer { every: Some(bytes.max(1)), since: 0, waits: 0 }
    }

    /// Reads `len` bytes at `offset` of `src`: awaiting the read when this pacer waits anyway (so a
    /// network read lets the browser's event loop run, `ByteSource::read_range_async`), else
    /// synchronously (the unpaced loaders run to their end without yielding).
    pub(super) async fn read(&self, src: &mut dyn ByteSource, offset: u64, len: usize) -> Result<Vec<u8>> {
        match self.every {
            Some(_) => src.read_range_async(offset, len).await,
            None => src.read_range(offset, len),
        }
    }

    pub(super) async fn wrote(&mut self, gpu: &Gpu, bytes: usize) -> Result<()> {
        self.since += bytes;
        if self.every.is_some_and(|e| self.since >= e) {
            self.since = 0;
            self.waits += 1;
            gpu.done().await?;
        }
        Ok(())
    }
}

/// Uploads a loader plans while it builds a model (tensors allocated, nothing read yet) and runs
/// afterwards, so that the bytes can stream with pacing ([`Pacer`]) from an async caller while
/// the model code itself stays synchronous.
pub struct Uploads {
    file: String,
    jobs: Vec<Upload>,
}

struct Upload {
    info: TensorInfo,
    convert: Convert,
    scale: f32,
    dst: Tensor,
    offset: usize,
}

impl Uploads {
    pub fn new(header: &WeightsHeader) -> Uploads {
        Uploads { file: header.file.clone(), jobs: Vec::new() }
    }

    /// A tensor loaded as [`load_tensor_as`] would: allocated now, filled by [`run`](Self::run).
    pub fn tensor_as(
        &mut self,
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        info: &TensorInfo,
        convert: Convert,
    ) -> Result<Tensor> {
        let scale = weight_scale(src, header, info)?;
        let (shape, dtype) = converted_layout(&header.file, info, convert)?;
        let dst = gpu.empty(&shape, dtype)?;
        self.jobs.push(Upload { info: info.clone(), convert, scale, dst: dst.clone(), offset: 0 });
        Ok(dst)
    }

    /// Rows of `dst` filled from `info`, as [`load_rows_into`] would, by [`run`](Self::run).
    pub fn rows_into(
        &mut self,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        info: &TensorInfo,
        convert: Convert,
        dst: &Tensor,
        first_row: usize,
    ) -> Result<()> {
        let scale = weight_scale(src, header, info)?;
        let offset = place_rows(&header.file, info, convert, dst, first_row)?;
        self.jobs.push(Upload { info: info.clone(), convert, scale, dst: dst.clone(), offset });
        Ok(())
    }

    /// Streams every planned tensor from `src`, in plan order, in reads of at most
    /// `chunk_bytes`, waiting as `pace` says; returns the pacer (its `waits`).
    pub async fn run(self, gpu: &Gpu, src: &mut dyn ByteSource, chunk_bytes: usize, mut pace: Pacer) -> Result<Pacer> {
        for u in &self.jobs {
            fill(gpu, src, &self.file, &u.info, u.convert, chunk_bytes, u.scale, &u.dst, u.offset, &mut pace).await?;
        }
        Ok(pace)
    }

    /// [`run`](Self::run) without pacing, synchronously.
    pub fn run_now(self, gpu: &Gpu, src: &mut dyn ByteSource) -> Result<()> {
        now(self.run(gpu, src, CHUNK_BYTES, Pacer::never())).map(|_| ())
    }
}
