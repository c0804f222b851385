//! Text to image end to end, as diffusers' `FluxPipeline.__call__` does it for batch 1 with a CPU
//! generator (src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c): tokenize (T5 + CLIP), encode (T5 →
//! `txt`, CLIP → pooled), seeded noise, the Euler sampler, unpack, VAE decode, and diffusers' postprocess to
//! RGB bytes.
//! Components come from a diffusers-layout folder or URL root with per-component overrides
//! (`components`). Models are loaded one after the other and dropped when done, so at most one of
//! text encoders / transformer / VAE holds GPU memory at a time.

use super::components::{in_component, join, read_optional, resolve, Component, TokenizerFiles};
use super::conditioning::Reference;
use super::panels::Layout;
use super::schedule::FluxVariant;
use super::store::ModelStore;
use crate::clock::Stopwatch;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::flux::FluxConfig;
use crate::model::taef1::{self, TinyDecoder, TinyDecoderConfig};
use crate::model::tokenize::PromptTokenizer;
use crate::model::vae::{Vae, VaeConfig, VaeParts};
use crate::weights::load::ByteSource;

/// Where the components are: the recipe's [`ModelUrls`] (one type for the CLI, the worker and
/// recipes): `root` is a diffusers-layout folder or URL root; each other field, when set, overrides
/// that component (a weights file or `*.index.json`, or a component folder; for tokenizers a
/// `tokenizer.json` or a folder). Paths and URLs alike.
pub type ModelPaths = crate::recipe::ModelUrls;

/// One generation's settings (FluxPipeline's arguments of the same names).
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub prompt: String,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    pub guidance: f32,
    pub seed: u64,
    /// T5 sequence length; `None`: 512 for dev, 256 for schnell.
    pub max_sequence_length: Option<usize>,
    /// LoRA files (path or URL) with their strengths.
    pub loras: Vec<(String, f32)>,
    /// Merge the LoRAs into the transformer's weights (F32/F16 bases only) instead of applying
    /// them at run time: faster steps; a session then reloads the transformer for the next run.
    pub merge_loras: bool,
    /// The panel grid (IC-LoRA canvases); needed with `references`.
    pub layout: Option<Layout>,
    /// Reference panels kept (or guided) while the rest is generated in context.
    pub references: Vec<Reference>,
    /// Conversion of the transformer's weight matrices while they stream (`Convert::Keep`: as stored).
    pub convert: crate::weights::load::Convert,
    /// Run the transformer's matmuls with f16 tiles (`FluxModel::set_precision`: f16 products,
    /// f32 accumulation; needs shader-f16, else the run fails with `Error::MissingFeature`).
    pub f16: bool,
    /// Skip the transformer's remaining blocks on steps where its first block barely changed
    /// (`step_cache`); `None`: off.
    pub step_cache: Option<super::step_cache::StepCache>,
}

pub use super::image::RgbImage;
pub use super::session::Session;

pub(super) fn sub(paths: &ModelPaths, folder: &str) -> Option<String> {
    paths.root.as_deref().map(|m| join(m, folder))
}

/// Dev (dynamic shift) or schnell: `scheduler/scheduler_config.json`'s `use_dynamic_shifting` when
/// the model folder has one, else whether the transformer has a guidance embedder.
pub(super) fn variant(store: &ModelStore, paths: &ModelPaths, config: &FluxConfig) -> Result<FluxVariant> {
    if let Some(file) = sub(paths, "scheduler/scheduler_config.json") {
        if let Some(bytes) = read_optional(store, "scheduler", &file, &crate::limits::CONFIG_JSON_BYTES)? {
            let j: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Component {
                component: "scheduler".into(),
                file: file.clone(),
                message: format!("not JSON: {e}"),
            })?;
            let dynamic = j.get("use_dynamic_shifting").and_then(|v| v.as_bool()).unwrap_or(config.guidance);
            return Ok(if dynamic { FluxVariant::Dev } else { FluxVariant::Schnell });
        }
    }
    Ok(if config.guidance { FluxVariant::Dev } else { FluxVariant::Schnell })
}

pub(super) fn tokenizer(component: &str, files: TokenizerFiles, t5_len: Option<usize>) -> Result<PromptTokenizer> {
    let loc = files.location.clone();
    let cfg = files.config.as_deref();
    let t = match (t5_len, files.tokenizer_json, files.vocab_merges) {
        (Some(len), Some(j), _) => PromptTokenizer::t5(&loc, &j, cfg, len),
        (Some(_), None, _) => Err(Error::Tokenizer { file: loc.clone(), message: "T5 needs a tokenizer.json".into() }),
        (None, Some(j), _) => PromptTokenizer::clip(&loc, &j, cfg),
        (None, None, Some((v, m))) => PromptTokenizer::clip_from_vocab(&loc, &v, &m, cfg),
        (None, None, None) => Err(Error::Tokenizer { file: loc.clone(), message: "no tokenizer files".into() }),
    };
    t.map_err(|e| in_component(component, &loc, e))
}

/// diffusers' `VaeImageProcessor.postprocess` + `numpy_to_pil` on a `[3, H, W]` decoder output:
/// `(x/2 + 0.5).clamp(0, 1)`, `×255`, rounded half to even (numpy's `round`), all in f32.
pub fn to_rgb8(chw: &[f32], height: usize, width: usize) -> Result<RgbImage> {
    let plane = height * width;
    if chw.len() != 3 * plane {
        return Err(Error::ShapeMismatch {
            op: "to_rgb8",
            expected: format!("[3, {height}, {width}]"),
            got: format!("{} values", chw.len()),
        });
    }
    let mut pixels = vec![0u8; 3 * plane];
    for (i, px) in pixels.chunks_exact_mut(3).enumerate() {
        for (c, out) in px.iter_mut().enumerate() {
            let v = (chw[c * plane + i] / 2.0 + 0.5).clamp(0.0, 1.0);
            *out = (v * 255.0).round_ties_even() as u8;
        }
    }
    Ok(RgbImage { width, height, pixels })
}

pub(super) fn load_component<T>(
    component: &str,
    c: &mut Component,
    f: impl FnOnce(&mut dyn ByteSource, &crate::weights::tensor_info::WeightsHeader) -> Result<T>,
) -> Result<T> {
    let file = c.weights.file.clone();
    f(c.weights.source.as_mut(), &c.weights.header).map_err(|e| in_component(component, &file, e))
}

/// The stages of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Load,
    Encode,
    Denoise,
    Decode,
}

/// What a run reports while it works.
pub enum Event<'a> {
    /// A progress line (what the CLI prints): load, encode, each step with its time, decode.
    Line(&'a str),
    /// Something the user should know (a truncated prompt, a rounded size).
    Warning(&'a str),
    /// A stage begins; `what` names it for people ("loading the transformer").
    Stage { stage: Stage, what: &'a str },
    /// Step `index` (from 0) of `steps` finished on the GPU in `seconds`; with a step cache,
    /// `computed` counts the steps so far (this one included) that ran every block.
    Step { index: usize, steps: usize, seconds: f64, computed: Option<usize> },
    /// An adapter was read: what it changes and what it leaves out ([`crate::lora::LoraReport::summary`]).
    Adapter(&'a str),
    /// A cheap look at the latents after step `index`: at latent resolution (1/8 of the canvas)
    /// through the linear map, or at full resolution through the preview decoder.
    Preview { index: usize, image: &'a RgbImage },
}

/// Receives a run's [`Event`]s and may cancel it (checked between stages and steps).
pub trait Observer {
    fn event(&mut self, e: Event<'_>);
    fn cancelled(&self) -> bool {
        false
    }
    /// Steps between previews (0: none); each costs a read-back of the latents.
    fn preview_every(&self) -> usize {
        0
    }
}

/// An observer that hands every progress line and warning (`warning: …`) to a function.
pub struct Lines<F: FnMut(&str)>(pub F);

impl<F: FnMut(&str)> Observer for Lines<F> {
    fn event(&mut self, e: Event<'_>) {
        match e {
            Event::Line(l) => (self.0)(l),
            Event::Warning(w) => (self.0)(&format!("warning: {w}")),
            Event::Adapter(a) => (self.0)(&format!("lora: {a}")),
            Event::Stage { .. } | Event::Step { .. } | Event::Preview { .. } => {}
        }
    }
}

pub(super) fn check(obs: &dyn Observer) -> Result<()> {
    if obs.cancelled() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

/// Loads the VAE's `parts`; returns it with the file it came from.
pub(super) fn load_vae(
    gpu: &Gpu,
    store: &ModelStore,
    paths: &ModelPaths,
    parts: VaeParts,
    obs: &mut dyn Observer,
) -> Result<(Vae, String)> {
    obs.event(Event::Stage { stage: Stage::Load, what: "loading the VAE" });
    let t = Stopwatch::start();
    let mut vaec =
        resolve(store, "VAE", sub(paths, "vae").as_deref(), paths.vae.as_deref(), "diffusion_pytorch_model")?;
    let vfile = vaec.weights.file.clone();
    let vcfg = vaec
        .config
        .as_deref()
        .map(VaeConfig::from_diffusers_json)
        .transpose()
        .map_err(|e| in_component("VAE", &vfile, e))?;
    let vae = load_component("VAE", &mut vaec, |s, h| Vae::load(gpu, s, h, vcfg, parts))?;
    obs.event(Event::Line(&format!("load: VAE ({vfile}) in {:.2}s", t.secs())));
    Ok((vae, vfile))
}

/// Loads the preview decoder `file` (a weights file, or a folder with `config.json`) for latents of
/// `latent_channels` (a decoder for others is refused by name).
pub(super) fn load_preview_decoder(
    gpu: &Gpu,
    store: &ModelStore,
    file: &str,
    latent_channels: usize,
    obs: &mut dyn Observer,
) -> Result<TinyDecoder> {
    let t = Stopwatch::start();
    let mut c = resolve(store, taef1::MODEL, None, Some(file), "diffusion_pytorch_model")?;
    let wfile = c.weights.file.clone();
    let config = c
        .config
        .as_deref()
        .map(|j| TinyDecoderConfig::from_diffusers_json(&wfile, j.as_bytes()))
        .transpose()
        .map_err(|e| in_component(taef1::MODEL, &wfile, e))?;
    let dec = load_component(taef1::MODEL, &mut c, |s, h| TinyDecoder::load(gpu, s, h, config))?;
    if dec.config.latent_channels != latent_channels {
        return Err(Error::Component {
            component: taef1::MODEL.into(),
            file: wfile,
            message: format!("it decodes {}-channel latents; this transformer's have {latent_channels} (use TAEF1, madebyollin/taef1, for FLUX.1)", dec.config.latent_channels),
        });
    }
    obs.event(Event::Line(&format!("load: {} ({wfile}) in {:.2}s", taef1::MODEL, t.secs())));
    Ok(dec)
}

/// Text → image, blocking (native), files read through `store`. `log` receives the progress lines
/// (load, encode, each step with its time, decode) and warnings (`warning: ...`, e.g. a truncated
/// prompt).
#[cfg(not(target_arch = "wasm32"))]
pub fn generate(
    gpu: &Gpu,
    store: &ModelStore,
    paths: &ModelPaths,
    opts: &GenerateOptions,
    log: &mut dyn FnMut(&str),
) -> Result<RgbImage> {
    pollster::block_on(run(gpu, store, paths, opts, &mut Lines(log)))
}

/// Text → image with nothing kept afterwards ([`Session::run`] on a fresh session). Awaits the
/// GPU between stages and after every step, so in a browser the event loop keeps running; `obs`
/// gets the progress and is asked whether to stop.
pub async fn run(
    gpu: &Gpu,
    store: &ModelStore,
    paths: &ModelPaths,
    opts: &GenerateOptions,
    obs: &mut dyn Observer,
) -> Result<RgbImage> {
    Session::default().run(gpu, store, paths, opts, obs).await
}
