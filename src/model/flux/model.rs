//! The whole FLUX transformer (BFL `Flux.forward`, src/flux/model.py @ 802fb47): embedders, the block stack
//! and the final layer, batch 1, f32 activations, everything on the GPU except the 256-value sinusoidal
//! embedding of the timestep and guidance (computed here and uploaded).

use super::config::FluxConfig;
use super::tree::MlpEmbedder;
use super::weights::FluxWeights;
use crate::error::{Error, Result};
use crate::gpu::{Batch, DType, Gpu, Tensor};
use crate::kernels::copy::{concat_rows, slice_rows};
use crate::kernels::elementwise::{activation, add, Activation};
use crate::kernels::matmul::Precision;
use crate::kernels::norm::{layer_norm_modulated, Modulation, EPS_FLUX};
use crate::kernels::rope::{flux_position_ids, RopeTables};
use crate::weights::load::{ByteSource, LoadOptions};
use crate::weights::tensor_info::WeightsHeader;

use super::blocks::linear;

/// Width of the sinusoidal embedding (BFL `timestep_embedding(t, 256)` in `Flux.forward`,
/// src/flux/model.py @ 802fb47).
pub const TIME_DIM: usize = 256;

/// Sinusoidal embedding of a scalar `s` (sigma or guidance) into 256 values, cos half first
/// (diffusers `get_timestep_embedding` with `flip_sin_to_cos=True`,
/// src/diffusers/models/embeddings.py @ 58eb52c): `T = 1000·s`, `f_j = exp(−ln(10000)·j/128)`,
/// `[cos(T·f_j) | sin(T·f_j)]`. `T`, `f_j` and `T·f_j` are rounded to f32 as in diffusers' f32 path (angles
/// reach 1000, so the rounding of
/// the angle matters at the 1e-5 level); cos/sin themselves are taken in f64.
pub fn timestep_embedding(s: f32) -> Vec<f32> {
    let half = TIME_DIM / 2;
    let t = s * 1000.0;
    let neg_ln = -(10000f64.ln()) as f32;
    let angles: Vec<f64> = (0..half)
        .map(|j| {
            let f = (((neg_ln * j as f32) / half as f32) as f64).exp() as f32;
            (t * f) as f64
        })
        .collect();
    angles.iter().map(|a| a.cos() as f32).chain(angles.iter().map(|a| a.sin() as f32)).collect()
}

/// One forward call's inputs, on the GPU: `img` `[L_img, in_channels]` packed latents, `txt`
/// `[L_txt, context_dim]`, `pooled` `[pooled_dim]`; `timestep` is sigma in [0, 1] (the model
/// multiplies by 1000); `guidance` the distilled guidance scale (dev only); `rope` the tables for
/// the joint sequence, text first (see [`FluxModel::rope_tables`]).
pub struct FluxInputs<'a> {
    pub img: &'a Tensor,
    pub txt: &'a Tensor,
    pub pooled: &'a Tensor,
    pub timestep: f32,
    pub guidance: Option<f32>,
    pub rope: &'a RopeTables,
}

/// What [`FluxModel::forward_head`] leaves for the rest of the forward: `svec = silu(vec)`
/// `[1, hidden]`, the image stream before (`img_in`, after `x_embedder`) and after (`img`) the
/// first double block, and the text stream after it (`txt`), `[L, hidden]` each.
pub struct FluxHead {
    pub svec: Tensor,
    pub img_in: Tensor,
    pub txt: Tensor,
    pub img: Tensor,
}

pub struct FluxModel {
    pub config: FluxConfig,
    pub weights: FluxWeights,
}

impl FluxModel {
    /// Loads the weights of `header`/`src` (diffusers or BFL names); the config is `config` when
    /// given (e.g. from `config.json`), else inferred from the tensor shapes.
    pub fn load(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        config: Option<FluxConfig>,
    ) -> Result<FluxModel> {
        FluxModel::load_with(gpu, src, header, config, &LoadOptions::default())
    }

    /// [`load`](Self::load) with options, e.g. `LoadOptions { convert: Convert::Q8_0 }` to quantize
    /// the weight matrices on the GPU while they stream (see `FluxWeights::load_with`).
    pub fn load_with(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        config: Option<FluxConfig>,
        opts: &LoadOptions,
    ) -> Result<FluxModel> {
        let config = match config {
            Some(c) => c,
            None => FluxConfig::infer(header)?,
        };
        let weights = FluxWeights::load_with(gpu, src, header, &config, opts)?;
        Ok(FluxModel { config, weights })
    }

    /// [`load_with`](Self::load_with) with paced uploads, for async callers (see
    /// `FluxWeights::load_paced`): what a browser must use for a multi-gigabyte transformer.
    pub async fn load_paced(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        config: FluxConfig,
        opts: &LoadOptions,
    ) -> Result<FluxModel> {
        let weights = FluxWeights::load_paced(gpu, src, header, &config, opts).await?;
        Ok(FluxModel { config, weights })
    }

    /// The tile arithmetic of every matmul of the transformer: `Precision::F32` (the default, what
    /// the golden tests bound at 1e-5 per kernel) or `Precision::F16` (f16 products, f32
    /// accumulation; lets GPUs use the f16 FMA tiles and the cooperative-matrix path, at ~1e-3
    /// relative error per matmul, see tests/model_flux_f16.rs). F16 on an adapter without
    /// `shader-f16` is `Error::MissingFeature` and changes nothing. Cheap: no upload, no
    /// recompilation until the next forward.
    pub fn set_precision(&mut self, gpu: &Gpu, p: Precision) -> Result<()> {
        if p == Precision::F16 && !gpu.features().shader_f16 {
            return Err(Error::MissingFeature { op: "FLUX transformer (f16 matmul tiles)", feature: "shader-f16" });
        }
        for l in self.weights.linears_mut() {
            l.precision = p;
        }
        Ok(())
    }

    /// The tile precision of the transformer's matmuls (that of its first Linear; `set_precision`
    /// keeps them all equal).
    pub fn precision(&self) -> Precision {
        self.weights.img_in.precision
    }

    /// RoPE tables for `txt_len` text tokens and a `rows × cols` packed-latent grid (H/16 × W/16).
    pub fn rope_tables(&self, gpu: &Gpu, txt_len: usize, rows: usize, cols: usize) -> Result<RopeTables> {
        RopeTables::new(gpu, &flux_position_ids(txt_len, rows, cols), &self.config.axes_dim, self.config.theta)
    }

    /// Compiles every pipeline a forward pass over `txt_len` text tokens and a `rows × cols` token
    /// grid uses, and leaves in the buffer pool the intermediates it allocates, by recording one
    /// forward on placeholder inputs into a dry batch (`Gpu::dry_batch`: nothing runs on the GPU).
    /// After it, a forward at this size compiles no pipeline and takes its buffers from the pool.
    pub fn warm_up(&self, gpu: &Gpu, txt_len: usize, rows: usize, cols: usize) -> Result<()> {
        let c = &self.config;
        let img = gpu.empty(&[rows * cols, c.in_channels], DType::F32)?;
        let txt = gpu.empty(&[txt_len, c.context_dim], DType::F32)?;
        let pooled = gpu.empty(&[c.pooled_dim], DType::F32)?;
        let rope = self.rope_tables(gpu, txt_len, rows, cols)?;
        let inp = FluxInputs { img: &img, txt: &txt, pooled: &pooled, timestep: 1.0, guidance: Some(1.0), rope: &rope };
        let mut b = gpu.dry_batch();
        self.forward(gpu, &mut b, &inp)?;
        gpu.submit(b)
    }

    /// The velocity `[L_img, out_channels]` for `inp` (BFL `Flux.forward`, src/flux/model.py @ 802fb47).
    pub fn forward(&self, gpu: &Gpu, b: &mut Batch, inp: &FluxInputs) -> Result<Tensor> {
        self.forward_traced(gpu, b, inp, &mut |_, _| {})
    }

    /// Like [`forward`](Self::forward), calling `trace(name, tensor)` with intermediate results:
    /// `"temb"` `[1, hidden]`, `"double{i}/txt"`, `"double{i}/img"` after each double block,
    /// `"single{i}"` (joint `[L_txt + L_img, hidden]`, text first) after each single block. The
    /// tensors are written by commands recorded in `b` (flushed after every block); read them after
    /// submitting it. The same three parts the step cache runs separately: [`forward_head`],
    /// [`forward_tail`], [`final_layer`].
    ///
    /// [`forward_head`]: Self::forward_head
    /// [`forward_tail`]: Self::forward_tail
    /// [`final_layer`]: Self::final_layer
    pub fn forward_traced(
        &self,
        gpu: &Gpu,
        b: &mut Batch,
        inp: &FluxInputs,
        trace: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<Tensor> {
        let FluxHead { svec, img_in, txt, img } = self.forward_head(gpu, b, inp, trace)?;
        drop(img_in); // back to the pool: a forward holds one block's activations at a time
        let img = self.forward_tail(gpu, b, inp, &svec, txt, img, trace)?;
        self.final_layer(gpu, b, &svec, &img)
    }

    /// The embedders and the first double block (the start of BFL `Flux.forward`,
    /// src/flux/model.py @ 802fb47): what the step cache runs every step to decide whether the remaining
    /// blocks must run.
    pub fn forward_head(
        &self,
        gpu: &Gpu,
        b: &mut Batch,
        inp: &FluxInputs,
        trace: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<FluxHead> {
        let (c, w) = (&self.config, &self.weights);
        self.check_inputs(inp)?;

        // vec = t_emb (+ g_emb) + y_emb (BFL `Flux.forward`); every modulation consumes silu(vec) (BFL
        // `Modulation`, src/flux/modules/layers.py @ 802fb47).
        let mut vec = self.embed_scalar(gpu, b, inp.timestep, &w.time_in)?;
        if let Some(g) = &w.guidance_in {
            let s = inp
                .guidance
                .ok_or_else(|| Error::InvalidArgument("this FLUX model (dev) needs a guidance value".into()))?;
            let g_emb = self.embed_scalar(gpu, b, s, g)?;
            vec = add(gpu, b, &vec, &g_emb)?;
        }
        let pooled = inp.pooled.reshape(&[1, c.pooled_dim])?;
        let y = mlp(gpu, b, &pooled, &w.vector_in)?;
        let vec = add(gpu, b, &vec, &y)?;
        trace("temb", &vec);
        let svec = activation(gpu, b, &vec, Activation::Silu)?;

        // The input projections (`img_in`, `txt_in`), then the first double block (BFL `Flux.forward`).
        let img_in = linear(gpu, b, inp.img, &w.img_in, None)?;
        let txt = linear(gpu, b, inp.txt, &w.txt_in, None)?;
        let (txt, img) = match w.double_blocks.first() {
            Some(blk) => {
                let (txt, img) = blk.forward(gpu, b, c, &txt, &img_in, &svec, inp.rope)?;
                trace("double0/txt", &txt);
                trace("double0/img", &img);
                b.flush(gpu)?;
                (txt, img)
            }
            None => (txt, img_in.clone()),
        };
        Ok(FluxHead { svec, img_in, txt, img })
    }

    /// The remaining double blocks and the single blocks after [`forward_head`](Self::forward_head):
    /// from its `svec`, `txt` and `img` (taken, so that a caller that keeps no clone frees them
    /// after the next block): the image stream `[L_img, hidden]` that enters the final
    /// layer.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_tail(
        &self,
        gpu: &Gpu,
        b: &mut Batch,
        inp: &FluxInputs,
        svec: &Tensor,
        mut txt: Tensor,
        mut img: Tensor,
        trace: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<Tensor> {
        let (c, w) = (&self.config, &self.weights);
        let (lt, li) = (txt.rows(), img.rows());
        for (i, blk) in w.double_blocks.iter().enumerate().skip(1) {
            (txt, img) = blk.forward(gpu, b, c, &txt, &img, svec, inp.rope)?;
            trace(&format!("double{i}/txt"), &txt);
            trace(&format!("double{i}/img"), &img);
            // Submit block by block: the block's intermediates go back to the pool, so a step
            // needs the memory of one block's activations, not of all 57 (hundreds of MB each
            // at 1024²).
            b.flush(gpu)?;
        }
        // Single blocks on the joint sequence, text first; then keep the image tokens (BFL `Flux.forward`).
        let mut x = concat_rows(gpu, b, &txt, &img)?;
        for (i, blk) in w.single_blocks.iter().enumerate() {
            x = blk.forward(gpu, b, c, &x, svec, inp.rope)?;
            trace(&format!("single{i}"), &x);
            b.flush(gpu)?;
        }
        slice_rows(gpu, b, &x, lt, li)
    }

    /// The final layer (BFL `LastLayer`, src/flux/modules/layers.py @ 802fb47) on the image stream `img`
    /// `[L_img, hidden]` with `svec = silu(vec)` from the head: the velocity `[L_img, out_channels]`
    /// (shift/scale halves in checkpoint order, see
    /// `LastLayer`).
    pub fn final_layer(&self, gpu: &Gpu, b: &mut Batch, svec: &Tensor, img: &Tensor) -> Result<Tensor> {
        let w = &self.weights;
        let m = linear(gpu, b, svec, &w.final_layer.ada_ln_modulation, None)?;
        let modulation = Modulation { tensor: &m, shift: w.final_layer.shift_at, scale: w.final_layer.scale_at };
        let n = layer_norm_modulated(gpu, b, img, &modulation, EPS_FLUX)?;
        linear(gpu, b, &n, &w.final_layer.linear, None)
    }

    /// `mlp(sinusoid(s))` `[1, hidden]`.
    fn embed_scalar(&self, gpu: &Gpu, b: &mut Batch, s: f32, e: &MlpEmbedder) -> Result<Tensor> {
        let emb = gpu.upload_f32(&[1, TIME_DIM], &timestep_embedding(s))?;
        mlp(gpu, b, &emb, e)
    }

    fn check_inputs(&self, inp: &FluxInputs) -> Result<()> {
        let c = &self.config;
        let err = |what: &str, expected: String, t: &Tensor| {
            Err(Error::InvalidArgument(format!(
                "FLUX input `{what}`: expected {expected} F32, got {:?} {}",
                t.shape(),
                t.dtype()
            )))
        };
        let is = |t: &Tensor, cols: usize| {
            t.dtype() == DType::F32 && t.shape().len() == 2 && t.shape()[1] == cols && t.shape()[0] > 0
        };
        if !is(inp.img, c.in_channels) {
            return err("img", format!("[L_img, {}]", c.in_channels), inp.img);
        }
        if !is(inp.txt, c.context_dim) {
            return err("txt", format!("[L_txt, {}]", c.context_dim), inp.txt);
        }
        if inp.pooled.dtype() != DType::F32 || inp.pooled.numel() != c.pooled_dim {
            return err("pooled", format!("[{}]", c.pooled_dim), inp.pooled);
        }
        let l = inp.txt.rows() + inp.img.rows();
        if inp.rope.positions() != l || inp.rope.head_dim() != c.head_dim {
            return Err(Error::InvalidArgument(format!(
                "FLUX input `rope`: tables for {} positions of head dim {}, but the joint sequence has {l} tokens of head dim {}",
                inp.rope.positions(),
                inp.rope.head_dim(),
                c.head_dim
            )));
        }
        Ok(())
    }
}

/// Linear → SiLU → Linear.
fn mlp(gpu: &Gpu, b: &mut Batch, x: &Tensor, e: &MlpEmbedder) -> Result<Tensor> {
    let h = linear(gpu, b, x, &e.in_layer, Some(Activation::Silu))?;
    linear(gpu, b, &h, &e.out_layer, None)
}
