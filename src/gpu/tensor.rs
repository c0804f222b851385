//! GPU tensors: a pooled buffer, a shape (PyTorch order, outermost first) and
//! an element format. Upload and readback live here.

use std::sync::Arc;

use half::f16;

use super::buffer::GpuBuffer;
use super::context::Gpu;
use super::counters::Counters;
use crate::dtype::DType;
use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Tensor {
    buf: Arc<GpuBuffer>,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype)
    }
}

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn buffer(&self) -> &Arc<GpuBuffer> {
        &self.buf
    }

    /// Size in bytes of the data on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        self.dtype.gpu_bytes(self.numel()) as u64
    }

    /// The same buffer seen with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                expected: format!("{} elements", self.numel()),
                got: format!("{shape:?}"),
            });
        }
        Ok(Tensor { buf: self.buf.clone(), shape: shape.to_vec(), dtype: self.dtype })
    }

    /// Size of dimension `i` counted from the end (`dim_rev(0)` is the innermost).
    pub fn dim_rev(&self, i: usize) -> usize {
        if i < self.shape.len() {
            self.shape[self.shape.len() - 1 - i]
        } else {
            1
        }
    }

    /// Rows when the tensor is seen as a matrix `[rows, innermost]`.
    pub fn rows(&self) -> usize {
        self.numel() / self.dim_rev(0).max(1)
    }
}

fn check_len(op: &'static str, shape: &[usize], len: usize) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != len {
        return Err(Error::ShapeMismatch {
            op,
            expected: format!("{n} values for shape {shape:?}"),
            got: format!("{len}"),
        });
    }
    Ok(())
}

impl Gpu {
    /// A tensor with undefined contents.
    pub fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if dtype.is_quantized() && !numel.is_multiple_of(dtype.block_elems()) {
            return Err(Error::ShapeMismatch {
                op: "empty",
                expected: format!("a multiple of {} elements for {dtype}", dtype.block_elems()),
                got: format!("{shape:?}"),
            });
        }
        let buf = self.alloc_buffer(dtype.gpu_bytes(numel) as u64)?;
        Ok(Tensor { buf, shape: shape.to_vec(), dtype })
    }

    /// Uploads bytes that are already in the GPU layout of `dtype` (see `DType` and `weights::repack`).
    pub fn upload_raw(&self, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        let t = self.empty(shape, dtype)?;
        if bytes.len() as u64 != t.gpu_bytes() {
            return Err(Error::ShapeMismatch {
                op: "upload",
                expected: format!("{} bytes for {dtype} {shape:?}", t.gpu_bytes()),
                got: format!("{} bytes", bytes.len()),
            });
        }
        self.write_buffer(&t.buf, 0, bytes)?;
        Ok(t)
    }

    pub fn upload_f32(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        check_len("upload_f32", shape, data.len())?;
        self.upload_raw(shape, DType::F32, bytemuck::cast_slice(data))
    }

    /// Uploads f32 values rounded to f16 (or bf16), packed two per word.
    pub fn upload_half(&self, shape: &[usize], data: &[f32], dtype: DType) -> Result<Tensor> {
        check_len("upload_half", shape, data.len())?;
        let mut bits: Vec<u16> = match dtype {
            DType::F16 => data.iter().map(|&v| f16::from_f32(v).to_bits()).collect(),
            DType::BF16 => data.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect(),
            other => {
                return Err(Error::UnsupportedFormat {
                    op: "upload_half",
                    format: other.to_string(),
                    why: "only F16 and BF16 are half formats".into(),
                })
            }
        };
        if bits.len() % 2 == 1 {
            bits.push(0);
        }
        self.upload_raw(shape, dtype, bytemuck::cast_slice(&bits))
    }

    pub fn upload_u32(&self, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        check_len("upload_u32", shape, data.len())?;
        self.upload_raw(shape, DType::U32, bytemuck::cast_slice(data))
    }

    /// Copies a tensor's bytes back to the CPU.
    pub async fn read_bytes(&self, t: &Tensor) -> Result<Vec<u8>> {
        let size = t.gpu_bytes().max(4).div_ceil(4) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        enc.copy_buffer_to_buffer(t.buf.raw(), 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        Counters::add(&self.counters.submissions, 1);
        Counters::add(&self.counters.bytes_read, size);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        let mapped = rx.await.map_err(|_| Error::Readback("the map request was dropped".into()))?;
        self.take_error()?;
        mapped.map_err(|e| Error::Readback(e.to_string()))?;
        let bytes = {
            let view = staging.slice(..).get_mapped_range().map_err(|e| Error::Readback(e.to_string()))?;
            view[..t.gpu_bytes() as usize].to_vec()
        };
        staging.unmap();
        Ok(bytes)
    }

    /// Reads an F32, F16 or BF16 tensor as f32 values.
    pub async fn read_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(t).await?;
        let n = t.numel();
        match t.dtype() {
            DType::F32 => Ok(bytemuck::pod_collect_to_vec::<u8, f32>(&bytes)),
            DType::F16 => Ok(bytemuck::pod_collect_to_vec::<u8, u16>(&bytes)[..n]
                .iter()
                .map(|&b| f16::from_bits(b).to_f32())
                .collect()),
            DType::BF16 => Ok(bytemuck::pod_collect_to_vec::<u8, u16>(&bytes)[..n]
                .iter()
                .map(|&b| half::bf16::from_bits(b).to_f32())
                .collect()),
            other => Err(Error::UnsupportedFormat {
                op: "read_f32",
                format: other.to_string(),
                why: "dequantize on the GPU first".into(),
            }),
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32_blocking(&self, t: &Tensor) -> Result<Vec<f32>> {
        pollster::block_on(self.read_f32(t))
    }
}
