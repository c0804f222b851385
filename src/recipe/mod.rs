//! A recipe: everything needed to make the same image set again — models, adapters with scales, captions and
//! the joint prompt, layout, size, steps, guidance, seed, sampler. It travels in a share link (`share`), in
//! the PNGs it made (`png`), and
//! restores the form. Reference images never travel: `references_used` only says there were some.
//!
//! Everything here is plain Rust (no GPU, no I/O) so the browser build and native tests share it.

pub mod fast;
pub mod png;
pub mod presets;
pub mod run;
pub mod share;
pub mod url;
pub mod zip;

pub use url::{parse_web_url, WebUrl};

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The format version this build writes and reads. Bump it when a field changes meaning.
pub const RECIPE_VERSION: u64 = 1;
/// Canvas sides: multiples of 16 (one packed latent token is 16×16 pixels: the VAE's factor 8 times the 2×2
/// of diffusers' `_pack_latents`, src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c).
pub const SIDE_ALIGN: u32 = 16;
pub const MIN_SIDE: u32 = 64;
pub const MAX_SIDE: u32 = 4096;
/// 8 MP: twice the largest released IC-LoRA canvas (2048×1024 ×4); beyond it attention and the
/// VAE need more memory than browsers give.
pub const MAX_PIXELS: u64 = 8 * 1024 * 1024;
pub const MAX_STEPS: u32 = 100;
pub const MAX_GUIDANCE: f32 = 100.0;
/// At most this many panels along one side of the canvas.
pub const MAX_GRID: u32 = 8;
pub const MAX_ADAPTERS: usize = 8;
pub const MAX_ADAPTER_SCALE: f32 = 10.0;
/// Characters in the joint prompt and in all captions together (T5 reads 512 tokens anyway).
pub const MAX_TEXT_CHARS: usize = 16 * 1024;
/// The samplers this engine has (src/pipeline/sampler.rs).
pub const SAMPLERS: &[&str] = &["euler"];

/// Which weights: a preset of `web/presets/models.json`, or URLs the user gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    Preset(String),
    Custom(ModelUrls),
}

/// Model locations: `root` is a diffusers-layout folder; each other field overrides one component.
/// Tokenizers: a `tokenizer.json` or a folder. One type for recipes (http(s) only, checked by
/// [`Recipe::validate`]), the worker's requests and the CLI (`pipeline::generate::ModelPaths`,
/// where local paths work too).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelUrls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t5_tokenizer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_tokenizer: Option<String>,
    /// The tiny autoencoder that decodes live previews (TAEF1: a weights file, or its folder with
    /// `config.json`); `None`: previews through the linear latent→RGB map. It changes only the
    /// previews, so share links leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_decoder: Option<String>,
}

impl ModelUrls {
    /// The same fields, each set one rewritten by `f(field name, value)` (e.g. made absolute);
    /// the first error stops it.
    pub fn try_map(&self, f: impl Fn(&'static str, &str) -> Result<String>) -> Result<ModelUrls> {
        let g = |name: &'static str, o: &Option<String>| o.as_deref().map(|v| f(name, v)).transpose();
        Ok(ModelUrls {
            root: g("root", &self.root)?,
            transformer: g("transformer", &self.transformer)?,
            t5: g("t5", &self.t5)?,
            clip: g("clip", &self.clip)?,
            vae: g("vae", &self.vae)?,
            t5_tokenizer: g("t5_tokenizer", &self.t5_tokenizer)?,
            clip_tokenizer: g("clip_tokenizer", &self.clip_tokenizer)?,
            preview_decoder: g("preview_decoder", &self.preview_decoder)?,
        })
    }

    /// `(field name, url)` for every set field, in a fixed order.
    pub fn entries(&self) -> Vec<(&'static str, &str)> {
        [
            ("root", &self.root),
            ("transformer", &self.transformer),
            ("t5", &self.t5),
            ("clip", &self.clip),
            ("vae", &self.vae),
            ("t5_tokenizer", &self.t5_tokenizer),
            ("clip_tokenizer", &self.clip_tokenizer),
            ("preview_decoder", &self.preview_decoder),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// A LoRA by URL with its strength.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adapter {
    pub url: String,
    pub scale: f32,
}

/// The captions as the form holds them: one overall description and one per panel (row-major).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Captions {
    pub overall: String,
    pub panels: Vec<String>,
}

/// Panel grid: the canvas is cut into `rows × cols` equal panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub rows: u32,
    pub cols: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// [`RECIPE_VERSION`] when written by this build.
    pub version: u64,
    pub model: ModelSource,
    pub adapters: Vec<Adapter>,
    /// Task preset id (`web/presets/ic-lora.json`), if one was picked.
    pub task: Option<String>,
    pub captions: Captions,
    /// The joint prompt actually encoded; the source of truth (the user may have edited it
    /// after it was built from `captions`).
    pub prompt: String,
    pub layout: Layout,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub guidance: f32,
    pub seed: u64,
    pub sampler: String,
    /// Whether reference panels were given (the images themselves are never in a recipe).
    pub references_used: bool,
    /// The step cache (`pipeline::step_cache`); absent in recipes written before it existed,
    /// which means off (the same images as then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_cache: Option<crate::pipeline::step_cache::StepCache>,
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> Error {
    Error::InvalidRecipe { field: field.into(), why: why.into() }
}

/// The host (`host[:port]`, lower case, punycode) an http(s) URL is fetched from; `None` for
/// anything [`parse_web_url`] refuses (relative URLs, hidden hosts, other schemes).
pub fn url_host(url: &str) -> Option<String> {
    parse_web_url("url", url).ok().map(|u| u.host)
}

/// `Ok` for an absolute http(s) URL whose host reads as it is fetched (see [`url`]).
pub fn check_url(field: &str, url: &str) -> Result<()> {
    parse_web_url(field, url).map(|_| ())
}

fn check_id(field: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(field, format!("`{id}` is not a preset id")))
    }
}

fn check_side(field: &str, v: u32) -> Result<()> {
    if !v.is_multiple_of(SIDE_ALIGN) {
        return Err(invalid(field, format!("{v} is not a multiple of {SIDE_ALIGN}")));
    }
    if !(MIN_SIDE..=MAX_SIDE).contains(&v) {
        return Err(invalid(field, format!("{v} is outside {MIN_SIDE}..={MAX_SIDE} pixels")));
    }
    Ok(())
}

impl Recipe {
    /// Checks every field against what the engine can run; the first problem is the error.
    pub fn validate(&self) -> Result<()> {
        if self.version != RECIPE_VERSION {
            return Err(Error::RecipeVersion { found: self.version, supported: RECIPE_VERSION });
        }
        match &self.model {
            ModelSource::Preset(id) => {
                check_id("model", id)?;
                if presets::model_preset(id).is_none() {
                    return Err(invalid("model", format!("`{id}` is not a model preset of this app")));
                }
            }
            ModelSource::Custom(urls) => {
                let entries = urls.entries();
                if urls.root.is_none() && urls.transformer.is_none() {
                    return Err(invalid("model", "needs a diffusers root URL or a transformer URL"));
                }
                for (k, u) in entries {
                    check_url(&format!("model.{k}"), u)?;
                }
            }
        }
        if self.adapters.len() > MAX_ADAPTERS {
            return Err(invalid("adapters", format!("{} adapters; at most {MAX_ADAPTERS}", self.adapters.len())));
        }
        for (i, a) in self.adapters.iter().enumerate() {
            check_url(&format!("adapters[{i}].url"), &a.url)?;
            if !a.scale.is_finite() || a.scale.abs() > MAX_ADAPTER_SCALE {
                return Err(invalid(
                    format!("adapters[{i}].scale"),
                    format!("{} is not a number in -{MAX_ADAPTER_SCALE}..={MAX_ADAPTER_SCALE}", a.scale),
                ));
            }
        }
        if let Some(t) = &self.task {
            check_id("task", t)?;
        }
        check_side("width", self.width)?;
        check_side("height", self.height)?;
        let pixels = self.width as u64 * self.height as u64;
        if pixels > MAX_PIXELS {
            return Err(invalid("width×height", format!("{pixels} pixels; at most {MAX_PIXELS}")));
        }
        let Layout { rows, cols } = self.layout;
        for (name, n) in [("layout.rows", rows), ("layout.cols", cols)] {
            if !(1..=MAX_GRID).contains(&n) {
                return Err(invalid(name, format!("{n} is outside 1..={MAX_GRID}")));
            }
        }
        if !self.width.is_multiple_of(cols * SIDE_ALIGN) || !self.height.is_multiple_of(rows * SIDE_ALIGN) {
            return Err(invalid(
                "layout",
                format!(
                    "{rows}×{cols} panels do not cut {}×{} into {SIDE_ALIGN}-pixel-aligned panels",
                    self.width, self.height
                ),
            ));
        }
        let panels = self.captions.panels.len();
        if panels != 0 && panels != (rows * cols) as usize {
            return Err(invalid("captions.panels", format!("{panels} captions for {} panels", rows * cols)));
        }
        let chars = self.prompt.chars().count()
            + self.captions.overall.chars().count()
            + self.captions.panels.iter().map(|p| p.chars().count()).sum::<usize>();
        if chars > MAX_TEXT_CHARS {
            return Err(invalid("prompt", format!("{chars} characters of text; at most {MAX_TEXT_CHARS}")));
        }
        if !(1..=MAX_STEPS).contains(&self.steps) {
            return Err(invalid("steps", format!("{} is outside 1..={MAX_STEPS}", self.steps)));
        }
        if !self.guidance.is_finite() || !(0.0..=MAX_GUIDANCE).contains(&self.guidance) {
            return Err(invalid("guidance", format!("{} is not a number in 0..={MAX_GUIDANCE}", self.guidance)));
        }
        if !SAMPLERS.contains(&self.sampler.as_str()) {
            return Err(invalid("sampler", format!("`{}` is not one of {SAMPLERS:?}", self.sampler)));
        }
        if let Some(p) = self.step_cache.as_ref().and_then(|c| c.problem()) {
            return Err(invalid("step_cache", p));
        }
        Ok(())
    }

    /// Every URL the recipe downloads from: the model's (a preset resolved through
    /// `web/presets/models.json`) and the adapters'. Relative URLs (same origin) are left out.
    pub fn urls(&self) -> Vec<String> {
        let mut out: Vec<String> = match &self.model {
            ModelSource::Preset(id) => presets::model_preset(id).map(|p| p.urls()).unwrap_or_default(),
            ModelSource::Custom(urls) => urls.entries().into_iter().map(|(_, u)| u.to_string()).collect(),
        };
        out.extend(self.adapters.iter().map(|a| a.url.clone()));
        out
    }

    /// The distinct hosts this recipe will download from, sorted, as people should read them
    /// (punycode with the Unicode form beside it, [`WebUrl::host_label`]).
    pub fn hosts(&self) -> Vec<String> {
        self.urls()
            .iter()
            .filter_map(|u| parse_web_url("url", u).ok())
            .map(|u| u.host_label())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Canonical JSON (field names as in the struct), for PNG metadata and debugging.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| invalid("recipe", format!("cannot be written as JSON: {e}")))
    }

    /// Parses and validates canonical JSON; a version other than [`RECIPE_VERSION`] is reported
    /// as such even when the rest does not parse.
    pub fn from_json(json: &str) -> Result<Recipe> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| invalid("recipe", format!("is not JSON: {e}")))?;
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(RECIPE_VERSION) => {}
            Some(found) => return Err(Error::RecipeVersion { found, supported: RECIPE_VERSION }),
            None => return Err(invalid("version", "is missing")),
        }
        let recipe: Recipe =
            serde_json::from_value(value).map_err(|e| invalid("recipe", format!("has a wrong field: {e}")))?;
        recipe.validate()?;
        Ok(recipe)
    }
}
