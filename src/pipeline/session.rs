//! One text-to-image run after another, keeping what can be reused: the transformer (by its
//! file and load conversion), the VAE, and the last prompt's text embeddings. A browser tab
//! holds one session, so a new seed, guidance, step count, LoRA scale or reference panel
//! regenerates without reloading gigabytes; only a new prompt runs the text encoders again.
//!
//! Memory: T5-XXL's encoder (≈ 4.8 B parameters) and the transformer (≈ 11.9 B) are the two large parts. When
//! the prompt changes, the cached transformer is dropped before T5 loads unless
//! `keep_transformer_while_encoding` says both fit (a browser cannot ask how much GPU memory
//! there is), and is then re-read from the file (the browser's cache, at disk speed). Any
//! failed run drops every cached model, so a device or memory error leaves a clean session.

use super::components::{in_component, resolve, resolve_tokenizer};
use super::conditioning::Conditioning;
use super::generate::{
    check, load_component, load_preview_decoder, load_vae, sub, to_rgb8, tokenizer, variant, Event, GenerateOptions,
    ModelPaths, Observer, RgbImage, Stage,
};
use super::preview::latent_preview;
use super::sampler::{SampleOptions, Sampler};
use super::schedule::FluxVariant;
use super::seed::{flux_noise, latent_hw};
use super::step_cache::summary;
use crate::clock::Stopwatch;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};
use crate::kernels::matmul::Precision;
use crate::kernels::pack::unpack;
use crate::lora::{LoraAdapter, LoraHost};
use crate::model::clip::{ClipConfig, ClipTextEncoder};
use crate::model::flux::{FluxConfig, FluxModel};
use crate::model::t5::{T5Config, T5Encoder};
use crate::model::taef1::{self, TinyDecoder};
use crate::model::tokenize::{T5_MAX_LEN_DEV, T5_MAX_LEN_SCHNELL};
use crate::model::vae::{TileOptions, Vae, VaeParts};
use crate::weights::load::LoadOptions;
use crate::weights::source::open;

/// Models and embeddings kept between runs.
#[derive(Default)]
pub struct Session {
    /// Keep the transformer loaded while T5 encodes a new prompt (both must fit in GPU memory).
    pub keep_transformer_while_encoding: bool,
    transformer: Option<(String, FluxModel)>,
    vae: Option<(String, Vae, bool)>,
    text: Option<(String, Tensor, Tensor)>,
    /// The preview decoder, by the location it was loaded from.
    preview: Option<(String, TinyDecoder)>,
}

impl Session {
    /// Drops every cached model and embedding.
    pub fn clear(&mut self) {
        *self = Session { keep_transformer_while_encoding: self.keep_transformer_while_encoding, ..Session::default() };
    }

    /// Whether a transformer is loaded (for tests and the page's status).
    pub fn has_transformer(&self) -> bool {
        self.transformer.is_some()
    }

    /// Text → image, reusing what this session already loaded.
    pub async fn run(
        &mut self,
        gpu: &Gpu,
        paths: &ModelPaths,
        opts: &GenerateOptions,
        obs: &mut dyn Observer,
    ) -> Result<RgbImage> {
        let out = self.run_inner(gpu, paths, opts, obs).await;
        if out.is_err() {
            self.clear();
        }
        out
    }

    async fn run_inner(
        &mut self,
        gpu: &Gpu,
        paths: &ModelPaths,
        opts: &GenerateOptions,
        obs: &mut dyn Observer,
    ) -> Result<RgbImage> {
        let t0 = Stopwatch::start();
        let (lh, lw) = latent_hw(opts.height, opts.width);
        if lh == 0 || lw == 0 || opts.steps == 0 {
            return Err(Error::InvalidArgument(format!(
                "--width and --height must be at least 16 and --steps at least 1 (got {}×{}, {} steps)",
                opts.width, opts.height, opts.steps
            )));
        }
        let (height, width) = (lh * 8, lw * 8);
        if (height, width) != (opts.height, opts.width) {
            obs.event(Event::Warning(&format!(
                "{}×{} is not a multiple of 16; generating {width}×{height} as diffusers does",
                opts.width, opts.height
            )));
        }

        // The transformer's header and config first: they decide dev/schnell and the T5 length.
        obs.event(Event::Stage { stage: Stage::Load, what: "reading the model's headers" });
        let mut transformer = resolve(
            "transformer",
            sub(paths, "transformer").as_deref(),
            paths.transformer.as_deref(),
            "diffusion_pytorch_model",
        )?;
        let tfile = transformer.weights.file.clone();
        let config = match &transformer.config {
            Some(json) => FluxConfig::from_diffusers_json(json),
            None => FluxConfig::infer(&transformer.weights.header),
        }
        .map_err(|e| in_component("transformer", &tfile, e))?;
        let variant = variant(paths, &config)?;
        let t5_len = opts.max_sequence_length.unwrap_or(if variant == FluxVariant::Dev {
            T5_MAX_LEN_DEV
        } else {
            T5_MAX_LEN_SCHNELL
        });
        let tkey = format!("{tfile}|{:?}", opts.convert);

        // Adapters first: their CLIP parts apply to the text encoder, the rest to the transformer.
        let mut adapters = Vec::new();
        for (file, scale) in &opts.loras {
            let mut src = open(file).map_err(|e| in_component("LoRA", file, e))?;
            let adapter = LoraAdapter::load(src.as_mut(), &config).map_err(|e| in_component("LoRA", file, e))?;
            obs.event(Event::Adapter(&adapter.report.summary()));
            adapters.push((adapter, *scale));
        }
        let loras: Vec<(&LoraAdapter, f32)> = adapters.iter().map(|(a, s)| (a, *s)).collect();

        // Text embeddings: reused when the prompt (and what shapes it) is unchanged.
        let clip_loras: Vec<String> = opts
            .loras
            .iter()
            .zip(&adapters)
            .filter(|(_, (a, _))| !a.clip.is_empty())
            .map(|((f, s), _)| format!("{f}:{s}"))
            .collect();
        let text_key = format!(
            "{}|{t5_len}|{:?}|{:?}|{:?}|{}",
            opts.prompt,
            paths.t5,
            paths.clip,
            paths.root,
            clip_loras.join(",")
        );
        if self.text.as_ref().map(|(k, ..)| k != &text_key).unwrap_or(true) {
            self.text = None;
            if !self.keep_transformer_while_encoding {
                self.transformer = None;
            }
            let (txt, pooled) = encode_text(gpu, paths, &opts.prompt, t5_len, &loras, obs).await?;
            self.text = Some((text_key, txt, pooled));
        } else {
            obs.event(Event::Line("encode: the prompt is unchanged; reusing its embeddings"));
        }
        check(obs)?;

        // Reference panels need the VAE's encoder before the sampler.
        let need_encoder = !opts.references.is_empty();
        self.ensure_vae(gpu, paths, need_encoder, obs)?;
        let cond = match (&self.vae, need_encoder) {
            (Some((vfile, vae, _)), true) => {
                let layout = opts.layout.ok_or_else(|| {
                    Error::InvalidArgument("reference panels need a panel layout (rows × columns)".into())
                })?;
                obs.event(Event::Stage { stage: Stage::Encode, what: "encoding the reference panels" });
                let c = Conditioning::new(gpu, Some(vae), &layout, width, height, &opts.references)
                    .map_err(|e| in_component("VAE", vfile, e))?;
                gpu.done().await?;
                Some(c)
            }
            _ => None,
        };

        // The transformer: reused when the same file was loaded the same way.
        if self.transformer.as_ref().map(|(k, _)| k != &tkey).unwrap_or(true) {
            self.transformer = None;
            obs.event(Event::Stage { stage: Stage::Load, what: "loading the transformer" });
            let t = Stopwatch::start();
            let load = LoadOptions { convert: opts.convert };
            let model = FluxModel::load_paced(
                gpu,
                transformer.weights.source.as_mut(),
                &transformer.weights.header,
                config.clone(),
                &load,
            )
            .await
            .map_err(|e| in_component("transformer", &tfile, e))?;
            obs.event(Event::Line(&format!("load: transformer ({tfile}) in {:.2}s", t.secs())));
            self.transformer = Some((tkey, model));
        } else {
            obs.event(Event::Line(&format!("load: transformer ({tfile}) already loaded")));
        }
        drop(transformer);
        let (Some((_, model)), Some((_, txt, pooled)), Some((vfile, vae, _))) =
            (self.transformer.as_mut(), self.text.as_ref(), self.vae.as_ref())
        else {
            return Err(Error::InvalidArgument("session: a model went missing".into()));
        };
        // Set on every run: the cached transformer keeps the last run's precision otherwise.
        model.set_precision(gpu, if opts.f16 { Precision::F16 } else { Precision::F32 })?;
        model.clear_loras();
        let merged = opts.merge_loras && !loras.is_empty();
        if merged {
            let applied = model.merge_loras(gpu, &loras)?;
            obs.event(Event::Line(&format!("load: {} LoRA(s) merged into {} weights", loras.len(), applied.weights)));
        } else if !loras.is_empty() {
            let applied = model.set_loras(gpu, &loras)?;
            obs.event(Event::Line(&format!("load: {} LoRA(s) on {} weights", loras.len(), applied.weights)));
        }
        check(obs)?;

        // The preview decoder, when previews are asked for and it is given (small: kept loaded).
        let every = obs.preview_every();
        match (&paths.preview_decoder, every) {
            (Some(file), 1..) if self.preview.as_ref().is_none_or(|(f, _)| f != file) => {
                self.preview = None;
                self.preview =
                    Some((file.clone(), load_preview_decoder(gpu, file, model.config.in_channels / 4, obs)?));
            }
            (None, _) => self.preview = None,
            _ => {}
        }
        check(obs)?;

        // Denoise.
        obs.event(Event::Stage { stage: Stage::Denoise, what: "denoising" });
        let noise = flux_noise(opts.seed, height, width);
        // The step cache lives in this sampler only: nothing computed under another run's LoRA
        // scales, references or prompt is reused.
        let sopts = SampleOptions {
            height,
            width,
            steps: opts.steps,
            guidance: Some(opts.guidance),
            variant,
            step_cache: opts.step_cache,
        };
        let mut stepper = Sampler::new(gpu, model, txt, pooled, &noise, &sopts, cond)?;
        loop {
            let t = Stopwatch::start();
            let Some(s) = stepper.step(gpu).await? else { break };
            // Wait for the step so that its time is the GPU's (and a browser's event loop runs).
            gpu.done().await?;
            let secs = t.secs();
            let cache = match s.cache {
                Some(c) => format!(
                    " ({}{})",
                    if c.computed { "computed" } else { "cached" },
                    c.diff.map(|d| format!(", distance {d:.4}")).unwrap_or_default()
                ),
                None => String::new(),
            };
            obs.event(Event::Line(&format!(
                "step {}/{}: sigma {:.4} → {:.4} in {secs:.2}s{cache}",
                s.index + 1,
                s.steps,
                s.sigma,
                s.sigma_next
            )));
            obs.event(Event::Step { index: s.index, steps: s.steps, seconds: secs, computed: stepper.computed() });
            if every > 0 && (s.index + 1) % every == 0 && s.index + 1 < s.steps {
                let image = preview_image(gpu, &mut self.preview, stepper.latents(), (lh, lw), s.index, obs).await?;
                obs.event(Event::Preview { index: s.index, image: &image });
            }
            check(obs)?;
        }
        if let Some(computed) = stepper.computed() {
            obs.event(Event::Line(&summary(computed, stepper.steps())));
        }
        let mut b = gpu.batch();
        let latents = unpack(gpu, &mut b, stepper.latents(), model.config.in_channels / 4, lh, lw)?;
        gpu.submit(b)?;

        // Decode.
        obs.event(Event::Stage { stage: Stage::Decode, what: "decoding the image" });
        let t = Stopwatch::start();
        let image =
            vae.decode_tiled(gpu, &latents, &TileOptions::default()).map_err(|e| in_component("VAE", vfile, e))?;
        let values = gpu.read_f32(&image).await?;
        obs.event(Event::Line(&format!("decode: {width}×{height} in {:.2}s (total {:.2}s)", t.secs(), t0.secs())));
        if merged {
            // Merged weights are not the file's: the next run loads the transformer again.
            self.transformer = None;
        }
        to_rgb8(&values, height, width)
    }

    /// Loads the VAE unless this session has it (with its encoder when `encoder`).
    fn ensure_vae(&mut self, gpu: &Gpu, paths: &ModelPaths, encoder: bool, obs: &mut dyn Observer) -> Result<()> {
        if self.vae.as_ref().is_some_and(|(_, _, has_encoder)| *has_encoder || !encoder) {
            return Ok(());
        }
        self.vae = None;
        let parts = if encoder { VaeParts::BOTH } else { VaeParts::DECODER };
        let (vae, vfile) = load_vae(gpu, paths, parts, obs)?;
        self.vae = Some((vfile, vae, encoder));
        Ok(())
    }
}

/// The preview of packed latents after step `index`: through the preview decoder when one is
/// loaded (its time logged), else the linear map. A decoder that fails is dropped with a warning
/// and the linear map takes over: a preview is not worth the run.
async fn preview_image(
    gpu: &Gpu,
    decoder: &mut Option<(String, TinyDecoder)>,
    packed: &Tensor,
    (lh, lw): (usize, usize),
    index: usize,
    obs: &mut dyn Observer,
) -> Result<RgbImage> {
    if let Some((file, dec)) = decoder.as_ref() {
        let t = Stopwatch::start();
        match decode_preview(gpu, dec, packed, lh, lw).await {
            Ok(image) => {
                obs.event(Event::Line(&format!("preview: step {} decoded by TAEF1 in {:.3}s", index + 1, t.secs())));
                return Ok(image);
            }
            Err(e) => {
                obs.event(Event::Warning(&format!(
                    "{} ({file}): {e}; previews use the linear map for the rest of this run",
                    taef1::MODEL
                )));
                *decoder = None;
            }
        }
    }
    latent_preview(&gpu.read_f32(packed).await?, lh, lw)
}

/// Packed latents `[(lh/2)(lw/2), 64]` → the tiny decoder's image at full resolution, as bytes.
async fn decode_preview(gpu: &Gpu, dec: &TinyDecoder, packed: &Tensor, lh: usize, lw: usize) -> Result<RgbImage> {
    let mut b = gpu.batch();
    let z = unpack(gpu, &mut b, packed, dec.config.latent_channels, lh, lw)?;
    let image = dec.decode(gpu, &mut b, &z)?;
    gpu.submit(b)?;
    let f = dec.config.upscale();
    to_rgb8(&gpu.read_f32(&image).await?, lh * f, lw * f)
}

/// Tokenizes and encodes `prompt` with T5 and CLIP (the CLIP parts of `loras` applied), then
/// frees both encoders; returns `(txt [L, 4096], pooled [768])`.
async fn encode_text(
    gpu: &Gpu,
    paths: &ModelPaths,
    prompt: &str,
    t5_len: usize,
    loras: &[(&LoraAdapter, f32)],
    obs: &mut dyn Observer,
) -> Result<(Tensor, Tensor)> {
    let t5_tok = tokenizer(
        "T5 tokenizer",
        resolve_tokenizer("T5 tokenizer", sub(paths, "tokenizer_2").as_deref(), paths.t5_tokenizer.as_deref())?,
        Some(t5_len),
    )?;
    let clip_tok = tokenizer(
        "CLIP tokenizer",
        resolve_tokenizer("CLIP tokenizer", sub(paths, "tokenizer").as_deref(), paths.clip_tokenizer.as_deref())?,
        None,
    )?;
    let t5_ids = t5_tok.encode(prompt)?;
    let clip_ids = clip_tok.encode(prompt)?;
    for w in [clip_ids.warning("CLIP"), t5_ids.warning("T5")].into_iter().flatten() {
        obs.event(Event::Warning(&w));
    }
    check(obs)?;
    obs.event(Event::Stage { stage: Stage::Load, what: "loading the text encoders" });
    let mut t5c = resolve("T5 text encoder", sub(paths, "text_encoder_2").as_deref(), paths.t5.as_deref(), "model")?;
    let mut clipc =
        resolve("CLIP text encoder", sub(paths, "text_encoder").as_deref(), paths.clip.as_deref(), "model")?;
    let (t5f, clipf) = (t5c.weights.file.clone(), clipc.weights.file.clone());
    let t5cfg = t5c
        .config
        .as_deref()
        .map(|j| T5Config::from_json(&t5f, j))
        .transpose()
        .map_err(|e| in_component("T5 text encoder", &t5f, e))?;
    let clipcfg = clipc
        .config
        .as_deref()
        .map(|j| ClipConfig::from_json(&clipf, j))
        .transpose()
        .map_err(|e| in_component("CLIP text encoder", &clipf, e))?;
    let t = Stopwatch::start();
    let t5 = T5Encoder::load_paced(gpu, t5c.weights.source.as_mut(), &t5c.weights.header, t5cfg)
        .await
        .map_err(|e| in_component("T5 text encoder", &t5f, e))?;
    let mut clip = load_component("CLIP text encoder", &mut clipc, |s, h| ClipTextEncoder::load(gpu, s, h, clipcfg))?;
    obs.event(Event::Line(&format!("load: text encoders ({t5f}, {clipf}) in {:.2}s", t.secs())));
    if loras.iter().any(|(a, _)| !a.clip.is_empty()) {
        let applied = clip.set_loras(gpu, loras).map_err(|e| in_component("CLIP text encoder", &clipf, e))?;
        obs.event(Event::Line(&format!("load: LoRA on {} CLIP weights", applied.weights)));
    }
    check(obs)?;
    obs.event(Event::Stage { stage: Stage::Encode, what: "encoding the prompt" });
    let t = Stopwatch::start();
    let mut b = gpu.batch();
    let txt = t5.forward(gpu, &mut b, &t5_ids.ids).map_err(|e| in_component("T5 text encoder", &t5f, e))?;
    let pooled = clip
        .forward(gpu, &mut b, &clip_ids.ids, clip_tok.eos_id())
        .map_err(|e| in_component("CLIP text encoder", &clipf, e))?
        .pooled;
    gpu.submit(b)?;
    gpu.done().await?;
    obs.event(Event::Line(&format!(
        "encode: T5 {} tokens, CLIP {} tokens in {:.2}s",
        t5_ids.ids.len(),
        clip_ids.ids.len(),
        t.secs()
    )));
    Ok((txt, pooled))
}
