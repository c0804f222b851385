//! The FLUX denoising loop on the GPU (diffusers `FluxPipeline.__call__`,
//! src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c): for each step `t`, `v = model(x, sigma_t)` then
//! `x ← x + (sigma_{t+1} − sigma_t)·v`, exactly as diffusers'
//! FluxPipeline with `FlowMatchEulerDiscreteScheduler` does it. One command submission per step
//! and no read-back: the final packed latents stay on the GPU for the VAE (or a test) to read.
//! [`Sampler`] is the loop as a stepper (the browser awaits between steps); [`sample`] runs it whole.
//! With a step cache (`step_cache`), a step also reads back one small reduction to decide whether
//! to run the transformer's remaining blocks.

use super::conditioning::Conditioning;
use super::schedule::{flux_sigmas, FluxVariant};
use super::seed::latent_hw;
use super::step_cache::{CacheRun, CacheStep, StepCache};
use crate::error::{Error, Result};
use crate::gpu::{Batch, Gpu, Tensor};
use crate::kernels::elementwise::gated_add;
use crate::kernels::rope::RopeTables;
use crate::model::flux::{FluxInputs, FluxModel};
use crate::weights::load::{read_floats, read_header, ByteSource};

/// What one sampler run does besides its inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleOptions {
    /// Canvas in pixels; diffusers rounds each side down to a multiple of 16.
    pub height: usize,
    pub width: usize,
    pub steps: usize,
    /// Distilled guidance scale, for dev models (those with a guidance embedder); ignored by
    /// schnell models.
    pub guidance: Option<f32>,
    /// Picks the sigma schedule (dev: resolution-dependent shift; schnell: unshifted).
    pub variant: FluxVariant,
    /// Skip the transformer's remaining blocks on steps where the first block's output barely
    /// changed (`step_cache`); `None`: every step runs every block.
    pub step_cache: Option<StepCache>,
}

/// Reported after each step's commands are recorded and submitted: `index` counts from 0 to
/// `steps − 1`; `latents` (`[L_img, 64]`) is the state after the step, valid once the GPU has
/// run the submission (read it, or keep a clone, to see it).
pub struct Step<'a> {
    pub index: usize,
    pub steps: usize,
    pub sigma: f32,
    pub sigma_next: f32,
    pub latents: &'a Tensor,
}

/// What [`Sampler::step`] reports: `index` counts from 0 to `steps − 1`; the step went from
/// `sigma` to `sigma_next`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepInfo {
    pub index: usize,
    pub steps: usize,
    pub sigma: f32,
    pub sigma_next: f32,
    /// With a step cache: whether this step ran the remaining blocks, and the distance measured.
    pub cache: Option<CacheStep>,
}

/// The denoising loop as a stepper the caller drives, one step (one submission) per call, so that
/// a browser can await between steps (progress, cancel). Optional reference [`Conditioning`] is
/// re-imposed inside each step's submission.
pub struct Sampler<'a> {
    model: &'a FluxModel,
    txt: &'a Tensor,
    pooled: &'a Tensor,
    guidance: Option<f32>,
    sigmas: Vec<f32>,
    /// Each step's Euler `dt = sigma_{i+1} − sigma_i` (f32), uploaded once per run.
    dts: Vec<Tensor>,
    rope: RopeTables,
    /// The initial packed noise, kept on the GPU for re-imposing references (never written again:
    /// every step writes a fresh tensor); only with conditioning. Its own buffer, not the first
    /// step's input, so that every step frees and takes the same buffers (no allocation after the
    /// first).
    noise: Option<Tensor>,
    x: Tensor,
    cond: Option<Conditioning>,
    cache: Option<CacheRun>,
    done: usize,
}

impl<'a> Sampler<'a> {
    /// Prepares a run from `noise` (packed `[L_img·64]` values, e.g. `seed::flux_noise` or
    /// [`noise_from_source`]) with text conditioning `txt` `[L_txt, context_dim]` and `pooled`
    /// `[pooled_dim]`; `cond` must be built for the same canvas (its token grid).
    pub fn new(
        gpu: &Gpu,
        model: &'a FluxModel,
        txt: &'a Tensor,
        pooled: &'a Tensor,
        noise: &[f32],
        opts: &SampleOptions,
        cond: Option<Conditioning>,
    ) -> Result<Sampler<'a>> {
        let (h, w) = latent_hw(opts.height, opts.width);
        let (rows, cols) = (h / 2, w / 2);
        let channels = model.config.in_channels;
        if rows == 0 || cols == 0 || opts.steps == 0 {
            return Err(Error::InvalidArgument(format!(
                "sampler: canvas {}×{} with {} steps; both sides must be at least 16 px and steps at least 1",
                opts.height, opts.width, opts.steps
            )));
        }
        if noise.len() != rows * cols * channels {
            return Err(Error::ShapeMismatch {
                op: "sampler noise",
                expected: format!(
                    "{} values ([{}, {channels}] packed latents for {}×{} px)",
                    rows * cols * channels,
                    rows * cols,
                    opts.height,
                    opts.width
                ),
                got: format!("{} values", noise.len()),
            });
        }
        if let Some(c) = &cond {
            if c.token_grid() != (rows, cols) || c.channels() != channels {
                return Err(Error::ShapeMismatch {
                    op: "sampler conditioning",
                    expected: format!(
                        "{rows}×{cols} tokens of {channels} features ({}×{} px)",
                        opts.width, opts.height
                    ),
                    got: format!("{}×{} tokens of {} features", c.token_grid().0, c.token_grid().1, c.channels()),
                });
            }
        }
        let sigmas = flux_sigmas(opts.steps, rows * cols, opts.variant);
        let rope = model.rope_tables(gpu, txt.rows(), rows, cols)?;
        let guidance = if model.config.guidance { opts.guidance } else { None };
        let x = gpu.upload_f32(&[rows * cols, channels], noise)?;
        let noise = if cond.is_some() { Some(gpu.upload_f32(&[rows * cols, channels], noise)?) } else { None };
        let dts = sigmas.windows(2).map(|s| gpu.upload_f32(&[1], &[s[1] - s[0]])).collect::<Result<Vec<_>>>()?;
        let cache = opts.step_cache.map(CacheRun::new).transpose()?;
        let s = Sampler { model, txt, pooled, guidance, sigmas, dts, rope, noise, x, cond, cache, done: 0 };
        // Compile every pipeline of a step and plan its buffers before the first one: a step
        // recorded into a dry batch runs nothing, and its buffers go back to the pool.
        let mut dry = gpu.dry_batch();
        s.record(gpu, &mut dry, 0)?;
        gpu.submit(dry)?;
        Ok(s)
    }

    /// Total steps.
    pub fn steps(&self) -> usize {
        self.sigmas.len().saturating_sub(1)
    }

    /// Steps run so far.
    pub fn done(&self) -> usize {
        self.done
    }

    /// With a step cache: the steps that ran every block so far.
    pub fn computed(&self) -> Option<usize> {
        self.cache.as_ref().map(CacheRun::computed)
    }

    /// The schedule, `steps + 1` sigmas ending with 0.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// Records and submits one step; `None` once all steps have run. The latents after it are
    /// [`latents`](Self::latents), valid once the GPU has run the submission. On error the state is
    /// that of the previous step. Without a step cache nothing is awaited; with one, the step
    /// awaits the read-back of its decision (natively that blocks until the GPU gets there).
    pub async fn step(&mut self, gpu: &Gpu) -> Result<Option<StepInfo>> {
        let i = self.done;
        let (Some(&sigma), Some(&sigma_next)) = (self.sigmas.get(i), self.sigmas.get(i + 1)) else {
            return Ok(None);
        };
        let mut b = gpu.batch();
        let (next, pending) = match &self.cache {
            None => (self.record(gpu, &mut b, i)?, None),
            Some(cache) => {
                let (v, pending) = cache.velocity(gpu, &mut b, self.model, &self.inputs(i)?, i, self.steps()).await?;
                (self.advance(gpu, &mut b, i, &v)?, Some(pending))
            }
        };
        gpu.submit(b)?;
        self.x = next;
        self.done += 1;
        let cache = match (&mut self.cache, pending) {
            (Some(c), Some(p)) => Some(c.commit(p)),
            _ => None,
        };
        Ok(Some(StepInfo { index: i, steps: self.steps(), sigma, sigma_next, cache }))
    }

    /// [`step`](Self::step), blocking (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step_blocking(&mut self, gpu: &Gpu) -> Result<Option<StepInfo>> {
        pollster::block_on(self.step(gpu))
    }

    /// The transformer's inputs at step `i`.
    fn inputs(&self, i: usize) -> Result<FluxInputs<'_>> {
        let Some(&sigma) = self.sigmas.get(i) else {
            return Err(Error::InvalidArgument(format!(
                "sampler: no step {i} in a schedule of {} steps",
                self.steps()
            )));
        };
        // FluxPipeline passes `t / 1000` with `t = sigma·1000` (both f32), not sigma itself.
        let timestep = (sigma * 1000.0) / 1000.0;
        Ok(FluxInputs {
            img: &self.x,
            txt: self.txt,
            pooled: self.pooled,
            timestep,
            guidance: self.guidance,
            rope: &self.rope,
        })
    }

    /// Records step `i` (`sigmas[i]` → `sigmas[i + 1]`, which must exist) from the current latents.
    fn record(&self, gpu: &Gpu, b: &mut Batch, i: usize) -> Result<Tensor> {
        let v = self.model.forward(gpu, b, &self.inputs(i)?)?;
        self.advance(gpu, b, i, &v)
    }

    /// The Euler update of step `i` with velocity `v`, then the reference panels re-imposed.
    fn advance(&self, gpu: &Gpu, b: &mut Batch, i: usize, v: &Tensor) -> Result<Tensor> {
        let (Some(&sigma_next), Some(dt)) = (self.sigmas.get(i + 1), self.dts.get(i)) else {
            return Err(Error::InvalidArgument(format!(
                "sampler: no step {i} in a schedule of {} steps",
                self.steps()
            )));
        };
        // The scheduler's step `x + dt·v` with dt rounded to f32 (schedule::euler_step), done as
        // a gated residual whose one-element gate is dt.
        let mut next = gated_add(gpu, b, &self.x, dt, v)?;
        if let (Some(c), Some(noise)) = (&self.cond, &self.noise) {
            next = c.impose(gpu, b, &next, noise, sigma_next)?;
        }
        Ok(next)
    }

    /// The packed latents `[L_img, in_channels]` after the steps run so far.
    pub fn latents(&self) -> &Tensor {
        &self.x
    }

    pub fn into_latents(self) -> Tensor {
        self.x
    }
}

/// Runs the sampler from `noise` (packed `[L_img·64]` values, e.g. `seed::flux_noise` or
/// [`noise_from_source`]) with text conditioning `txt` `[L_txt, context_dim]` and `pooled`
/// `[pooled_dim]`; returns the final packed latents `[L_img, in_channels]` on the GPU. A loop over
/// [`Sampler`] without conditioning (native: it blocks on the GPU).
#[cfg(not(target_arch = "wasm32"))]
pub fn sample(
    gpu: &Gpu,
    model: &FluxModel,
    txt: &Tensor,
    pooled: &Tensor,
    noise: &[f32],
    opts: &SampleOptions,
    progress: &mut dyn FnMut(Step),
) -> Result<Tensor> {
    let mut s = Sampler::new(gpu, model, txt, pooled, noise, opts, None)?;
    while let Some(info) = s.step_blocking(gpu)? {
        progress(Step {
            index: info.index,
            steps: info.steps,
            sigma: info.sigma,
            sigma_next: info.sigma_next,
            latents: s.latents(),
        });
    }
    Ok(s.into_latents())
}

/// Initial noise stored in a safetensors/GGUF file: tensor `name`, or the file's only tensor
/// when `name` is `None`; F32, F16 or BF16, any shape (the sampler checks the element count).
pub fn noise_from_source(src: &mut dyn ByteSource, name: Option<&str>) -> Result<Vec<f32>> {
    let header = read_header(src)?;
    let info = match name {
        Some(n) => {
            header.tensor(n).ok_or_else(|| Error::MissingTensor { file: header.file.clone(), name: n.into() })?
        }
        None => match header.tensors.as_slice() {
            [only] => only,
            all => {
                return Err(Error::InvalidArgument(format!(
                    "`{}` holds {} tensors; name the noise tensor",
                    header.file,
                    all.len()
                )))
            }
        },
    };
    read_floats(src, info)?.ok_or_else(|| Error::UnsupportedFormat {
        op: "sampler noise",
        format: info.dtype.name().into(),
        why: format!("`{}`: noise must be a float tensor (F32, F16, BF16 or F8)", info.name),
    })
}

/// [`noise_from_source`] on a local file.
#[cfg(not(target_arch = "wasm32"))]
pub fn noise_from_file(path: impl AsRef<std::path::Path>, name: Option<&str>) -> Result<Vec<f32>> {
    noise_from_source(&mut crate::weights::load::FileSource::open(path)?, name)
}
