//! Recording many dispatches into one command buffer, submitted once.

use std::sync::Arc;

use super::buffer::GpuBuffer;
use super::context::Gpu;
use super::pipeline::{Overrides, ShaderSpec};
use super::tensor::Tensor;
use crate::error::{Error, Result};

/// One shader binding, in `@binding` order.
pub enum Binding<'a> {
    /// Small parameters (a `#[repr(C)]` struct's bytes), bound as a uniform buffer.
    Uniform(&'a [u8]),
    /// A whole tensor as a storage buffer.
    Tensor(&'a Tensor),
    /// A byte range of a tensor's buffer (offset aligned to the device's storage offset alignment).
    Range(&'a Tensor, u64, u64),
}

/// A command buffer under construction. Buffers it references are kept alive
/// (and out of the pool) until it is submitted, so a buffer released by the
/// caller mid-batch is never handed to a write that would race with it.
pub struct Batch {
    encoder: wgpu::CommandEncoder,
    keep: Vec<Arc<GpuBuffer>>,
    dispatches: usize,
}

impl Gpu {
    pub fn batch(&self) -> Batch {
        Batch {
            encoder: self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("batch") }),
            keep: Vec::new(),
            dispatches: 0,
        }
    }

    /// Submits the batch. Errors raised while recording come back here or at
    /// the next readback.
    pub fn submit(&self, batch: Batch) -> Result<()> {
        self.queue.submit([batch.encoder.finish()]);
        drop(batch.keep);
        self.take_error()
    }
}

impl Batch {
    pub fn dispatches(&self) -> usize {
        self.dispatches
    }

    /// Submits what has been recorded so far and keeps recording into a fresh
    /// encoder. Buffers the batch was holding go back to the pool, so a long
    /// forward pass (57 FLUX blocks) that flushes after each block needs the
    /// memory of one block's intermediates, not of all of them.
    pub fn flush(&mut self, gpu: &Gpu) -> Result<()> {
        let done = std::mem::replace(self, gpu.batch());
        gpu.submit(done)
    }

    /// Records one dispatch of `entry` in `spec` with `bindings` at @group(0).
    pub fn dispatch(
        &mut self,
        gpu: &Gpu,
        spec: &'static ShaderSpec,
        entry: &'static str,
        overrides: Overrides,
        bindings: &[Binding],
        grid: [u32; 3],
    ) -> Result<()> {
        let info = gpu.info();
        if let Some(&g) = grid.iter().find(|&&g| g > info.max_workgroups_per_dim) {
            return Err(Error::LimitExceeded {
                what: format!("{}: workgroups in one dispatch dimension", spec.name),
                needed: g as u64,
                available: info.max_workgroups_per_dim as u64,
            });
        }
        if grid.contains(&0) {
            return Ok(());
        }
        let storage = bindings.iter().filter(|b| !matches!(b, Binding::Uniform(_))).count() as u32;
        if storage > info.max_storage_buffers_per_stage {
            return Err(Error::LimitExceeded {
                what: format!("{}: storage buffers per shader stage", spec.name),
                needed: storage as u64,
                available: info.max_storage_buffers_per_stage as u64,
            });
        }
        let pipeline = gpu.pipeline(spec, entry, overrides)?;

        let mut uniforms = Vec::new();
        for b in bindings {
            if let Binding::Uniform(bytes) = b {
                // Uniform blocks are sized in 16-byte units.
                let mut data = bytes.to_vec();
                data.resize(data.len().div_ceil(16).max(1) * 16, 0);
                let buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: data.len() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                gpu.queue.write_buffer(&buf, 0, &data);
                uniforms.push(buf);
            }
        }
        let mut entries = Vec::with_capacity(bindings.len());
        let mut u = 0;
        for (i, b) in bindings.iter().enumerate() {
            let resource = match b {
                Binding::Uniform(_) => {
                    u += 1;
                    uniforms[u - 1].as_entire_binding()
                }
                Binding::Tensor(t) | Binding::Range(t, _, _) => {
                    let (offset, size) = match b {
                        Binding::Range(_, o, s) => (*o, *s),
                        _ => (0, t.buffer().size()),
                    };
                    if size > info.max_storage_binding {
                        return Err(Error::LimitExceeded {
                            what: format!("{}: binding {i} ({t:?}, bytes)", spec.name),
                            needed: size,
                            available: info.max_storage_binding,
                        });
                    }
                    if offset % info.storage_offset_alignment as u64 != 0 || offset + size > t.buffer().size() {
                        return Err(Error::InvalidArgument(format!(
                            "{}: binding {i} range {offset}+{size} is misaligned or outside its buffer",
                            spec.name
                        )));
                    }
                    self.keep.push(t.buffer().clone());
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: t.buffer().raw(),
                        offset,
                        size: std::num::NonZeroU64::new(size),
                    })
                }
            };
            entries.push(wgpu::BindGroupEntry { binding: i as u32, resource });
        }
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut pass = self.encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(entry), timestamp_writes: None });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        drop(pass);
        self.dispatches += 1;
        Ok(())
    }
}
