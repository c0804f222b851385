//! The messages between the page and the engine's worker, as JSON (`serde`). Pixels travel next
//! to the JSON as transferred `Uint8Array`s (see `worker.rs` and `client.rs`), never inside it.

use serde::{Deserialize, Serialize};

use crate::pipeline::generate::ModelPaths;

/// Where a model's components come from (the serializable form of [`ModelPaths`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t5_tokenizer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_tokenizer: Option<String>,
}

impl ModelSpec {
    pub fn paths(&self) -> ModelPaths {
        ModelPaths {
            model: self.model.clone(),
            transformer: self.transformer.clone(),
            vae: self.vae.clone(),
            t5: self.t5.clone(),
            clip: self.clip.clone(),
            t5_tokenizer: self.t5_tokenizer.clone(),
            clip_tokenizer: self.clip_tokenizer.clone(),
        }
    }
}

/// One reference panel of a request; its RGB pixels (`width·height·3` bytes) follow the message
/// in the order of `references`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReferenceSpec {
    pub panel: usize,
    pub width: usize,
    pub height: usize,
    /// `None`: kept as given (RePaint); `Some(s)`: imposed while sigma ≥ s, then free.
    #[serde(default)]
    pub strength: Option<f32>,
}

/// One generation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerateRequest {
    pub model: ModelSpec,
    pub prompt: String,
    pub width: usize,
    pub height: usize,
    pub rows: usize,
    pub cols: usize,
    pub steps: usize,
    pub guidance: f32,
    pub seed: u64,
    #[serde(default)]
    pub loras: Vec<(String, f32)>,
    #[serde(default)]
    pub references: Vec<ReferenceSpec>,
    /// The recipe JSON written into the PNG's `tEXt` chunk.
    #[serde(default)]
    pub recipe: String,
    /// Steps between live previews (0: none).
    #[serde(default)]
    pub preview_every: usize,
    /// How the transformer's float weights load: `keep`, `f16`, `q8_0` or `q4_0`.
    #[serde(default)]
    pub convert: String,
}

/// Page → worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ToWorker {
    /// Open the GPU; answered by `Ready` or `Error`.
    Init,
    /// List the files a model (and adapters) will download, with sizes and cache state.
    Plan { job: u32, model: ModelSpec, loras: Vec<(String, f32)> },
    Generate { job: u32, request: GenerateRequest },
    Cancel { job: u32 },
    /// PNGs of a finished job's panels (and the canvas), optionally zipped.
    Export { job: u32, zip: bool },
    CacheList,
    CacheDelete { url: String },
    /// A file the user dropped (a LoRA); its bytes follow. Later requests name it `file:<name>`.
    AddFile { name: String },
}

/// A file of a plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlannedFile {
    pub component: String,
    pub location: String,
    pub bytes: u64,
    pub cached: bool,
}

/// A cached file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CachedFile {
    pub url: String,
    pub bytes: u64,
    pub complete: bool,
}

/// Worker → page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum FromWorker {
    Ready { adapter: String, shader_f16: bool, max_binding: u64, max_buffer: u64 },
    Plan { job: u32, files: Vec<PlannedFile> },
    /// Download progress of one file (`total` 0 when unknown); `overall_*` over the whole plan.
    Download { job: u32, file: String, bytes: u64, total: u64, rate: f64, eta: f64, overall_bytes: u64, overall_total: u64 },
    Stage { job: u32, stage: String, what: String },
    Step { job: u32, index: usize, steps: usize, seconds: f64 },
    Line { job: u32, line: String },
    Warning { job: u32, message: String },
    /// An adapter's report (formats, ranks, layers applied, keys ignored).
    Adapter { job: u32, summary: String },
    /// RGBA pixels (`width·height·4`) follow.
    Preview { job: u32, step: usize, width: usize, height: usize },
    /// RGBA pixels of the canvas follow, then the canvas PNG (with the recipe).
    Done { job: u32, width: usize, height: usize, seconds: f64 },
    /// Files follow in order (PNG or one zip), named by `names`.
    Exported { job: u32, names: Vec<String> },
    Cache { files: Vec<CachedFile>, note: String },
    Error { job: u32, kind: String, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let m = ToWorker::Generate {
            job: 3,
            request: GenerateRequest {
                model: ModelSpec { model: Some("tiny-flux".into()), ..Default::default() },
                prompt: "[MOVIE-SHOTS] a <Leo> \"quote\"".into(),
                width: 64,
                height: 96,
                rows: 3,
                cols: 1,
                steps: 2,
                guidance: 3.5,
                seed: u64::MAX,
                loras: vec![("https://x/y.safetensors".into(), 0.6)],
                references: vec![ReferenceSpec { panel: 1, width: 64, height: 32, strength: Some(0.5) }],
                recipe: "{}".into(),
                preview_every: 2,
                convert: "q8_0".into(),
            },
        };
        let j = serde_json::to_string(&m).unwrap();
        assert!(j.contains("\"type\":\"generate\""), "{j}");
        assert_eq!(serde_json::from_str::<ToWorker>(&j).unwrap(), m);
        let e = FromWorker::Error { job: 1, kind: "cors".into(), message: "m".into() };
        assert_eq!(serde_json::from_str::<FromWorker>(&serde_json::to_string(&e).unwrap()).unwrap(), e);
    }
}
