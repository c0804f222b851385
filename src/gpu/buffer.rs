//! Storage buffers and the pool that reuses them. Activations of a FLUX step
//! have the same sizes every step, so a buffer released by one step is taken
//! again by the next instead of being reallocated. Uniform parameters of the
//! dispatches live in pooled chunks too (`UniformArena`), so a step in steady
//! state creates no buffer at all; counters make that checkable (`Gpu::buffer_stats`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::context::Gpu;
use super::counters::Counters;
use crate::error::{Error, Result};

const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// Bytes of one pooled uniform chunk: 256 dispatches' parameters at the usual 256-byte offset
/// alignment (WebGPU's default `minUniformBufferOffsetAlignment`).
const UNIFORM_CHUNK: u64 = 64 * 1024;

#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    bytes: AtomicU64,
    uniforms: Mutex<Vec<wgpu::Buffer>>,
    created: AtomicU64,
    created_bytes: AtomicU64,
    hits: AtomicU64,
    uniform_created: AtomicU64,
    live: AtomicU64,
    peak: AtomicU64,
}

/// Counters of the buffer pool since the device was opened (see [`Gpu::buffer_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Storage buffers created on the device (pool misses), and their bytes.
    pub created: u64,
    pub created_bytes: u64,
    /// Storage-buffer requests served from the pool.
    pub pool_hits: u64,
    /// Uniform chunks created (each holds the parameters of many dispatches and is reused).
    pub uniform_chunks: u64,
    /// Bytes of storage buffers handed out and not yet released, now and at the peak since
    /// [`Gpu::reset_peak_bytes`].
    pub live_bytes: u64,
    pub peak_live_bytes: u64,
}

impl BufferPool {
    fn take(&self, size: u64) -> Option<wgpu::Buffer> {
        let buf = self.free.lock().ok()?.get_mut(&size)?.pop()?;
        self.bytes.fetch_sub(size, Ordering::Relaxed);
        Some(buf)
    }

    fn lend(&self, size: u64) {
        let live = self.live.fetch_add(size, Ordering::Relaxed) + size;
        self.peak.fetch_max(live, Ordering::Relaxed);
    }

    fn give(&self, buffer: wgpu::Buffer) {
        let size = buffer.size();
        self.live.fetch_sub(size, Ordering::Relaxed);
        if let Ok(mut free) = self.free.lock() {
            free.entry(size).or_default().push(buffer);
            self.bytes.fetch_add(size, Ordering::Relaxed);
        }
    }

    pub(crate) fn pooled_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn clear(&self) {
        if let Ok(mut free) = self.free.lock() {
            free.clear();
        }
        if let Ok(mut u) = self.uniforms.lock() {
            u.clear();
        }
        self.bytes.store(0, Ordering::Relaxed);
    }

    fn stats(&self) -> BufferStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BufferStats {
            created: l(&self.created),
            created_bytes: l(&self.created_bytes),
            pool_hits: l(&self.hits),
            uniform_chunks: l(&self.uniform_created),
            live_bytes: l(&self.live),
            peak_live_bytes: l(&self.peak),
        }
    }
}

/// The uniform parameters of one batch's dispatches: runs of bytes packed at the device's
/// uniform offset alignment into pooled `UNIFORM_CHUNK`-byte buffers, written with one
/// `write_buffer` per chunk when the batch is submitted (before its commands run, on the queue
/// timeline). The chunks go back to the pool when the arena drops, after the submission: a later
/// batch's writes are ordered after the commands that read them. Replaces one uniform buffer
/// created and dropped per dispatch.
pub(crate) struct UniformArena {
    chunks: Vec<(wgpu::Buffer, Vec<u8>)>,
    pool: Weak<BufferPool>,
}

impl UniformArena {
    pub(crate) fn new(gpu: &Gpu) -> UniformArena {
        UniformArena { chunks: Vec::new(), pool: Arc::downgrade(&gpu.pool) }
    }

    /// Places `bytes` (padded to 16-byte units, as uniform blocks are sized) and returns the
    /// chunk buffer, offset and size to bind.
    pub(crate) fn push(&mut self, gpu: &Gpu, bytes: &[u8]) -> Result<(wgpu::Buffer, u64, u64)> {
        let size = (bytes.len() as u64).div_ceil(16).max(1) * 16;
        let align = gpu.uniform_align.max(16);
        if size > UNIFORM_CHUNK {
            return Err(Error::LimitExceeded {
                what: "uniform parameters of one dispatch (bytes)".into(),
                needed: size,
                available: UNIFORM_CHUNK,
            });
        }
        let fits =
            self.chunks.last().is_some_and(|(_, d)| (d.len() as u64).div_ceil(align) * align + size <= UNIFORM_CHUNK);
        if !fits {
            let pooled = gpu.pool.uniforms.lock().ok().and_then(|mut u| u.pop());
            let buf = match pooled {
                Some(b) => b,
                None => {
                    gpu.pool.uniform_created.fetch_add(1, Ordering::Relaxed);
                    gpu.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("params"),
                        size: UNIFORM_CHUNK,
                        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    })
                }
            };
            self.chunks.push((buf, Vec::new()));
        }
        let Some((buf, data)) = self.chunks.last_mut() else { unreachable!("a chunk was pushed above") };
        let offset = (data.len() as u64).div_ceil(align) * align;
        data.resize(offset as usize, 0);
        data.extend_from_slice(bytes);
        data.resize((offset + size) as usize, 0);
        Ok((buf.clone(), offset, size))
    }

    /// Queues the writes of every chunk's bytes; call right before submitting the commands.
    pub(crate) fn upload(&self, gpu: &Gpu) {
        for (buf, data) in &self.chunks {
            if !data.is_empty() {
                gpu.queue.write_buffer(buf, 0, data);
                Counters::add(&gpu.counters.bytes_written, data.len() as u64);
            }
        }
    }
}

impl Drop for UniformArena {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            if let Ok(mut u) = pool.uniforms.lock() {
                u.extend(self.chunks.drain(..).map(|(b, _)| b));
            }
        }
    }
}

/// A storage buffer that goes back to its pool when the last reference drops.
pub struct GpuBuffer {
    buffer: Option<wgpu::Buffer>,
    pool: Weak<BufferPool>,
}

impl GpuBuffer {
    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        // Only `Drop` takes the buffer out.
        self.buffer.as_ref().unwrap_or_else(|| unreachable!("buffer used after drop"))
    }

    pub fn size(&self) -> u64 {
        self.buffer.as_ref().map_or(0, |b| b.size())
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let (Some(buf), Some(pool)) = (self.buffer.take(), self.pool.upgrade()) {
            pool.give(buf);
        }
    }
}

impl Gpu {
    /// A storage buffer of at least `bytes` bytes (rounded up to whole words),
    /// from the pool when one of that size is free. Contents are undefined.
    pub fn alloc_buffer(&self, bytes: u64) -> Result<Arc<GpuBuffer>> {
        let size = bytes.max(4).div_ceil(4) * 4;
        if size > self.info().max_buffer_size {
            return Err(Error::LimitExceeded {
                what: "a GPU buffer".into(),
                needed: size,
                available: self.info().max_buffer_size,
            });
        }
        let buffer = match self.pool.take(size) {
            Some(b) => {
                self.pool.hits.fetch_add(1, Ordering::Relaxed);
                b
            }
            None => {
                self.pool.created.fetch_add(1, Ordering::Relaxed);
                self.pool.created_bytes.fetch_add(size, Ordering::Relaxed);
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size,
                    usage: USAGE,
                    mapped_at_creation: false,
                })
            }
        };
        self.pool.lend(size);
        Ok(Arc::new(GpuBuffer { buffer: Some(buffer), pool: Arc::downgrade(&self.pool) }))
    }

    /// Frees every pooled buffer (e.g. before loading a large model).
    pub fn trim_pool(&self) {
        // The cached bind groups hold pooled buffers too.
        self.bind_groups.clear();
        self.pool.clear();
    }

    /// Buffer counters since the device was opened: creations vs pool hits, uniform chunks, and
    /// the live/peak bytes of storage buffers in use (for memory figures and allocation tests).
    pub fn buffer_stats(&self) -> BufferStats {
        self.pool.stats()
    }

    /// Starts a new peak: `peak_live_bytes` becomes the bytes in use now.
    pub fn reset_peak_bytes(&self) {
        self.pool.peak.store(self.pool.live.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Writes `data` (length a multiple of 4) at `offset` bytes; ordered before later submissions.
    pub fn write_buffer(&self, buf: &GpuBuffer, offset: u64, data: &[u8]) -> Result<()> {
        if !data.len().is_multiple_of(4) || !offset.is_multiple_of(4) {
            return Err(Error::InvalidArgument(format!(
                "buffer writes must be whole 32-bit words (offset {offset}, {} bytes)",
                data.len()
            )));
        }
        if offset + data.len() as u64 > buf.size() {
            return Err(Error::InvalidArgument(format!(
                "write of {} bytes at {offset} overruns a buffer of {} bytes",
                data.len(),
                buf.size()
            )));
        }
        self.queue.write_buffer(buf.raw(), offset, data);
        Counters::add(&self.counters.bytes_written, data.len() as u64);
        Ok(())
    }
}
