//! The presets the app ships: the ten IC-LoRA tasks (`web/presets/ic-lora.json`) and the model
//! choices (`web/presets/models.json`), compiled in with `include_str!` so native and wasm builds
//! see the same data, plus the task caption format: [`build_prompt`] joins an overall caption and
//! per-panel captions into the joint prompt the adapters were trained on (a task tag, an overall caption,
//! then one tagged caption per panel), [`split_prompt`] is its best-effort inverse.

use std::sync::OnceLock;

use serde::Deserialize;

use super::{Adapter, Captions, Layout, ModelSource, ModelUrls, Recipe, RECIPE_VERSION};
use crate::error::{Error, Result};

pub const IC_LORA_JSON: &str = include_str!("../../web/presets/ic-lora.json");
pub const MODELS_JSON: &str = include_str!("../../web/presets/models.json");

/// How a task's joint prompt is laid out: `[task_tag] <overall><joiner><tag 1> <panel 1>…`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CaptionTemplate {
    /// Leading task tag, e.g. `[MOVIE-SHOTS]`; `None` when the task has none (or has it inside
    /// the overall sentence, as `This [FOUR-PANEL] image …`).
    pub task_tag: Option<String>,
    /// One tag per panel in row-major order, e.g. `[TOP-LEFT]`, `[SCENE-1]`.
    pub panel_tags: Vec<String>,
    /// Put between parts when the previous part does not already end in punctuation.
    pub joiner: String,
    pub example_overall: String,
    pub example_panels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskPreset {
    pub id: String,
    pub title: String,
    /// The LoRA's `resolve/main` URL.
    pub adapter: String,
    pub width: u32,
    pub height: u32,
    pub rows: u32,
    pub cols: u32,
    pub scale: f32,
    pub steps: u32,
    pub guidance: f32,
    pub template: CaptionTemplate,
}

/// One downloadable file of a model preset.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelFile {
    pub url: String,
    /// Exact size where verified.
    pub bytes: Option<u64>,
    /// The rounded size a file listing shows (display only).
    pub approx: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelPreset {
    pub id: String,
    pub title: String,
    /// `dev` or `schnell` (picks the sigma schedule and whether guidance applies).
    pub variant: String,
    pub license: String,
    /// A diffusers-layout folder (relative URLs resolve against the page).
    #[serde(default)]
    pub root: Option<String>,
    #[serde(default)]
    pub transformer: Option<ModelFile>,
    #[serde(default)]
    pub t5: Option<ModelFile>,
    #[serde(default)]
    pub clip: Option<ModelFile>,
    #[serde(default)]
    pub vae: Option<ModelFile>,
    #[serde(default)]
    pub t5_tokenizer: Option<ModelFile>,
    #[serde(default)]
    pub clip_tokenizer: Option<ModelFile>,
}

#[derive(Deserialize)]
struct TaskFile {
    tasks: Vec<TaskPreset>,
}

#[derive(Deserialize)]
struct ModelsFile {
    models: Vec<ModelPreset>,
}

pub(super) fn parse<T: for<'de> Deserialize<'de>>(file: &str, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| Error::Malformed { file: file.into(), what: e.to_string() })
}

/// All task presets, in file order (parsed once).
pub fn task_presets() -> Result<&'static [TaskPreset]> {
    static CELL: OnceLock<Result<Vec<TaskPreset>>> = OnceLock::new();
    match CELL.get_or_init(|| parse::<TaskFile>("web/presets/ic-lora.json", IC_LORA_JSON).map(|f| f.tasks)) {
        Ok(v) => Ok(v),
        Err(e) => Err(e.clone()),
    }
}

/// All model presets, in file order (parsed once).
pub fn model_presets() -> Result<&'static [ModelPreset]> {
    static CELL: OnceLock<Result<Vec<ModelPreset>>> = OnceLock::new();
    match CELL.get_or_init(|| parse::<ModelsFile>("web/presets/models.json", MODELS_JSON).map(|f| f.models)) {
        Ok(v) => Ok(v),
        Err(e) => Err(e.clone()),
    }
}

pub fn task_preset(id: &str) -> Option<&'static TaskPreset> {
    task_presets().ok()?.iter().find(|t| t.id == id)
}

pub fn model_preset(id: &str) -> Option<&'static ModelPreset> {
    model_presets().ok()?.iter().find(|m| m.id == id)
}

impl ModelPreset {
    /// The preset as component URLs (the form's "custom" fields filled from it).
    pub fn model_urls(&self) -> ModelUrls {
        let url = |f: &Option<ModelFile>| f.as_ref().map(|f| f.url.clone());
        ModelUrls {
            root: self.root.clone(),
            transformer: url(&self.transformer),
            t5: url(&self.t5),
            clip: url(&self.clip),
            vae: url(&self.vae),
            t5_tokenizer: url(&self.t5_tokenizer),
            clip_tokenizer: url(&self.clip_tokenizer),
            preview_decoder: None,
        }
    }

    /// Every URL of the preset (root first), relative ones included.
    pub fn urls(&self) -> Vec<String> {
        self.model_urls().entries().into_iter().map(|(_, u)| u.to_string()).collect()
    }

    /// Sum of the verified sizes, and whether every file's size is known.
    pub fn known_bytes(&self) -> (u64, bool) {
        let files = [&self.transformer, &self.t5, &self.clip, &self.vae, &self.t5_tokenizer, &self.clip_tokenizer];
        let present: Vec<&ModelFile> = files.iter().filter_map(|f| f.as_ref()).collect();
        let sum = present.iter().filter_map(|f| f.bytes).sum();
        (sum, present.iter().all(|f| f.bytes.is_some()))
    }
}

impl TaskPreset {
    pub fn layout(&self) -> Layout {
        Layout { rows: self.rows, cols: self.cols }
    }

    /// A recipe for this task with its example captions and recommended settings.
    pub fn example_recipe(&self, model: ModelSource, seed: u64) -> Recipe {
        let t = &self.template;
        Recipe {
            version: RECIPE_VERSION,
            model,
            adapters: vec![Adapter { url: self.adapter.clone(), scale: self.scale }],
            task: Some(self.id.clone()),
            captions: Captions { overall: t.example_overall.clone(), panels: t.example_panels.clone() },
            prompt: build_prompt(t, &t.example_overall, &t.example_panels),
            layout: self.layout(),
            width: self.width,
            height: self.height,
            steps: self.steps,
            guidance: self.guidance,
            seed,
            sampler: "euler".into(),
            references_used: false,
            step_cache: None,
        }
    }
}

/// Characters that end a part well enough that no joiner is needed after it.
const END_PUNCTUATION: &[char] = &[',', ';', '.', ':', '!', '?'];

/// Appends `part` after `out`, with the template's joiner (or a space after punctuation).
fn push_part(out: &mut String, joiner: &str, part: &str) {
    if !out.is_empty() && !out.ends_with(' ') {
        if out.ends_with(END_PUNCTUATION) {
            out.push(' ');
        } else {
            out.push_str(joiner);
        }
    }
    out.push_str(part);
}

/// The joint prompt: task tag, overall caption, then each panel tag with its caption. Captions
/// are trimmed; panels beyond the template's tags are ignored, missing ones get an empty caption.
pub fn build_prompt<S: AsRef<str>>(template: &CaptionTemplate, overall: &str, panels: &[S]) -> String {
    let mut out = String::new();
    if let Some(tag) = &template.task_tag {
        out.push_str(tag);
        out.push(' ');
    }
    out.push_str(overall.trim());
    for (i, tag) in template.panel_tags.iter().enumerate() {
        let caption = panels.get(i).map(|p| p.as_ref().trim()).unwrap_or("");
        push_part(&mut out, &template.joiner, tag);
        if !caption.is_empty() {
            out.push(' ');
            out.push_str(caption);
        }
    }
    out
}

/// Best-effort inverse of [`build_prompt`]: a leading task tag is dropped, the text before the
/// first panel tag is the overall caption, and the text after each tag (up to the next) is that
/// panel's caption, trimmed of spaces and of a trailing joiner. Tags missing from the prompt give
/// empty captions; tags are matched in order.
pub fn split_prompt(template: &CaptionTemplate, prompt: &str) -> Captions {
    let mut text = prompt.trim();
    if let Some(tag) = &template.task_tag {
        text = text.strip_prefix(tag.as_str()).unwrap_or(text);
    }
    let joiner_end = template.joiner.trim();
    let clean = |s: &str| -> String {
        let s = s.trim();
        let s = if joiner_end.is_empty() { s } else { s.strip_suffix(joiner_end).unwrap_or(s) };
        s.trim_end().to_string()
    };
    // (tag index, start of the tag, end of the tag) for each tag found, in order.
    let mut found: Vec<(usize, usize, usize)> = Vec::new();
    let mut from = 0;
    for (i, tag) in template.panel_tags.iter().enumerate() {
        if let Some(pos) = text[from..].find(tag.as_str()) {
            let start = from + pos;
            found.push((i, start, start + tag.len()));
            from = start + tag.len();
        }
    }
    let overall_end = found.first().map(|f| f.1).unwrap_or(text.len());
    let mut panels = vec![String::new(); template.panel_tags.len()];
    for (k, &(i, _, end)) in found.iter().enumerate() {
        let next = found.get(k + 1).map(|f| f.1).unwrap_or(text.len());
        panels[i] = clean(&text[end..next]);
    }
    Captions { overall: clean(&text[..overall_end]), panels }
}
