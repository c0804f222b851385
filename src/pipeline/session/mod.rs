//! One text-to-image run after another, keeping what can be reused. A run is five stages (text
//! encoding, reference conditioning, transformer loading, denoising, decoding); each cached
//! product is kept under its stage's key (`StageKeys`: the text embeddings by prompt, T5 length,
//! encoder and tokenizer locations and CLIP adapters; the transformer by file and load
//! conversion; the VAE by location) and reused only under an equal key. A browser tab holds one
//! session, so a new seed, guidance, step count, LoRA scale or reference panel regenerates
//! without reloading gigabytes; only a new prompt runs the text encoders again.
//!
//! Memory: T5-XXL's encoder (≈ 4.8 B parameters) and the transformer (≈ 11.9 B) are the two large parts. When
//! the prompt changes, the cached transformer is dropped before T5 loads unless
//! `keep_transformer_while_encoding` says both fit (a browser cannot ask how much GPU memory
//! there is), and is then re-read from the file (the browser's cache, at disk speed). Any
//! failed run drops every cached model, so a device or memory error leaves a clean session.

mod plan;
mod preview;
mod text;

use super::components::in_component;
use super::conditioning::Conditioning;
use super::generate::{
    check, load_preview_decoder, load_vae, to_rgb8, Event, GenerateOptions, ModelPaths, Observer, RgbImage, Stage,
};
use super::sampler::{SampleOptions, Sampler};
use super::seed::flux_noise;
use super::step_cache::summary;
use super::store::ModelStore;
use crate::clock::Stopwatch;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};
use crate::kernels::matmul::Precision;
use crate::kernels::pack::unpack;
use crate::lora::LoraHost;
use crate::model::flux::FluxModel;
use crate::model::taef1::TinyDecoder;
use crate::model::vae::{TileOptions, Vae, VaeParts};
use crate::weights::load::LoadOptions;
use plan::Run;
use preview::preview_image;
use text::encode_text;

/// Models and embeddings kept between runs.
#[derive(Default)]
pub struct Session {
    /// Keep the transformer loaded while T5 encodes a new prompt (both must fit in GPU memory).
    pub keep_transformer_while_encoding: bool,
    transformer: Option<(String, FluxModel)>,
    vae: Option<CachedVae>,
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
        store: &ModelStore,
        paths: &ModelPaths,
        opts: &GenerateOptions,
        obs: &mut dyn Observer,
    ) -> Result<RgbImage> {
        let out = self.run_inner(gpu, store, paths, opts, obs).await;
        if out.is_err() {
            self.clear();
        }
        out
    }

    async fn run_inner(
        &mut self,
        gpu: &Gpu,
        store: &ModelStore,
        paths: &ModelPaths,
        opts: &GenerateOptions,
        obs: &mut dyn Observer,
    ) -> Result<RgbImage> {
        let t0 = Stopwatch::start();
        let mut run = Run::prepare(store, paths, opts, obs)?;
        self.encode(gpu, store, paths, opts, &run, obs).await?;
        let cond = self.condition(gpu, store, paths, opts, &run, obs).await?;
        self.load_transformer(gpu, opts, &mut run, obs).await?;
        self.load_preview_decoder(gpu, store, paths, obs)?;
        let latents = self.denoise(gpu, opts, &run, cond, obs).await?;
        let image = self.decode(gpu, &run, &latents, &t0, obs).await;
        if run.merged(opts) {
            // Merged weights are not the file's: the next run loads the transformer again.
            self.transformer = None;
        }
        image
    }

    /// Stage 1, the text embeddings: reused when the prompt, the T5 length, the encoders,
    /// tokenizers and the adapters' CLIP parts are unchanged (`Run::keys.text`).
    async fn encode(
        &mut self,
        gpu: &Gpu,
        store: &ModelStore,
        paths: &ModelPaths,
        opts: &GenerateOptions,
        run: &Run,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        if self.text.as_ref().is_some_and(|(k, ..)| k == &run.keys.text) {
            obs.event(Event::Line("encode: the prompt is unchanged; reusing its embeddings"));
            return check(obs);
        }
        self.text = None;
        if !self.keep_transformer_while_encoding {
            self.transformer = None;
        }
        let (txt, pooled) = encode_text(gpu, store, paths, &opts.prompt, run.t5_len, &run.loras(), obs).await?;
        self.text = Some((run.keys.text.clone(), txt, pooled));
        check(obs)
    }

    /// Stage 2, the reference panels' conditioning (the VAE's encoder), when there are any; loads
    /// the VAE (reused while `Run::keys.vae` is unchanged and it has the parts asked for).
    async fn condition(
        &mut self,
        gpu: &Gpu,
        store: &ModelStore,
        paths: &ModelPaths,
        opts: &GenerateOptions,
        run: &Run,
        obs: &mut dyn Observer,
    ) -> Result<Option<Conditioning>> {
        let need_encoder = !opts.references.is_empty();
        self.ensure_vae(gpu, store, paths, &run.keys.vae, need_encoder, obs)?;
        let Some(cached) = self.vae.as_ref().filter(|_| need_encoder) else { return Ok(None) };
        let layout = opts
            .layout
            .ok_or_else(|| Error::InvalidArgument("reference panels need a panel layout (rows × columns)".into()))?;
        obs.event(Event::Stage { stage: Stage::Encode, what: "encoding the reference panels" });
        let c = Conditioning::new(gpu, Some(&cached.vae), &layout, run.width, run.height, &opts.references)
            .map_err(|e| in_component("VAE", &cached.file, e))?;
        gpu.done().await?;
        Ok(Some(c))
    }

    /// Stage 3, the transformer: reused when the same file was loaded the same way
    /// (`Run::keys.transformer`); its precision and adapters are set on every run.
    async fn load_transformer(
        &mut self,
        gpu: &Gpu,
        opts: &GenerateOptions,
        run: &mut Run,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        // The file is read once here, then closed (a browser's cache file is locked while open).
        let Some(mut transformer) = run.transformer.take() else {
            return Err(Error::InvalidArgument("session: the transformer's file was already read".into()));
        };
        let tfile = transformer.weights.file.clone();
        if self.transformer.as_ref().is_some_and(|(k, _)| k == &run.keys.transformer) {
            obs.event(Event::Line(&format!("load: transformer ({tfile}) already loaded")));
        } else {
            self.transformer = None;
            obs.event(Event::Stage { stage: Stage::Load, what: "loading the transformer" });
            let t = Stopwatch::start();
            let load = LoadOptions { convert: opts.convert };
            let w = &mut transformer.weights;
            let model = FluxModel::load_paced(gpu, w.source.as_mut(), &w.header, run.config.clone(), &load)
                .await
                .map_err(|e| in_component("transformer", &tfile, e))?;
            obs.event(Event::Line(&format!("load: transformer ({tfile}) in {:.2}s", t.secs())));
            self.transformer = Some((run.keys.transformer.clone(), model));
        }
        let Some((_, model)) = self.transformer.as_mut() else {
            return Err(Error::InvalidArgument("session: the transformer went missing".into()));
        };
        // Set on every run: the cached transformer keeps the last run's precision otherwise.
        model.set_precision(gpu, if opts.f16 { Precision::F16 } else { Precision::F32 })?;
        model.clear_loras();
        let loras = run.loras();
        if run.merged(opts) {
            let applied = model.merge_loras(gpu, &loras)?;
            obs.event(Event::Line(&format!("load: {} LoRA(s) merged into {} weights", loras.len(), applied.weights)));
        } else if !loras.is_empty() {
            let applied = model.set_loras(gpu, &loras)?;
            obs.event(Event::Line(&format!("load: {} LoRA(s) on {} weights", loras.len(), applied.weights)));
        }
        check(obs)
    }

    /// The preview decoder, when previews are asked for and it is given (small: kept loaded,
    /// keyed by its location).
    fn load_preview_decoder(
        &mut self,
        gpu: &Gpu,
        store: &ModelStore,
        paths: &ModelPaths,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let channels = self.transformer.as_ref().map_or(0, |(_, m)| m.config.in_channels / 4);
        match (&paths.preview_decoder, obs.preview_every()) {
            (Some(file), 1..) if self.preview.as_ref().is_none_or(|(f, _)| f != file) => {
                self.preview = None;
                self.preview = Some((file.clone(), load_preview_decoder(gpu, store, file, channels, obs)?));
            }
            (None, _) => self.preview = None,
            _ => {}
        }
        check(obs)
    }

    /// Stage 4, denoising from the seed's noise: the unpacked latents `[C, H/8, W/8]`.
    async fn denoise(
        &mut self,
        gpu: &Gpu,
        opts: &GenerateOptions,
        run: &Run,
        cond: Option<Conditioning>,
        obs: &mut dyn Observer,
    ) -> Result<Tensor> {
        let (Some((_, model)), Some((_, txt, pooled))) = (self.transformer.as_mut(), self.text.as_ref()) else {
            return Err(Error::InvalidArgument("session: a model went missing".into()));
        };
        obs.event(Event::Stage { stage: Stage::Denoise, what: "denoising" });
        let (height, width, (lh, lw)) = (run.height, run.width, (run.height / 8, run.width / 8));
        let noise = flux_noise(opts.seed, height, width);
        // The step cache lives in this sampler only: nothing computed under another run's LoRA
        // scales, references or prompt is reused.
        let sopts = SampleOptions {
            height,
            width,
            steps: opts.steps,
            guidance: Some(opts.guidance),
            variant: run.variant,
            step_cache: opts.step_cache,
        };
        let every = obs.preview_every();
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
        let latents = unpack(gpu, &mut b, stepper.latents(), run.config.in_channels / 4, lh, lw)?;
        gpu.submit(b)?;
        Ok(latents)
    }

    /// Stage 5, the VAE decode to 8-bit RGB.
    async fn decode(
        &self,
        gpu: &Gpu,
        run: &Run,
        latents: &Tensor,
        t0: &Stopwatch,
        obs: &mut dyn Observer,
    ) -> Result<RgbImage> {
        let Some(cached) = self.vae.as_ref() else {
            return Err(Error::InvalidArgument("session: the VAE went missing".into()));
        };
        obs.event(Event::Stage { stage: Stage::Decode, what: "decoding the image" });
        let t = Stopwatch::start();
        let image = cached
            .vae
            .decode_tiled(gpu, latents, &TileOptions::default())
            .map_err(|e| in_component("VAE", &cached.file, e))?;
        let values = gpu.read_f32(&image).await?;
        let (w, h) = (run.width, run.height);
        obs.event(Event::Line(&format!("decode: {w}×{h} in {:.2}s (total {:.2}s)", t.secs(), t0.secs())));
        to_rgb8(&values, run.height, run.width)
    }

    /// Loads the VAE unless this session has the one of `key` (with its encoder when `encoder`).
    fn ensure_vae(
        &mut self,
        gpu: &Gpu,
        store: &ModelStore,
        paths: &ModelPaths,
        key: &str,
        encoder: bool,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        if self.vae.as_ref().is_some_and(|v| v.key == key && (v.encoder || !encoder)) {
            return Ok(());
        }
        self.vae = None;
        let parts = if encoder { VaeParts::BOTH } else { VaeParts::DECODER };
        let (vae, file) = load_vae(gpu, store, paths, parts, obs)?;
        self.vae = Some(CachedVae { key: key.to_string(), file, vae, encoder });
        Ok(())
    }
}

/// A loaded VAE, by its stage key, with the file it came from and whether it has its encoder.
struct CachedVae {
    key: String,
    file: String,
    vae: Vae,
    encoder: bool,
}
