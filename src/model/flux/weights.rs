//! The FLUX transformer's weights on the GPU, a struct tree mirroring the checkpoint
//! (BFL `Flux`, src/flux/model.py @ 802fb47; diffusers names as mapped by
//! `convert_flux_transformer_checkpoint_to_diffusers`, src/diffusers/loaders/single_file_utils.py @ 58eb52c),
//! loaded by name from diffusers or BFL keys.
//!
//! diffusers' split projections (`to_q`/`to_k`/`to_v`, single blocks' `proj_mlp`) are fused into
//! our layout (BFL's `qkv` / `linear1`, rows concatenated) on load: each part streams into its
//! row range of one GPU tensor (a row-major concatenation along dim 0 is a concatenation of
//! storage, for floats and for quantized rows alike), so the CPU never holds more than the
//! loader's chunks. Biases and norm scales become F32.

use super::config::{FluxConfig, KeyScheme};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Tensor};
use crate::kernels::matmul::Precision;
use crate::weights::load::{
    converted_layout, read_floats, ByteSource, Convert, LoadOptions, Pacer, Uploads, CHUNK_BYTES, PACE_BYTES,
};
use crate::weights::tensor_info::{FileDType, TensorInfo, WeightsHeader};

/// `y = x·Wᵀ + b`: `w` `[N, K]` in any weight format, `b` F32 `[N]`; plus `lora`, the run-time
/// LoRA adapters on this weight (src/lora/, `FluxModel::set_loras`), not merged into `w` (merging
/// is `FluxModel::merge_loras`, which replaces `w`); `precision`, the arithmetic of its matmul
/// tiles (F32 unless `FluxModel::set_precision` asks for F16).
#[derive(Clone)]
pub struct Linear {
    pub w: Tensor,
    pub b: Tensor,
    pub lora: Option<crate::kernels::matmul::LoraStack>,
    pub precision: Precision,
}

/// Linear → SiLU → Linear (BFL `MLPEmbedder`, src/flux/modules/layers.py @ 802fb47: the time, guidance and
/// pooled-text embedders).
pub struct MlpEmbedder {
    pub linear_1: Linear,
    pub linear_2: Linear,
}

pub struct TimeTextEmbed {
    pub timestep: MlpEmbedder,
    /// dev only.
    pub guidance: Option<MlpEmbedder>,
    pub text: MlpEmbedder,
}

/// Double-stream block (BFL `DoubleStreamBlock`, src/flux/modules/layers.py @ 802fb47); `*_qkv` are fused
/// `[3·hidden, hidden]`.
#[derive(Clone)]
pub struct DoubleBlock {
    pub img_mod: Linear,
    pub txt_mod: Linear,
    pub img_qkv: Linear,
    pub txt_qkv: Linear,
    pub img_norm_q: Tensor,
    pub img_norm_k: Tensor,
    pub txt_norm_q: Tensor,
    pub txt_norm_k: Tensor,
    pub img_proj: Linear,
    pub txt_proj: Linear,
    pub img_mlp_0: Linear,
    pub img_mlp_2: Linear,
    pub txt_mlp_0: Linear,
    pub txt_mlp_2: Linear,
}

/// Single-stream block (BFL `SingleStreamBlock`, src/flux/modules/layers.py @ 802fb47); `linear1` is fused
/// `[3·hidden + mlp, hidden]` (q | k | v | mlp).
#[derive(Clone)]
pub struct SingleBlock {
    pub modulation: Linear,
    pub linear1: Linear,
    pub norm_q: Tensor,
    pub norm_k: Tensor,
    pub linear2: Linear,
}

/// Final AdaLN layer (BFL `LastLayer`, src/flux/modules/layers.py @ 802fb47; diffusers `norm_out`,
/// src/diffusers/models/transformers/transformer_flux.py @ 58eb52c). The modulation's shift and scale halves
/// sit in checkpoint order (BFL: shift first; diffusers: scale first), recorded as element offsets instead of
/// swapped.
pub struct NormOut {
    pub linear: Linear,
    pub shift_at: usize,
    pub scale_at: usize,
}

pub struct FluxWeights {
    pub x_embedder: Linear,
    pub context_embedder: Linear,
    pub time_text_embed: TimeTextEmbed,
    pub transformer_blocks: Vec<DoubleBlock>,
    pub single_transformer_blocks: Vec<SingleBlock>,
    pub norm_out: NormOut,
    pub proj_out: Linear,
}

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

    fn key(&self, d: &str, b: &str) -> String {
        self.scheme.key(d, b)
    }

    /// `{name}.weight` `[n, k]` and `{name}.bias` `[n]`, `name` in diffusers or BFL form.
    fn linear(&mut self, d: &str, b: &str, n: usize, k: usize) -> Result<Linear> {
        let name = self.key(d, b);
        Ok(Linear {
            w: self.matrix(&format!("{name}.weight"), n, k)?,
            b: self.vector(&[format!("{name}.bias")], &[n])?,
            lora: None,
            precision: Precision::F32,
        })
    }

    /// A fused projection: BFL stores it as `bfl` `[Σ rows, k]`; diffusers as the parts `parts`.
    fn fused(&mut self, parts: &[&str], bfl: &str, rows: &[usize], k: usize) -> Result<Linear> {
        match self.scheme.clone() {
            KeyScheme::Bfl { .. } => self.linear("", bfl, rows.iter().sum(), k),
            KeyScheme::Diffusers { prefix } => {
                let names = |s: &str| parts.iter().map(|p| format!("{prefix}{p}.{s}")).collect::<Vec<_>>();
                Ok(Linear {
                    w: self.fused_matrix(&names("weight"), rows, k)?,
                    b: self.vector(&names("bias"), rows)?,
                    lora: None,
                    precision: Precision::F32,
                })
            }
        }
    }

    fn scale(&mut self, d: &str, b: &str, len: usize) -> Result<Tensor> {
        let name = self.key(d, b);
        self.vector(&[name], &[len])
    }

    fn embedder(&mut self, d: &str, b: &str, k: usize, h: usize) -> Result<MlpEmbedder> {
        Ok(MlpEmbedder {
            linear_1: self.linear(&format!("{d}.linear_1"), &format!("{b}.in_layer"), h, k)?,
            linear_2: self.linear(&format!("{d}.linear_2"), &format!("{b}.out_layer"), h, h)?,
        })
    }

    fn double(&mut self, i: usize, c: &FluxConfig) -> Result<DoubleBlock> {
        let (h, m, hd) = (c.hidden(), c.mlp_hidden, c.head_dim);
        let (d, b) = (format!("transformer_blocks.{i}."), format!("double_blocks.{i}."));
        let (dk, bk) = (|s: &str| format!("{d}{s}"), |s: &str| format!("{b}{s}"));
        Ok(DoubleBlock {
            img_mod: self.linear(&dk("norm1.linear"), &bk("img_mod.lin"), 6 * h, h)?,
            txt_mod: self.linear(&dk("norm1_context.linear"), &bk("txt_mod.lin"), 6 * h, h)?,
            img_qkv: self.fused(
                &[&dk("attn.to_q"), &dk("attn.to_k"), &dk("attn.to_v")],
                &bk("img_attn.qkv"),
                &[h; 3],
                h,
            )?,
            txt_qkv: self.fused(
                &[&dk("attn.add_q_proj"), &dk("attn.add_k_proj"), &dk("attn.add_v_proj")],
                &bk("txt_attn.qkv"),
                &[h; 3],
                h,
            )?,
            img_norm_q: self.scale(&dk("attn.norm_q.weight"), &bk("img_attn.norm.query_norm.scale"), hd)?,
            img_norm_k: self.scale(&dk("attn.norm_k.weight"), &bk("img_attn.norm.key_norm.scale"), hd)?,
            txt_norm_q: self.scale(&dk("attn.norm_added_q.weight"), &bk("txt_attn.norm.query_norm.scale"), hd)?,
            txt_norm_k: self.scale(&dk("attn.norm_added_k.weight"), &bk("txt_attn.norm.key_norm.scale"), hd)?,
            img_proj: self.linear(&dk("attn.to_out.0"), &bk("img_attn.proj"), h, h)?,
            txt_proj: self.linear(&dk("attn.to_add_out"), &bk("txt_attn.proj"), h, h)?,
            img_mlp_0: self.linear(&dk("ff.net.0.proj"), &bk("img_mlp.0"), m, h)?,
            img_mlp_2: self.linear(&dk("ff.net.2"), &bk("img_mlp.2"), h, m)?,
            txt_mlp_0: self.linear(&dk("ff_context.net.0.proj"), &bk("txt_mlp.0"), m, h)?,
            txt_mlp_2: self.linear(&dk("ff_context.net.2"), &bk("txt_mlp.2"), h, m)?,
        })
    }

    fn single(&mut self, i: usize, c: &FluxConfig) -> Result<SingleBlock> {
        let (h, m, hd) = (c.hidden(), c.mlp_hidden, c.head_dim);
        let (d, b) = (format!("single_transformer_blocks.{i}."), format!("single_blocks.{i}."));
        let (dk, bk) = (|s: &str| format!("{d}{s}"), |s: &str| format!("{b}{s}"));
        Ok(SingleBlock {
            modulation: self.linear(&dk("norm.linear"), &bk("modulation.lin"), 3 * h, h)?,
            linear1: self.fused(
                &[&dk("attn.to_q"), &dk("attn.to_k"), &dk("attn.to_v"), &dk("proj_mlp")],
                &bk("linear1"),
                &[h, h, h, m],
                h,
            )?,
            norm_q: self.scale(&dk("attn.norm_q.weight"), &bk("norm.query_norm.scale"), hd)?,
            norm_k: self.scale(&dk("attn.norm_k.weight"), &bk("norm.key_norm.scale"), hd)?,
            linear2: self.linear(&dk("proj_out"), &bk("linear2"), h, h + m)?,
        })
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
        let diffusers = matches!(scheme, KeyScheme::Diffusers { .. });
        let mut l = Loader { gpu, src, header, scheme, convert: opts.convert, uploads: Uploads::new(header) };
        let h = c.hidden();
        let tte = "time_text_embed.";
        let time_text_embed = TimeTextEmbed {
            timestep: l.embedder(&format!("{tte}timestep_embedder"), "time_in", 256, h)?,
            guidance: if c.guidance {
                Some(l.embedder(&format!("{tte}guidance_embedder"), "guidance_in", 256, h)?)
            } else {
                None
            },
            text: l.embedder(&format!("{tte}text_embedder"), "vector_in", c.pooled_dim, h)?,
        };
        let weights = FluxWeights {
            x_embedder: l.linear("x_embedder", "img_in", h, c.in_channels)?,
            context_embedder: l.linear("context_embedder", "txt_in", h, c.context_dim)?,
            time_text_embed,
            transformer_blocks: (0..c.double_blocks).map(|i| l.double(i, c)).collect::<Result<_>>()?,
            single_transformer_blocks: (0..c.single_blocks).map(|i| l.single(i, c)).collect::<Result<_>>()?,
            norm_out: NormOut {
                linear: l.linear("norm_out.linear", "final_layer.adaLN_modulation.1", 2 * h, h)?,
                shift_at: if diffusers { h } else { 0 },
                scale_at: if diffusers { 0 } else { h },
            },
            proj_out: l.linear("proj_out", "final_layer.linear", c.out_channels, h)?,
        };
        Ok((weights, l.uploads))
    }
}
