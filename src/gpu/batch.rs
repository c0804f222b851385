//! Recording many dispatches into one command buffer, submitted once.

use std::sync::Arc;

use super::bind_cache::BindKey;
use super::buffer::{GpuBuffer, UniformArena};
use super::context::Gpu;
use super::counters::Counters;
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
///
/// A *dry* batch ([`Gpu::dry_batch`]) records nothing: each dispatch checks its limits and
/// compiles (or finds) its pipeline, and the buffers it names (and its uniform chunks) are held
/// until the next flush as in a real batch. Recording a forward pass into one therefore compiles
/// every pipeline the pass uses and leaves the pools holding the buffers it needs, without
/// running anything on the GPU.
pub struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    keep: Vec<Arc<GpuBuffer>>,
    uniforms: UniformArena,
    dispatches: usize,
}

impl Gpu {
    pub fn batch(&self) -> Batch {
        Batch {
            encoder: Some(self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("batch") })),
            keep: Vec::new(),
            uniforms: UniformArena::new(self),
            dispatches: 0,
        }
    }

    /// A batch that compiles pipelines and plans buffers but runs nothing (see [`Batch`]);
    /// submitting or flushing it only releases the buffers it held.
    pub fn dry_batch(&self) -> Batch {
        Batch { encoder: None, keep: Vec::new(), uniforms: UniformArena::new(self), dispatches: 0 }
    }

    /// Submits the batch. Errors raised while recording come back here or at
    /// the next readback.
    pub fn submit(&self, batch: Batch) -> Result<()> {
        if let Some(encoder) = batch.encoder {
            batch.uniforms.upload(self);
            self.queue.submit([encoder.finish()]);
            Counters::add(&self.counters.submissions, 1);
        }
        // After the submission: the uniform chunks and buffers go back to their pools.
        drop(batch.uniforms);
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
        let next = if self.is_dry() { gpu.dry_batch() } else { gpu.batch() };
        let done = std::mem::replace(self, next);
        gpu.submit(done)
    }

    /// Whether this is a [`Gpu::dry_batch`].
    pub fn is_dry(&self) -> bool {
        self.encoder.is_none()
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

        // Placed in a dry batch too (never uploaded there), so it also plans the uniform chunks.
        let dry = self.is_dry();
        let mut uniforms = Vec::new();
        for b in bindings {
            if let Binding::Uniform(bytes) = b {
                uniforms.push(self.uniforms.push(gpu, bytes)?);
            }
        }
        let mut entries = Vec::with_capacity(bindings.len());
        let mut key = Vec::with_capacity(bindings.len());
        let mut u = 0;
        for (i, b) in bindings.iter().enumerate() {
            let resource = match b {
                Binding::Uniform(_) if dry => continue,
                Binding::Uniform(_) => {
                    u += 1;
                    let (buf, offset, size) = &uniforms[u - 1];
                    key.push((i as u32, buf.clone(), *offset, *size));
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: buf,
                        offset: *offset,
                        size: std::num::NonZeroU64::new(*size),
                    })
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
                    key.push((i as u32, t.buffer().raw().clone(), offset, size));
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: t.buffer().raw(),
                        offset,
                        size: std::num::NonZeroU64::new(size),
                    })
                }
            };
            entries.push(wgpu::BindGroupEntry { binding: i as u32, resource });
        }
        let Some(encoder) = self.encoder.as_mut() else {
            // Dry: the pipeline exists and the buffers are held; nothing to record.
            self.dispatches += 1;
            return Ok(());
        };
        let key = BindKey { pipeline: (*pipeline).clone(), entries: key };
        let (bind_group, created) = gpu.bind_groups.get_or_make(key, || {
            gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(entry),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
        });
        let mut pass =
            encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(entry), timestamp_writes: None });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        drop(pass);
        self.dispatches += 1;
        Counters::add(&gpu.counters.dispatches, 1);
        Counters::add(&gpu.counters.bind_groups, u64::from(created));
        Ok(())
    }
}
