//! The FLUX denoising loop on the GPU (FLUX_REFERENCE.md §3): for each step `t`,
//! `v = model(x, sigma_t)` then `x ← x + (sigma_{t+1} − sigma_t)·v`, exactly as diffusers'
//! FluxPipeline with `FlowMatchEulerDiscreteScheduler` does it. One command submission per step
//! and no read-back: the final packed latents stay on the GPU for the VAE (or a test) to read.

use super::schedule::{flux_sigmas, FluxVariant};
use super::seed::latent_hw;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};
use crate::kernels::elementwise::gated_add;
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

/// Runs the sampler from `noise` (packed `[L_img·64]` values, e.g. `seed::flux_noise` or
/// [`noise_from_source`]) with text conditioning `txt` `[L_txt, context_dim]` and `pooled`
/// `[pooled_dim]`; returns the final packed latents `[L_img, in_channels]` on the GPU.
pub fn sample(
    gpu: &Gpu,
    model: &FluxModel,
    txt: &Tensor,
    pooled: &Tensor,
    noise: &[f32],
    opts: &SampleOptions,
    progress: &mut dyn FnMut(Step),
) -> Result<Tensor> {
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
            expected: format!("{} values ([{}, {channels}] packed latents for {}×{} px)", rows * cols * channels, rows * cols, opts.height, opts.width),
            got: format!("{} values", noise.len()),
        });
    }
    let sigmas = flux_sigmas(opts.steps, rows * cols, opts.variant);
    let rope = model.rope_tables(gpu, txt.rows(), rows, cols)?;
    let guidance = if model.config.guidance { opts.guidance } else { None };
    let mut x = gpu.upload_f32(&[rows * cols, channels], noise)?;
    for (i, pair) in sigmas.windows(2).enumerate() {
        let (sigma, sigma_next) = (pair[0], pair[1]);
        // FluxPipeline passes `t / 1000` with `t = sigma·1000` (both f32), not sigma itself.
        let timestep = (sigma * 1000.0) / 1000.0;
        // The scheduler's step `x + dt·v` with dt rounded to f32 (schedule::euler_step), done as
        // a gated residual whose one-element gate is dt.
        let dt = gpu.upload_f32(&[1], &[sigma_next - sigma])?;
        let mut b = gpu.batch();
        let inp = FluxInputs { img: &x, txt, pooled, timestep, guidance, rope: &rope };
        let v = model.forward(gpu, &mut b, &inp)?;
        let next = gated_add(gpu, &mut b, &x, &dt, &v)?;
        gpu.submit(b)?;
        x = next;
        progress(Step { index: i, steps: opts.steps, sigma, sigma_next, latents: &x });
    }
    Ok(x)
}

/// Initial noise stored in a safetensors/GGUF file: tensor `name`, or the file's only tensor
/// when `name` is `None`; F32, F16 or BF16, any shape (the sampler checks the element count).
pub fn noise_from_source(src: &mut dyn ByteSource, name: Option<&str>) -> Result<Vec<f32>> {
    let header = read_header(src)?;
    let info = match name {
        Some(n) => header.tensor(n).ok_or_else(|| Error::MissingTensor { file: header.file.clone(), name: n.into() })?,
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
    read_floats(src, &info)?.ok_or_else(|| Error::UnsupportedFormat {
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
