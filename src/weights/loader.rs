//! The one checked loader every model builds its weights with: tensors by name (or the first
//! present of several aliases), each checked against the shape the model's config implies, and
//! uploaded in a format the kernels read. File formats stay here: models ask for a matrix, a
//! matrix fused from split parts, a vector, a small float weight or a table in row ranges, and
//! never see a `FileDType`, an F8 scale or a quantized block.
//!
//! Matrices and tables are planned ([`Uploads`]: allocated now, their bytes streamed once the
//! weight tree is built, paced in the browser); vectors and small weights are read whole on the
//! CPU and uploaded at once.

use super::fp8::weight_scale;
use super::load::{converted_layout, read_floats, ByteSource, Convert};
use super::tensor_info::{FileDType, TensorInfo, WeightsHeader};
use super::upload::Uploads;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};

/// How a tensor the file lacks is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// [`Error::MissingTensor`]: the FLUX transformer and the VAE (their tensor names say which).
    Tensor,
    /// [`Error::MissingModelTensor`], naming the model: the text encoders and the preview decoder,
    /// whose files are easily swapped for one another.
    ModelTensor,
}

/// Loads tensors of `header` (read from `src`) by name, checking shapes.
pub struct TensorLoader<'a> {
    gpu: &'a Gpu,
    src: &'a mut dyn ByteSource,
    header: &'a WeightsHeader,
    /// Names the model in errors, e.g. "T5 text encoder".
    model: &'static str,
    missing: Missing,
    /// Requested conversion of weight matrices, applied per tensor by [`Convert::for_tensor`].
    convert: Convert,
    /// The matrices' and tables' bytes, streamed once the weight tree is built.
    uploads: Uploads,
}

impl<'a> TensorLoader<'a> {
    pub fn new(
        gpu: &'a Gpu,
        src: &'a mut dyn ByteSource,
        header: &'a WeightsHeader,
        model: &'static str,
        missing: Missing,
    ) -> TensorLoader<'a> {
        TensorLoader { gpu, src, header, model, missing, convert: Convert::Keep, uploads: Uploads::new(header) }
    }

    /// Converts weight matrices as `convert` asks (per tensor, [`Convert::for_tensor`]).
    pub fn converting(self, convert: Convert) -> TensorLoader<'a> {
        TensorLoader { convert, ..self }
    }

    /// The planned uploads, and the source to stream them from.
    pub fn finish(self) -> (Uploads, &'a mut dyn ByteSource) {
        (self.uploads, self.src)
    }

    /// The first of `names` the file has (an error naming all of them if none).
    pub fn find(&self, names: &[&str]) -> Result<&TensorInfo> {
        names.iter().find_map(|n| self.header.tensor(n)).ok_or_else(|| {
            let (file, name) = (self.header.file.clone(), names.join("` or `"));
            match self.missing {
                Missing::Tensor => Error::MissingTensor { file, name },
                Missing::ModelTensor => Error::MissingModelTensor { model: self.model, file, name },
            }
        })
    }

    /// The first present of `names`, with one of the `accepted` shapes.
    pub fn info(&self, names: &[&str], accepted: &[&[usize]]) -> Result<TensorInfo> {
        let info = self.find(names)?;
        let got: Vec<usize> = info.shape.iter().map(|&d| d as usize).collect();
        if !accepted.contains(&got.as_slice()) {
            return Err(Error::TensorShape {
                file: self.header.file.clone(),
                name: info.name.clone(),
                expected: accepted.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" or "),
                got: format!("{:?}", info.shape),
            });
        }
        Ok(info.clone())
    }

    /// A weight matrix `[rows, k]` as stored (any format the loader knows; the matmul dequantizes),
    /// or converted as [`converting`](Self::converting) asked.
    pub fn matrix(&mut self, name: &str, rows: usize, k: usize) -> Result<Tensor> {
        let info = self.info(&[name], &[&[rows, k]])?;
        let convert = Convert::for_tensor(&info, self.convert);
        self.uploads.tensor_as(self.gpu, self.src, self.header, &info, convert)
    }

    /// Several `[rows_i, k]` matrices of one format stacked along rows (diffusers' split `to_q`,
    /// `to_k`, `to_v` as BFL's `qkv`), assembled on the GPU: each part streams into its row range
    /// of the fused tensor (a row-major concatenation along dim 0 is a concatenation of storage,
    /// for floats and quantized rows alike), so the fused matrix — a FLUX single block's
    /// q | k | v | mlp is 126 MiB in F32 — never passes through the CPU's memory whole.
    pub fn fused_matrix(&mut self, parts: &[(String, usize)], k: usize) -> Result<Tensor> {
        if let [(one, rows)] = parts {
            return self.matrix(one, *rows, k);
        }
        let names = || parts.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
        let mut infos: Vec<TensorInfo> = Vec::new();
        for (name, rows) in parts {
            let info = self.info(&[name], &[&[*rows, k]])?;
            if weight_scale(self.src, self.header, &info)? != 1.0 {
                let why = format!("`{name}` has a scale_weight but is fused from split parts; scaled fp8 is read in BFL names (as ComfyUI writes it)");
                return Err(Error::UnsupportedFormat { op: self.model, format: "scaled fp8".into(), why });
            }
            if infos.first().is_some_and(|p| p.dtype != info.dtype) {
                let why = format!("`{name}` differs in format from the projections it is fused with ({})", names());
                return Err(Error::UnsupportedFormat { op: self.model, format: info.dtype.name().into(), why });
            }
            infos.push(info);
        }
        let fused = TensorInfo {
            name: parts.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join("+"),
            shape: vec![parts.iter().map(|(_, r)| *r as u64).sum(), k as u64],
            dtype: infos.first().map_or(FileDType::Gpu(DType::F32), |p| p.dtype),
            offset: 0,
            size: infos.iter().map(|p| p.size).sum(),
        };
        // Every part has the fused matrix's format and row width, so one conversion fits all.
        let convert = Convert::for_tensor(&fused, self.convert);
        let (shape, dtype) = converted_layout(&self.header.file, &fused, convert)?;
        let dst = self.gpu.empty(&shape, dtype)?;
        let mut first_row = 0;
        for (info, (_, rows)) in infos.iter().zip(parts) {
            self.uploads.rows_into(self.src, self.header, info, convert, &dst, first_row)?;
            first_row += rows;
        }
        Ok(dst)
    }

    /// A tensor's values as F32 on the CPU (biases, norm scales, small tables), from any float
    /// format; checked to have one of the `accepted` shapes.
    pub fn values(&mut self, names: &[&str], accepted: &[&[usize]]) -> Result<Vec<f32>> {
        let info = self.info(names, accepted)?;
        let v = read_floats(self.src, &info)?.ok_or_else(|| Error::UnsupportedFormat {
            op: self.model,
            format: info.dtype.name().into(),
            why: format!("`{}` is read as values (a bias, norm scale, table or small weight); those must be F32, F16, BF16 or F8", info.name),
        })?;
        let numel: u64 = info.shape.iter().product();
        if v.len() as u64 != numel {
            return Err(Error::TensorShape {
                file: self.header.file.clone(),
                name: info.name,
                expected: format!("{numel} elements"),
                got: format!("{} values", v.len()),
            });
        }
        Ok(v)
    }

    /// A vector `[len]` as an F32 GPU tensor.
    pub fn vector(&mut self, name: &str, len: usize) -> Result<Tensor> {
        self.concat_vector(&[(name.to_string(), len)])
    }

    /// Vectors `(name, len)` concatenated into one F32 GPU tensor (the biases of split projections).
    pub fn concat_vector(&mut self, parts: &[(String, usize)]) -> Result<Tensor> {
        let mut v = Vec::new();
        for (name, len) in parts {
            v.extend(self.values(&[name], &[&[*len]])?);
        }
        self.gpu.upload_f32(&[v.len()], &v)
    }

    /// A small weight (a conv kernel) with one of the `accepted` shapes, uploaded as `shape` (the
    /// same elements): F16 when stored as F16 (exact), else F32 (from any float format).
    pub fn float_weight(&mut self, name: &str, accepted: &[&[usize]], shape: &[usize]) -> Result<Tensor> {
        let stored_f16 = self.find(&[name])?.dtype == FileDType::Gpu(DType::F16);
        let v = self.values(&[name], accepted)?;
        if stored_f16 {
            self.gpu.upload_half(shape, &v, DType::F16)
        } else {
            self.gpu.upload_f32(shape, &v)
        }
    }

    /// A table `[rows, k]` (first present of `names`) in row ranges `(first row, [n, k] tensor)` of
    /// at most `max_bytes` each on the GPU (at least one row per range): a table larger than one
    /// storage binding (T5-XXL's `[32128, 4096]`, 526 MB in F32) is gathered in pieces.
    pub fn row_ranges(
        &mut self,
        names: &[&str],
        rows: usize,
        k: usize,
        max_bytes: u64,
    ) -> Result<Vec<(usize, Tensor)>> {
        let info = self.info(names, &[&[rows, k]])?;
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
        Ok(parts)
    }
}
