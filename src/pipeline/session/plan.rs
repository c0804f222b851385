//! What a run decides before any model loads (`Run`), and the keys under which each stage's
//! product is cached (`StageKeys`).

use super::super::components::{in_component, resolve, Component};
use super::super::generate::{sub, variant, Event, GenerateOptions, ModelPaths, Observer, Stage};
use super::super::schedule::FluxVariant;
use super::super::seed::latent_hw;
use super::super::store::ModelStore;
use crate::error::{Error, Result};
use crate::lora::LoraAdapter;
use crate::model::flux::FluxConfig;
use crate::model::tokenize::{T5_MAX_LEN_DEV, T5_MAX_LEN_SCHNELL};

/// What one run decided before any model loads: the canvas, the transformer's header and config
/// (dev or schnell, hence the T5 length), the adapters, and each stage's cache key.
pub(super) struct Run {
    pub(super) height: usize,
    pub(super) width: usize,
    /// Taken (and closed) when the transformer stage has read it.
    pub(super) transformer: Option<Component>,
    pub(super) config: FluxConfig,
    pub(super) variant: FluxVariant,
    pub(super) t5_len: usize,
    pub(super) adapters: Vec<(LoraAdapter, f32)>,
    pub(super) keys: StageKeys,
}

/// A cached product of a stage is reused only under an equal key.
pub(super) struct StageKeys {
    /// The prompt, T5 length, encoders, tokenizers and the adapters with a CLIP part.
    pub(super) text: String,
    /// The transformer's file and load conversion.
    pub(super) transformer: String,
    /// Where the VAE comes from.
    pub(super) vae: String,
}

impl Run {
    pub(super) fn prepare(
        store: &ModelStore,
        paths: &ModelPaths,
        opts: &GenerateOptions,
        obs: &mut dyn Observer,
    ) -> Result<Run> {
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
        let transformer = resolve(
            store,
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
        let variant = variant(store, paths, &config)?;
        let t5_len = opts.max_sequence_length.unwrap_or(if variant == FluxVariant::Dev {
            T5_MAX_LEN_DEV
        } else {
            T5_MAX_LEN_SCHNELL
        });
        // Adapters first: their CLIP parts apply to the text encoder, the rest to the transformer.
        let mut adapters = Vec::new();
        for (file, scale) in &opts.loras {
            let mut src = store.open(file).map_err(|e| in_component("LoRA", file, e))?;
            let adapter = LoraAdapter::load(src.as_mut(), &config).map_err(|e| in_component("LoRA", file, e))?;
            obs.event(Event::Adapter(&adapter.report.summary()));
            adapters.push((adapter, *scale));
        }
        let clip_loras: Vec<String> = opts
            .loras
            .iter()
            .zip(&adapters)
            .filter(|(_, (a, _))| !a.clip.is_empty())
            .map(|((f, s), _)| format!("{f}:{s}"))
            .collect();
        let text = [
            format!("{:?}|{t5_len}", opts.prompt),
            format!("{:?}", [&paths.root, &paths.t5, &paths.clip, &paths.t5_tokenizer, &paths.clip_tokenizer]),
            clip_loras.join(","),
        ]
        .join("|");
        let keys = StageKeys {
            text,
            transformer: format!("{tfile}|{:?}", opts.convert),
            vae: format!("{:?}", [&paths.root, &paths.vae]),
        };
        Ok(Run { height, width, transformer: Some(transformer), config, variant, t5_len, adapters, keys })
    }

    /// The adapters with their strengths, as the LoRA calls take them.
    pub(super) fn loras(&self) -> Vec<(&LoraAdapter, f32)> {
        self.adapters.iter().map(|(a, s)| (a, *s)).collect()
    }

    /// Whether the adapters are merged into the transformer's weights this run.
    pub(super) fn merged(&self, opts: &GenerateOptions) -> bool {
        opts.merge_loras && !self.adapters.is_empty()
    }
}
