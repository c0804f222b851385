//! Text to image end to end, as diffusers' `FluxPipeline.__call__` does it for batch 1 with a CPU
//! generator (FLUX_REFERENCE.md §2–5): tokenize (T5 + CLIP), encode (T5 → `txt`, CLIP → pooled),
//! seeded noise, the Euler sampler, unpack, VAE decode, and diffusers' postprocess to RGB bytes.
//! Components come from a diffusers-layout folder or URL root with per-component overrides
//! (`components`). Models are loaded one after the other and dropped when done, so at most one of
//! text encoders / transformer / VAE holds GPU memory at a time.

use super::components::{in_component, join, read_optional, resolve, resolve_tokenizer, Component, TokenizerFiles};
use super::conditioning::{Conditioning, Reference};
use super::panels::Layout;
use super::preview::latent_preview;
use super::sampler::{SampleOptions, Sampler};
use super::schedule::FluxVariant;
use super::seed::{flux_noise, latent_hw};
use crate::clock::Stopwatch;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::pack::unpack;
use crate::lora::LoraAdapter;
use crate::model::clip::{ClipConfig, ClipTextEncoder};
use crate::model::flux::{FluxConfig, FluxModel};
use crate::model::t5::{T5Config, T5Encoder};
use crate::model::tokenize::{PromptTokenizer, T5_MAX_LEN_DEV, T5_MAX_LEN_SCHNELL};
use crate::model::vae::{TileOptions, Vae, VaeConfig, VaeParts};
use crate::weights::load::ByteSource;
use crate::weights::source::open;

/// Where the components are: `model` is a diffusers-layout folder or URL root; each other field,
/// when set, overrides that component (a weights file or `*.index.json`, or a component folder;
/// for tokenizers a `tokenizer.json` or a folder). Paths and URLs alike.
#[derive(Debug, Clone, Default)]
pub struct ModelPaths {
    pub model: Option<String>,
    pub transformer: Option<String>,
    pub vae: Option<String>,
    pub t5: Option<String>,
    pub clip: Option<String>,
    pub t5_tokenizer: Option<String>,
    pub clip_tokenizer: Option<String>,
}

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
    /// The panel grid (IC-LoRA canvases); needed with `references`.
    pub layout: Option<Layout>,
    /// Reference panels kept (or guided) while the rest is generated in context.
    pub references: Vec<Reference>,
    /// Conversion of the transformer's weight matrices while they stream (`Convert::Keep`: as stored).
    pub convert: crate::weights::load::Convert,
}

pub use super::image::RgbImage;

fn sub(paths: &ModelPaths, folder: &str) -> Option<String> {
    paths.model.as_deref().map(|m| join(m, folder))
}

/// Dev (dynamic shift) or schnell: `scheduler/scheduler_config.json`'s `use_dynamic_shifting` when
/// the model folder has one, else whether the transformer has a guidance embedder.
fn variant(paths: &ModelPaths, config: &FluxConfig) -> Result<FluxVariant> {
    if let Some(file) = sub(paths, "scheduler/scheduler_config.json") {
        if let Some(bytes) = read_optional("scheduler", &file)? {
            let j: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Component { component: "scheduler".into(), file: file.clone(), message: format!("not JSON: {e}") })?;
            let dynamic = j.get("use_dynamic_shifting").and_then(|v| v.as_bool()).unwrap_or(config.guidance);
            return Ok(if dynamic { FluxVariant::Dev } else { FluxVariant::Schnell });
        }
    }
    Ok(if config.guidance { FluxVariant::Dev } else { FluxVariant::Schnell })
}

fn tokenizer(component: &str, files: TokenizerFiles, t5_len: Option<usize>) -> Result<PromptTokenizer> {
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
        return Err(Error::ShapeMismatch { op: "to_rgb8", expected: format!("[3, {height}, {width}]"), got: format!("{} values", chw.len()) });
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

/// The image as PNG bytes.
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    let (w, h) = (u32::try_from(img.width), u32::try_from(img.height));
    let (Ok(w), Ok(h)) = (w, h) else {
        return Err(Error::InvalidArgument(format!("image {}×{} is too large for PNG", img.width, img.height)));
    };
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&img.pixels, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::InvalidArgument(format!("PNG encoding failed: {e}")))?;
    Ok(out)
}

fn load_component<T>(component: &str, c: &mut Component, f: impl FnOnce(&mut dyn ByteSource, &crate::weights::tensor_info::WeightsHeader) -> Result<T>) -> Result<T> {
    let file = c.weights.file.clone();
    f(c.weights.source.as_mut(), &c.weights.header).map_err(|e| in_component(component, &file, e))
}

/// One file a run reads its weights from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightFile {
    pub component: &'static str,
    pub location: String,
    pub bytes: u64,
}

/// Every weights file a run with `paths` and `loras` will read (shards included), found by
/// resolving the components as [`run`] does, reading only headers, configs and indexes: what a
/// browser downloads (and caches) first, and what the page shows before a download starts.
pub fn weight_files(paths: &ModelPaths, loras: &[(String, f32)]) -> Result<Vec<WeightFile>> {
    let mut out = Vec::new();
    let components = [
        ("transformer", "transformer", paths.transformer.as_deref(), "diffusion_pytorch_model"),
        ("T5 text encoder", "text_encoder_2", paths.t5.as_deref(), "model"),
        ("CLIP text encoder", "text_encoder", paths.clip.as_deref(), "model"),
        ("VAE", "vae", paths.vae.as_deref(), "diffusion_pytorch_model"),
    ];
    for (component, folder, file, stem) in components {
        let c = resolve(component, sub(paths, folder).as_deref(), file, stem)?;
        out.extend(c.weights.files.into_iter().map(|(location, bytes)| WeightFile { component, location, bytes }));
    }
    for (file, _) in loras {
        let src = open(file).map_err(|e| in_component("LoRA", file, e))?;
        out.push(WeightFile { component: "LoRA", location: file.clone(), bytes: src.len() });
    }
    Ok(out)
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
    /// Step `index` (from 0) of `steps` finished on the GPU in `seconds`.
    Step { index: usize, steps: usize, seconds: f64 },
    /// An adapter was read: what it changes and what it leaves out ([`crate::lora::LoraReport::summary`]).
    Adapter(&'a str),
    /// A cheap look at the latents after step `index` (latent resolution, 1/8 of the canvas).
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

fn check(obs: &dyn Observer) -> Result<()> {
    if obs.cancelled() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

/// Loads the VAE's `parts`; returns it with the file it came from.
fn load_vae(gpu: &Gpu, paths: &ModelPaths, parts: VaeParts, obs: &mut dyn Observer) -> Result<(Vae, String)> {
    obs.event(Event::Stage { stage: Stage::Load, what: "loading the VAE" });
    let t = Stopwatch::start();
    let mut vaec = resolve("VAE", sub(paths, "vae").as_deref(), paths.vae.as_deref(), "diffusion_pytorch_model")?;
    let vfile = vaec.weights.file.clone();
    let vcfg = vaec.config.as_deref().map(VaeConfig::from_diffusers_json).transpose().map_err(|e| in_component("VAE", &vfile, e))?;
    let vae = load_component("VAE", &mut vaec, |s, h| Vae::load(gpu, s, h, vcfg, parts))?;
    obs.event(Event::Line(&format!("load: VAE ({vfile}) in {:.2}s", t.secs())));
    Ok((vae, vfile))
}

/// Text → image, blocking (native). `log` receives the progress lines (load, encode, each step
/// with its time, decode) and warnings (`warning: ...`, e.g. a truncated prompt).
#[cfg(not(target_arch = "wasm32"))]
pub fn generate(gpu: &Gpu, paths: &ModelPaths, opts: &GenerateOptions, log: &mut dyn FnMut(&str)) -> Result<RgbImage> {
    pollster::block_on(run(gpu, paths, opts, &mut Lines(log)))
}

/// Text → image. Awaits the GPU between stages and after every step, so in a browser the event
/// loop keeps running; `obs` gets the progress and is asked whether to stop.
pub async fn run(gpu: &Gpu, paths: &ModelPaths, opts: &GenerateOptions, obs: &mut dyn Observer) -> Result<RgbImage> {
    let t0 = Stopwatch::start();
    let (lh, lw) = latent_hw(opts.height, opts.width);
    if lh == 0 || lw == 0 || opts.steps == 0 {
        return Err(Error::InvalidArgument(format!("--width and --height must be at least 16 and --steps at least 1 (got {}×{}, {} steps)", opts.width, opts.height, opts.steps)));
    }
    let (height, width) = (lh * 8, lw * 8);
    if (height, width) != (opts.height, opts.width) {
        obs.event(Event::Warning(&format!("{}×{} is not a multiple of 16; generating {width}×{height} as diffusers does", opts.width, opts.height)));
    }

    // The transformer's header and config first: they decide dev/schnell and the T5 length.
    obs.event(Event::Stage { stage: Stage::Load, what: "reading the model's headers" });
    let mut transformer = resolve("transformer", sub(paths, "transformer").as_deref(), paths.transformer.as_deref(), "diffusion_pytorch_model")?;
    let tfile = transformer.weights.file.clone();
    let config = match &transformer.config {
        Some(json) => FluxConfig::from_diffusers_json(json),
        None => FluxConfig::infer(&transformer.weights.header),
    }
    .map_err(|e| in_component("transformer", &tfile, e))?;
    let variant = variant(paths, &config)?;
    let t5_len = opts.max_sequence_length.unwrap_or(if variant == FluxVariant::Dev { T5_MAX_LEN_DEV } else { T5_MAX_LEN_SCHNELL });

    // Adapters first: their CLIP parts apply to the text encoder, the rest to the transformer.
    let mut adapters = Vec::new();
    for (file, scale) in &opts.loras {
        let mut src = open(file).map_err(|e| in_component("LoRA", file, e))?;
        let adapter = LoraAdapter::load(src.as_mut(), &config).map_err(|e| in_component("LoRA", file, e))?;
        obs.event(Event::Adapter(&adapter.report.summary()));
        adapters.push((adapter, *scale));
    }
    let lora_refs: Vec<(&LoraAdapter, f32)> = adapters.iter().map(|(a, s)| (a, *s)).collect();

    // Text: tokenize and encode, then free the encoders.
    let t5_tok = tokenizer("T5 tokenizer", resolve_tokenizer("T5 tokenizer", sub(paths, "tokenizer_2").as_deref(), paths.t5_tokenizer.as_deref())?, Some(t5_len))?;
    let clip_tok = tokenizer("CLIP tokenizer", resolve_tokenizer("CLIP tokenizer", sub(paths, "tokenizer").as_deref(), paths.clip_tokenizer.as_deref())?, None)?;
    let t5_ids = t5_tok.encode(&opts.prompt)?;
    let clip_ids = clip_tok.encode(&opts.prompt)?;
    for w in [clip_ids.warning("CLIP"), t5_ids.warning("T5")].into_iter().flatten() {
        obs.event(Event::Warning(&w));
    }
    check(obs)?;
    let (txt, pooled) = {
        obs.event(Event::Stage { stage: Stage::Load, what: "loading the text encoders" });
        let mut t5c = resolve("T5 text encoder", sub(paths, "text_encoder_2").as_deref(), paths.t5.as_deref(), "model")?;
        let mut clipc = resolve("CLIP text encoder", sub(paths, "text_encoder").as_deref(), paths.clip.as_deref(), "model")?;
        let (t5f, clipf) = (t5c.weights.file.clone(), clipc.weights.file.clone());
        let t5cfg = t5c.config.as_deref().map(|j| T5Config::from_json(&t5f, j)).transpose().map_err(|e| in_component("T5 text encoder", &t5f, e))?;
        let clipcfg = clipc.config.as_deref().map(|j| ClipConfig::from_json(&clipf, j)).transpose().map_err(|e| in_component("CLIP text encoder", &clipf, e))?;
        let t = Stopwatch::start();
        let t5 = load_component("T5 text encoder", &mut t5c, |s, h| T5Encoder::load(gpu, s, h, t5cfg))?;
        let mut clip = load_component("CLIP text encoder", &mut clipc, |s, h| ClipTextEncoder::load(gpu, s, h, clipcfg))?;
        obs.event(Event::Line(&format!("load: text encoders ({t5f}, {clipf}) in {:.2}s", t.secs())));
        if lora_refs.iter().any(|(a, _)| !a.clip.is_empty()) {
            let applied = clip.set_loras(gpu, &lora_refs).map_err(|e| in_component("CLIP text encoder", &clipf, e))?;
            obs.event(Event::Line(&format!("load: LoRA on {} CLIP weights", applied.weights)));
        }
        check(obs)?;
        obs.event(Event::Stage { stage: Stage::Encode, what: "encoding the prompt" });
        let t = Stopwatch::start();
        let mut b = gpu.batch();
        let txt = t5.forward(gpu, &mut b, &t5_ids.ids).map_err(|e| in_component("T5 text encoder", &t5f, e))?;
        let pooled = clip.forward(gpu, &mut b, &clip_ids.ids, clip_tok.eos_id()).map_err(|e| in_component("CLIP text encoder", &clipf, e))?.pooled;
        gpu.submit(b)?;
        gpu.done().await?;
        obs.event(Event::Line(&format!("encode: T5 {} tokens, CLIP {} tokens in {:.2}s", t5_ids.ids.len(), clip_ids.ids.len(), t.secs())));
        (txt, pooled)
    };
    check(obs)?;

    // Reference panels need the VAE's encoder before the sampler; the VAE then stays for decoding.
    let mut vae_slot = None;
    let cond = if opts.references.is_empty() {
        None
    } else {
        let layout = opts.layout.ok_or_else(|| Error::InvalidArgument("reference panels need a panel layout (rows × columns)".into()))?;
        let (vae, vfile) = load_vae(gpu, paths, VaeParts::BOTH, obs)?;
        obs.event(Event::Stage { stage: Stage::Encode, what: "encoding the reference panels" });
        let c = Conditioning::new(gpu, Some(&vae), &layout, width, height, &opts.references).map_err(|e| in_component("VAE", &vfile, e))?;
        gpu.done().await?;
        vae_slot = Some((vae, vfile));
        Some(c)
    };

    // Denoise.
    let latents = {
        obs.event(Event::Stage { stage: Stage::Load, what: "loading the transformer" });
        let t = Stopwatch::start();
        let mut model = load_component("transformer", &mut transformer, |s, h| {
            FluxModel::load_with(gpu, s, h, Some(config.clone()), &crate::weights::load::LoadOptions { convert: opts.convert })
        })?;
        drop(transformer);
        obs.event(Event::Line(&format!("load: transformer ({tfile}) in {:.2}s", t.secs())));
        if !lora_refs.is_empty() {
            let applied = model.set_loras(gpu, &lora_refs)?;
            obs.event(Event::Line(&format!("load: {} LoRA(s) on {} weights", lora_refs.len(), applied.weights)));
        }
        check(obs)?;
        obs.event(Event::Stage { stage: Stage::Denoise, what: "denoising" });
        let noise = flux_noise(opts.seed, height, width);
        let sopts = SampleOptions { height, width, steps: opts.steps, guidance: Some(opts.guidance), variant };
        let mut stepper = Sampler::new(gpu, &model, &txt, &pooled, &noise, &sopts, cond)?;
        let every = obs.preview_every();
        loop {
            let t = Stopwatch::start();
            let Some(s) = stepper.step(gpu)? else { break };
            // Wait for the step so that its time is the GPU's (and a browser's event loop runs).
            gpu.done().await?;
            let secs = t.secs();
            obs.event(Event::Line(&format!("step {}/{}: sigma {:.4} → {:.4} in {secs:.2}s", s.index + 1, s.steps, s.sigma, s.sigma_next)));
            obs.event(Event::Step { index: s.index, steps: s.steps, seconds: secs });
            if every > 0 && (s.index + 1) % every == 0 && s.index + 1 < s.steps {
                let packed = gpu.read_f32(stepper.latents()).await?;
                obs.event(Event::Preview { index: s.index, image: &latent_preview(&packed, lh, lw)? });
            }
            check(obs)?;
        }
        let mut b = gpu.batch();
        let z = unpack(gpu, &mut b, stepper.latents(), model.config.in_channels / 4, lh, lw)?;
        gpu.submit(b)?;
        z
    };

    // Decode.
    let (vae, vfile) = match vae_slot {
        Some(v) => v,
        None => load_vae(gpu, paths, VaeParts::DECODER, obs)?,
    };
    obs.event(Event::Stage { stage: Stage::Decode, what: "decoding the image" });
    let t = Stopwatch::start();
    let image = vae.decode_tiled(gpu, &latents, &TileOptions::default()).map_err(|e| in_component("VAE", &vfile, e))?;
    let values = gpu.read_f32(&image).await?;
    obs.event(Event::Line(&format!("decode: {width}×{height} in {:.2}s (total {:.2}s)", t.secs(), t0.secs())));
    to_rgb8(&values, height, width)
}
