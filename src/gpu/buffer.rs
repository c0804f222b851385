//! Storage buffers and the pool that reuses them. Activations of a FLUX step
//! have the same sizes every step, so a buffer released by one step is taken
//! again by the next instead of being reallocated.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::context::Gpu;
use crate::error::{Error, Result};

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    bytes: AtomicU64,
}

impl BufferPool {
    fn take(&self, size: u64) -> Option<wgpu::Buffer> {
        let buf = self.free.lock().ok()?.get_mut(&size)?.pop()?;
        self.bytes.fetch_sub(size, Ordering::Relaxed);
        Some(buf)
    }

    fn give(&self, buffer: wgpu::Buffer) {
        let size = buffer.size();
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
        self.bytes.store(0, Ordering::Relaxed);
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
            Some(b) => b,
            None => self.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage: USAGE,
                mapped_at_creation: false,
            }),
        };
        Ok(Arc::new(GpuBuffer { buffer: Some(buffer), pool: Arc::downgrade(&self.pool) }))
    }

    /// Frees every pooled buffer (e.g. before loading a large model).
    pub fn trim_pool(&self) {
        self.pool.clear();
    }

    /// Writes `data` (length a multiple of 4) at `offset` bytes; ordered before later submissions.
    pub fn write_buffer(&self, buf: &GpuBuffer, offset: u64, data: &[u8]) -> Result<()> {
        if data.len() % 4 != 0 || offset % 4 != 0 {
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
        Ok(())
    }
}
