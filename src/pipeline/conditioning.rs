//! Reference-conditioned IC-LoRA sets: the user supplies some panels; the sampler fills the others in
//! context.
//!
//! * [`RefMode::Keep`] — RePaint-style in-context inpainting, as diffusers' `FluxInpaintPipeline`
//!   does it (pipeline_flux_inpaint.py, diffusers 0.42.1, lines 1182-1191): after every step the
//!   panel's latent tokens are replaced by the reference noised to the *next* sigma with the run's
//!   initial noise, `(1 − σ_next)·ref + σ_next·noise` (`scheduler.scale_noise`, i.e.
//!   `FlowMatchEulerDiscreteScheduler.scale_noise`,
//!   src/diffusers/schedulers/scheduling_flow_match_euler_discrete.py @ 58eb52c); after the last step
//!   (σ = 0) they are exactly the reference latents.
//! * [`RefMode::Guide`] — SDEdit-like: the panel is imposed only while `σ_next ≥ strength`, then
//!   released. Since the first sigma is 1 (pure noise either way), this equals starting that panel
//!   from the reference noised to the smallest scheduled sigma ≥ `strength` (diffusers' img2img
//!   truncates the schedule the same way, `get_timesteps`), while the other panels run from step 0.
//!
//! Each reference is fitted to its panel ([`panels::fit`]), encoded alone (pixels → [−1, 1] → VAE
//! encoder → posterior **mean** → `(mean − shift)·scale`, BFL `AutoEncoder.encode`,
//! src/flux/modules/autoencoder.py @ 802fb47) and packed (diffusers `_pack_latents`,
//! src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c) into the canvas token positions. The
//! normalisation is diffusers' `FluxImg2ImgPipeline._encode_vae_image` (line 474); diffusers draws a
//! *sample* of the posterior there
//! (`retrieve_latents`' default `sample_mode="sample"`), we take its mean (`sample_mode="argmax"`,
//! BFL `sample_z=False`): deterministic, and for the FLUX VAE the posterior's spread is negligible.
//! Target latents and per-token thresholds are uploaded once; the per-step replacement is one
//! `masked_blend` dispatch recorded into the step's own submission.

use super::image::RgbImage;
use super::panels::{fit, Layout, Rect};
use crate::error::{Error, Result};
use crate::gpu::{Batch, Gpu, Tensor};
use crate::kernels::copy::{copy_into, Block};
use crate::kernels::elementwise::{masked_blend, NEVER_IMPOSED};
use crate::kernels::pack::pack;
use crate::model::vae::{TileOptions, Vae};

/// How a reference panel conditions the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RefMode {
    /// Re-imposed after every step; the output panel is the reference's VAE round trip.
    Keep,
    /// Imposed while `σ_next ≥ strength`, `strength` in (0, 1): near 0 ≈ `Keep`, near 1 ≈ ignored.
    Guide { strength: f32 },
}

impl RefMode {
    /// The sigma threshold the kernel compares with: imposed while `σ_next ≥ threshold`.
    fn threshold(self) -> f32 {
        match self {
            RefMode::Keep => 0.0,
            RefMode::Guide { strength } => strength,
        }
    }
}

/// A user-supplied panel: `panel` indexes [`Layout::panels`] (row by row from 0). An image of
/// another size is center-cropped and area-resized to the panel ([`panels::fit`]).
#[derive(Debug, Clone)]
pub struct Reference {
    pub panel: usize,
    pub image: RgbImage,
    pub mode: RefMode,
}

/// Reference latents and per-token thresholds on the GPU, for a canvas of `rows × cols` tokens.
pub struct Conditioning {
    target: Tensor,
    thresholds: Tensor,
    host_thresholds: Vec<f32>,
    grid: (usize, usize),
    channels: usize,
}

impl Conditioning {
    /// Encodes `refs` for a `width × height` canvas cut by `layout`. `vae` must have its encoder
    /// when `refs` is not empty. Errors: `PanelGrid` (misaligned layout), `PanelIndex`,
    /// `ReferenceStrength` (outside (0, 1)), `NoVaeEncoder`, `InvalidArgument` (two references for
    /// one panel). Submits its own GPU work (one encode per reference).
    pub fn new(
        gpu: &Gpu,
        vae: Option<&Vae>,
        layout: &Layout,
        width: usize,
        height: usize,
        refs: &[Reference],
    ) -> Result<Conditioning> {
        let rects = layout.panels(width, height)?;
        let grid = (height / super::panels::PANEL_ALIGN, width / super::panels::PANEL_ALIGN);
        let mut seen = vec![false; rects.len()];
        for r in refs {
            if r.panel >= rects.len() {
                return Err(Error::PanelIndex { index: r.panel, panels: rects.len() });
            }
            if let RefMode::Guide { strength } = r.mode {
                if !(strength > 0.0 && strength < 1.0) {
                    return Err(Error::ReferenceStrength { panel: r.panel, strength });
                }
            }
            if std::mem::replace(&mut seen[r.panel], true) {
                return Err(Error::InvalidArgument(format!(
                    "two references for panel {}; give one per panel",
                    r.panel
                )));
            }
            r.image.check("reference image")?;
        }
        let vae = match (refs.is_empty(), vae) {
            (true, _) => None,
            (false, Some(v)) if v.encoder.is_some() => Some(v),
            (false, _) => return Err(Error::NoVaeEncoder),
        };
        let channels = vae.map_or(64, |v| 4 * v.config.latent_channels);
        let tokens = grid.0 * grid.1;
        let target = gpu.upload_f32(&[tokens, channels], &vec![0.0; tokens * channels])?;
        let mut host_thresholds = vec![NEVER_IMPOSED; tokens];
        if let Some(vae) = vae {
            // The target seen as a matrix of token rows: a panel is one block of it.
            let canvas = target.reshape(&[grid.0, grid.1 * channels])?;
            for r in refs {
                let rect = rects[r.panel];
                let z = encode_panel(gpu, vae, &r.image, &rect)?;
                let t = rect.tokens();
                let mut b = gpu.batch();
                let packed = pack(gpu, &mut b, &z)?.reshape(&[t.h, t.w * channels])?;
                copy_into(gpu, &mut b, &canvas, (t.y, t.x * channels), &packed, Block::all(&packed)?)?;
                gpu.submit(b)?;
                for row in t.y..t.y + t.h {
                    host_thresholds[row * grid.1 + t.x..row * grid.1 + t.x + t.w].fill(r.mode.threshold());
                }
            }
        }
        let thresholds = gpu.upload_f32(&[tokens], &host_thresholds)?;
        Ok(Conditioning { target, thresholds, host_thresholds, grid, channels })
    }

    /// Packed reference latents `[rows·cols, 64]` (zeros outside reference panels).
    pub fn target(&self) -> &Tensor {
        &self.target
    }

    /// Per-token thresholds: a token is imposed after a step whose `σ_next ≥` its value
    /// (`kernels::elementwise::NEVER_IMPOSED` outside reference panels).
    pub fn thresholds(&self) -> &[f32] {
        &self.host_thresholds
    }

    /// The canvas in packed tokens, `(H/16, W/16)`.
    pub fn token_grid(&self) -> (usize, usize) {
        self.grid
    }

    /// Features per token (`4 × latent channels`).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Whether any token is imposed at `sigma`.
    pub fn imposes(&self, sigma: f32) -> bool {
        self.host_thresholds.iter().any(|&t| sigma >= t)
    }

    /// Records the re-imposition of the references noised to `sigma` (with `noise`, the run's
    /// initial packed noise) onto `x`; returns `x` itself when nothing is imposed at `sigma`.
    pub fn impose(&self, gpu: &Gpu, b: &mut Batch, x: &Tensor, noise: &Tensor, sigma: f32) -> Result<Tensor> {
        if !self.imposes(sigma) {
            return Ok(x.clone());
        }
        let s = gpu.upload_f32(&[1], &[sigma])?;
        masked_blend(gpu, b, x, &self.thresholds, &self.target, noise, &s)
    }
}

/// One reference → its normalised latent `[latent, h/8, w/8]`, encoded alone at the panel's size.
fn encode_panel(gpu: &Gpu, vae: &Vae, image: &RgbImage, rect: &Rect) -> Result<Tensor> {
    let img = fit(image, rect.w, rect.h)?;
    let x = gpu.upload_f32(&[3, rect.h, rect.w], &img.to_chw_signed()?)?;
    // Tiled only when the panel's activations exceed a binding; else equal to `Vae::encode`.
    vae.encode_tiled(gpu, &x, &TileOptions::default())
}
