//! Few-step presets (`web/presets/fast.json`): a distilled few-step LoRA (FLUX.1-Turbo-Alpha,
//! Hyper-FLUX.1-dev-8steps) stacked on whatever task adapter is chosen, with the step count and
//! guidance its model card gives. It is just another adapter in the recipe, so share links, PNGs
//! and the download plan carry and show it like any other.

use std::sync::OnceLock;

use serde::Deserialize;

use super::presets::parse;
use super::{Adapter, Recipe};
use crate::error::Result;

pub const FAST_JSON: &str = include_str!("../../web/presets/fast.json");

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FastPreset {
    pub id: String,
    pub title: String,
    /// The LoRA's `resolve/main` URL.
    pub adapter: String,
    pub scale: f32,
    pub steps: u32,
    pub guidance: f32,
    /// The rounded size the file listing shows (display only).
    pub approx: Option<String>,
    pub license: String,
}

#[derive(Deserialize)]
struct FastFile {
    presets: Vec<FastPreset>,
}

/// All few-step presets, in file order (parsed once).
pub fn fast_presets() -> Result<&'static [FastPreset]> {
    static CELL: OnceLock<Result<Vec<FastPreset>>> = OnceLock::new();
    match CELL.get_or_init(|| parse::<FastFile>("web/presets/fast.json", FAST_JSON).map(|f| f.presets)) {
        Ok(v) => Ok(v),
        Err(e) => Err(e.clone()),
    }
}

pub fn fast_preset(id: &str) -> Option<&'static FastPreset> {
    fast_presets().ok()?.iter().find(|p| p.id == id)
}

/// The few-step preset whose adapter `recipe` uses, if any (to restore the form's choice).
pub fn fast_preset_of(recipe: &Recipe) -> Option<&'static FastPreset> {
    fast_presets().ok()?.iter().find(|p| recipe.adapters.iter().any(|a| a.url == p.adapter))
}

impl FastPreset {
    /// Adds this preset's adapter after the task's (once; any other few-step preset's adapter is
    /// replaced: two distillations do not stack) and sets its steps and guidance.
    pub fn apply(&self, recipe: &mut Recipe) {
        let others: Vec<&str> =
            fast_presets().map(|p| p.iter().map(|p| p.adapter.as_str()).collect()).unwrap_or_default();
        recipe.adapters.retain(|a| !others.contains(&a.url.as_str()) && a.url != self.adapter);
        recipe.adapters.push(Adapter { url: self.adapter.clone(), scale: self.scale });
        recipe.steps = self.steps;
        recipe.guidance = self.guidance;
    }
}
