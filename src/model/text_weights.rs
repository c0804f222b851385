//! Loading the text encoders' tensors by name (T5, CLIP: the keys of transformers' `T5EncoderModel`,
//! src/transformers/models/t5/modeling_t5.py @ 6b8b757, and `CLIPTextModel`,
//! src/transformers/models/clip/modeling_clip.py @ 679021a), with errors that name the model, the file and
//! the tensor (also used by the tiny preview decoder, `model::taef1`), and embedding tables split
//! into row ranges so that a
//! table larger than one storage binding (T5-XXL's `[32128, 4096]`: 526 MB in F32, 263 MB in
//! BF16) is gathered in pieces instead of rejected.

use crate::error::{Error, Result};
use crate::gpu::{Batch, Gpu, Tensor};
use crate::kernels::elementwise::add;
use crate::kernels::embedding::embedding;
use crate::weights::load::{read_floats, ByteSource, Convert, Uploads};
use crate::weights::tensor_info::{FileDType, TensorInfo, WeightsHeader};

/// Loads tensors of `header` (read from `src`) by name, checking shapes.
pub struct TensorLoader<'a> {
    pub gpu: &'a Gpu,
    pub src: &'a mut dyn ByteSource,
    pub header: &'a WeightsHeader,
    /// Names the model in errors, e.g. "T5 text encoder".
    pub model: &'static str,
    /// The matrices' and tables' bytes, streamed once the weight tree is built
    /// (`Uploads::run`, paced in the browser).
    pub uploads: Uploads,
}

impl<'a> TensorLoader<'a> {
    pub fn new(
        gpu: &'a Gpu,
        src: &'a mut dyn ByteSource,
        header: &'a WeightsHeader,
        model: &'static str,
    ) -> TensorLoader<'a> {
        TensorLoader { gpu, src, header, model, uploads: Uploads::new(header) }
    }
}

impl TensorLoader<'_> {
    /// The first of `names` the file has (`Error::MissingModelTensor` naming all of them if none).
    pub fn find(&self, names: &[&str]) -> Result<&TensorInfo> {
        names.iter().find_map(|n| self.header.tensor(n)).ok_or_else(|| Error::MissingModelTensor {
            model: self.model,
            file: self.header.file.clone(),
            name: names.join("` or `"),
        })
    }

    /// `name` (or its first present alias) with shape `expected`.
    pub fn info(&self, names: &[&str], expected: &[usize]) -> Result<TensorInfo> {
        let info = self.find(names)?;
        if info.shape.iter().map(|&d| d as usize).ne(expected.iter().copied()) {
            return Err(Error::TensorShape {
                file: self.header.file.clone(),
                name: info.name.clone(),
                expected: format!("{expected:?}"),
                got: format!("{:?}", info.shape),
            });
        }
        Ok(info.clone())
    }

    /// A weight matrix `[rows, k]` in its stored format (the matmul dequantizes).
    pub fn matrix(&mut self, name: &str, rows: usize, k: usize) -> Result<Tensor> {
        let info = self.info(&[name], &[rows, k])?;
        self.uploads.tensor_as(self.gpu, self.src, self.header, &info, Convert::Keep)
    }

    /// A tensor's values as F32 on the CPU (norm scales, biases, small tables); any float format.
    pub fn values(&mut self, names: &[&str], shape: &[usize]) -> Result<Vec<f32>> {
        let info = self.info(names, shape)?;
        read_floats(self.src, &info)?.ok_or_else(|| Error::UnsupportedFormat {
            op: self.model,
            format: info.dtype.name().into(),
            why: format!("`{}` is a bias, norm scale or bias table; those must be F32, F16, BF16 or F8", info.name),
        })
    }

    /// A small weight of shape `shape` (a conv kernel) on the GPU: F16 when stored as F16 (exact),
    /// else F32 (from any float format).
    pub fn float_weight(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let stored_f16 = self.find(&[name])?.dtype == FileDType::Gpu(crate::gpu::DType::F16);
        let v = self.values(&[name], shape)?;
        if stored_f16 {
            self.gpu.upload_half(shape, &v, crate::gpu::DType::F16)
        } else {
            self.gpu.upload_f32(shape, &v)
        }
    }

    /// A vector `[len]` as an F32 GPU tensor.
    pub fn vector(&mut self, name: &str, len: usize) -> Result<Tensor> {
        let v = self.values(&[name], &[len])?;
        self.gpu.upload_f32(&[len], &v)
    }

    /// An embedding table `[rows, k]` (first present of `names`), in row ranges of at most
    /// `max_bytes` each on the GPU (at least one row per range).
    pub fn embedding_table(&mut self, names: &[&str], rows: usize, k: usize, max_bytes: u64) -> Result<EmbeddingTable> {
        let info = self.info(names, &[rows, k])?;
        let row_bytes = info.size / rows.max(1) as u64;
        if rows == 0 || row_bytes * rows as u64 != info.size {
            return Err(Error::UnsupportedFormat {
                op: self.model,
                format: info.dtype.name().into(),
                why: format!("`{}`: rows of {k} values are not whole blocks of this format", info.name),
            });
        }
        // The GPU copy may be wider than the file's rows (F8 → F16): size the ranges by the GPU's bytes.
        let gpu_row = row_bytes * if matches!(info.dtype, FileDType::F8E4M3 | FileDType::F8E5M2) { 2 } else { 1 };
        let per_part = (max_bytes / gpu_row.max(1)).max(1) as usize;
        let mut parts = Vec::new();
        for start in (0..rows).step_by(per_part) {
            let n = per_part.min(rows - start);
            let part = TensorInfo {
                name: format!("{}[{start}..{}]", info.name, start + n),
                shape: vec![n as u64, k as u64],
                dtype: info.dtype,
                offset: info.offset + start as u64 * row_bytes,
                size: n as u64 * row_bytes,
            };
            parts.push((start, self.uploads.tensor_as(self.gpu, self.src, self.header, &part, Convert::Keep)?));
        }
        Ok(EmbeddingTable { rows, k, parts })
    }
}

/// An embedding table held as row ranges `(first row, [n, k] tensor)`.
pub struct EmbeddingTable {
    pub rows: usize,
    pub k: usize,
    pub parts: Vec<(usize, Tensor)>,
}

impl EmbeddingTable {
    /// Rows `ids` as F32 `[ids.len(), k]`: one gather per range, ids outside a range read as zero
    /// rows there (the kernel's rule for out-of-range ids), and the partial results summed.
    pub fn gather(&self, gpu: &Gpu, b: &mut Batch, ids: &[u32]) -> Result<Tensor> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.rows) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the embedding table of {} rows",
                self.rows
            )));
        }
        let mut out: Option<Tensor> = None;
        for (start, t) in &self.parts {
            let (start, n) = (*start as u32, t.shape()[0] as u32);
            let local: Vec<u32> =
                ids.iter().map(|&i| if i >= start && i - start < n { i - start } else { u32::MAX }).collect();
            let ids_t = gpu.upload_u32(&[local.len()], &local)?;
            let part = embedding(gpu, b, t, &ids_t)?;
            out = Some(match out {
                None => part,
                Some(acc) => add(gpu, b, &acc, &part)?,
            });
        }
        out.ok_or_else(|| Error::InvalidArgument("empty embedding table".into()))
    }
}
