//! A recipe as a run: the model's locations (a preset's from `web/presets/models.json`), the
//! adapters and the pipeline's options, with relative locations resolved against a base address
//! (the page that made the recipe, or a share link). The studio's worker and
//! `iclora generate --recipe` both start a run from here, so a share link or a PNG gives the same
//! set in either.

use super::url::resolve_url;
use super::{presets, ModelSource, ModelUrls, Recipe};
use crate::error::{Error, Result};
use crate::pipeline::generate::GenerateOptions;
use crate::pipeline::panels::Layout;
use crate::weights::load::Convert;

/// A model's locations (absolute, no trailing `/`), a preset's looked up in `models.json`.
/// `base` resolves relative ones (the bundled demo's `tiny-flux/`); without one they are an error
/// that says so.
pub fn model_locations(source: &ModelSource, base: Option<&str>) -> Result<ModelUrls> {
    let urls = match source {
        ModelSource::Preset(id) => presets::model_preset(id)
            .ok_or_else(|| Error::InvalidRecipe {
                field: "model".into(),
                why: format!("`{id}` is not a model preset of this app"),
            })?
            .model_urls(),
        ModelSource::Custom(u) => u.clone(),
    };
    let out = urls.try_map(|field, url| {
        Ok(resolve_url(&format!("model.{field}"), base, url)?.trim_end_matches('/').to_string())
    })?;
    if out.root.is_none() && [&out.transformer, &out.vae, &out.t5, &out.clip].iter().any(|u| u.is_none()) {
        return Err(Error::InvalidRecipe {
            field: "model".into(),
            why: "give a model folder URL, or at least the transformer, T5, CLIP and VAE URLs".into(),
        });
    }
    Ok(out)
}

impl Recipe {
    /// The model's locations ([`model_locations`]).
    pub fn model_locations(&self, base: Option<&str>) -> Result<ModelUrls> {
        model_locations(&self.model, base)
    }

    /// The adapters' locations (absolute) with their scales.
    pub fn lora_locations(&self, base: Option<&str>) -> Result<Vec<(String, f32)>> {
        self.adapters
            .iter()
            .enumerate()
            .map(|(i, a)| Ok((resolve_url(&format!("adapters[{i}].url"), base, &a.url)?, a.scale)))
            .collect()
    }

    /// The pipeline's options for this recipe with the adapters at `loras` (from
    /// [`lora_locations`](Self::lora_locations), plus any the caller adds). What a recipe does
    /// not hold keeps its default: no reference panels (images never travel), weights loaded as
    /// stored, f32 tiles, T5 length by variant.
    pub fn generate_options(&self, loras: Vec<(String, f32)>) -> GenerateOptions {
        GenerateOptions {
            prompt: self.prompt.clone(),
            width: self.width as usize,
            height: self.height as usize,
            steps: self.steps as usize,
            guidance: self.guidance,
            seed: self.seed,
            max_sequence_length: None,
            loras,
            merge_loras: false,
            layout: Some(Layout::new(self.layout.rows as usize, self.layout.cols as usize)),
            references: Vec::new(),
            convert: Convert::Keep,
            f16: false,
            step_cache: self.step_cache,
        }
    }
}
