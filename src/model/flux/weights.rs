//! The FLUX transformer's weights on the GPU: the tree of `tree.rs` built by a checkpoint loader
//! that reads each key in the file's scheme (diffusers or BFL names, detected).
//!
//! diffusers' split projections (`to_q`/`to_k`/`to_v`, single blocks' `proj_mlp`) are fused into
//! our layout (BFL's `qkv` / `linear1`, rows concatenated) on load: each part streams into its
//! row range of one GPU tensor (a row-major concatenation along dim 0 is a concatenation of
//! storage, for floats and for quantized rows alike), so the CPU never holds more than the
//! loader's chunks. Biases and norm scales become F32.

use super::config::{FluxConfig, KeyScheme};
use super::tree::{Build, FluxTree, LinearKey, ScaleKey};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Tensor};
pub use crate::model::layers::Linear;
use crate::weights::load::{
    converted_layout, read_floats, ByteSource, Convert, LoadOptions, Pacer, Uploads, CHUNK_BYTES, PACE_BYTES,
};
use crate::weights::tensor_info::{FileDType, TensorInfo, WeightsHeader};

/// The transformer's weights on the GPU: the tree (`tree.rs`) with a Linear at each Linear key and
/// an F32 tensor at each norm scale key.
pub type FluxWeights = FluxTree<Linear, Tensor>;

/// Loads tensors by name, checking each against the shape the config expects.
struct Loader<'a> {
    gpu: &'a Gpu,
    src: &'a mut dyn ByteSource,
    header: &'a WeightsHeader,
    scheme: KeyScheme,
    /// Requested conversion of weight matrices, applied per tensor by `Convert::for_tensor`.
    convert: Convert,
    /// The weight matrices' bytes, streamed after the tree is built (`FluxWeights::load_paced`).
    uploads: Uploads,
}

impl Loader<'_> {
    fn info(&self, name: &str, expected: &[usize]) -> Result<&TensorInfo> {
        let file = &self.header.file;
        let info =
            self.header.tensor(name).ok_or_else(|| Error::MissingTensor { file: file.clone(), name: name.into() })?;
        if info.shape.iter().map(|&d| d as usize).ne(expected.iter().copied()) {
            return Err(Error::TensorShape {
                file: file.clone(),
                name: name.into(),
                expected: format!("{expected:?}"),
                got: format!("{:?}", info.shape),
            });
        }
        Ok(info)
    }

    /// A weight matrix `[rows, k]` as stored (any format the loader knows), or converted as `convert` asks.
    fn matrix(&mut self, name: &str, rows: usize, k: usize) -> Result<Tensor> {
        let info = self.info(name, &[rows, k])?.clone();
        self.uploads.tensor_as(self.gpu, self.src, self.header, &info, Convert::for_tensor(&info, self.convert))
    }

    /// Several `[rows_i, k]` matrices of one format stacked along rows, assembled on the GPU: each
    /// part streams into its row range of the fused tensor (a single block's q | k | v | mlp is
    /// 126 MiB at FLUX width in F32 — it never passes through the CPU's memory whole).
    fn fused_matrix(&mut self, names: &[String], rows: &[usize], k: usize) -> Result<Tensor> {
        let mut parts = Vec::new();
        for (name, &r) in names.iter().zip(rows) {
            let info = self.info(name, &[r, k])?.clone();
            if crate::weights::fp8::weight_scale(self.src, self.header, &info)? != 1.0 {
                let why = format!("`{name}` has a scale_weight but is fused from split parts; scaled fp8 is read in BFL names (as ComfyUI writes it)");
                return Err(Error::UnsupportedFormat { op: "FLUX weights", format: "scaled fp8".into(), why });
            }
            if parts.first().is_some_and(|p: &TensorInfo| p.dtype != info.dtype) {
                return Err(Error::UnsupportedFormat {
                    op: "FLUX weights",
                    format: info.dtype.name().into(),
                    why: format!(
                        "`{name}` differs in format from the projections it is fused with ({})",
                        names.join(", ")
                    ),
                });
            }
            parts.push(info);
        }
        let total: usize = rows.iter().sum();
        let fused = TensorInfo {
            name: names.join("+"),
            shape: vec![total as u64, k as u64],
            dtype: parts.first().map_or(FileDType::Gpu(DType::F32), |p| p.dtype),
            offset: 0,
            size: parts.iter().map(|p| p.size).sum(),
        };
        // Every part has the fused matrix's format and row width, so one conversion fits all.
        let convert = Convert::for_tensor(&fused, self.convert);
        let (shape, dtype) = converted_layout(&self.header.file, &fused, convert)?;
        let dst = self.gpu.empty(&shape, dtype)?;
        let mut first_row = 0;
        for (info, &r) in parts.iter().zip(rows) {
            self.uploads.rows_into(self.src, self.header, info, convert, &dst, first_row)?;
            first_row += r;
        }
        Ok(dst)
    }

    /// A vector (bias, norm scale) as F32 values on the CPU.
    fn vector_values(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let info = self.info(name, &[len])?.clone();
        read_floats(self.src, &info)?.ok_or_else(|| Error::UnsupportedFormat {
            op: "FLUX weights",
            format: info.dtype.name().into(),
            why: format!("`{name}` is a bias or norm scale; those must be F32, F16, BF16 or F8"),
        })
    }

    fn vector(&mut self, names: &[String], lens: &[usize]) -> Result<Tensor> {
        let mut v = Vec::new();
        for (name, &len) in names.iter().zip(lens) {
            v.extend(self.vector_values(name, len)?);
        }
        self.gpu.upload_f32(&[v.len()], &v)
    }
}

impl Build for Loader<'_> {
    type Linear = Linear;
    type Scale = Tensor;
    type Error = Error;

    /// `weight` `[n, k]` and `bias` `[n]` under the key's BFL name, or its diffusers parts fused.
    fn linear(&mut self, key: LinearKey) -> Result<Linear> {
        let names = |s: &str| key.names(&self.scheme, s).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        let (weights, biases) = (names("weight"), names("bias"));
        let rows: Vec<usize> = key.names(&self.scheme, "weight").into_iter().map(|(_, r)| r).collect();
        let w = match weights.as_slice() {
            [one] => self.matrix(one, key.n, key.k)?,
            parts => self.fused_matrix(parts, &rows, key.k)?,
        };
        Ok(Linear::new(w, self.vector(&biases, &rows)?))
    }

    fn scale(&mut self, key: ScaleKey) -> Result<Tensor> {
        self.vector(&[key.name(&self.scheme)], &[key.len])
    }

    fn scale_first(&self) -> bool {
        matches!(self.scheme, KeyScheme::Diffusers { .. })
    }
}

impl FluxWeights {
    /// Loads every tensor `config` calls for from `src` (whose parsed header is `header`), in
    /// diffusers or BFL names (detected). A missing tensor is `Error::MissingTensor`, a tensor of
    /// another shape than the config implies `Error::TensorShape`, both naming the tensor.
    pub fn load(gpu: &Gpu, src: &mut dyn ByteSource, header: &WeightsHeader, c: &FluxConfig) -> Result<FluxWeights> {
        FluxWeights::load_with(gpu, src, header, c, &LoadOptions::default())
    }

    /// [`load`](Self::load) with options: `opts.convert` converts the weight matrices while they
    /// stream (e.g. BF16 → Q8_0 on the GPU), per tensor as `Convert::for_tensor` decides; biases
    /// and norm scales are F32 either way.
    pub fn load_with(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        c: &FluxConfig,
        opts: &LoadOptions,
    ) -> Result<FluxWeights> {
        let (weights, uploads) = FluxWeights::plan(gpu, src, header, c, opts)?;
        uploads.run_now(gpu, src)?;
        Ok(weights)
    }

    /// [`load_with`](Self::load_with) for async callers (the browser's worker): the matrices
    /// stream with a wait for the GPU's queue every [`PACE_BYTES`], so that a browser's staging
    /// memory stays bounded whatever the file's size.
    pub async fn load_paced(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        c: &FluxConfig,
        opts: &LoadOptions,
    ) -> Result<FluxWeights> {
        let (weights, uploads) = FluxWeights::plan(gpu, src, header, c, opts)?;
        uploads.run(gpu, src, CHUNK_BYTES, Pacer::every(PACE_BYTES)).await?;
        Ok(weights)
    }

    /// The weight tree with its matrices allocated, and the uploads that fill them.
    fn plan(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        c: &FluxConfig,
        opts: &LoadOptions,
    ) -> Result<(FluxWeights, Uploads)> {
        // A config built in code skipped `from_diffusers_json`'s caps; they bound the block lists.
        c.check_caps(&header.file)?;
        c.validate()?;
        let scheme = KeyScheme::detect(header)?;
        let mut l = Loader { gpu, src, header, scheme, convert: opts.convert, uploads: Uploads::new(header) };
        let weights = FluxTree::build(c, &mut l)?;
        Ok((weights, l.uploads))
    }
}
