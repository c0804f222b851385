//! The messages between the page and the engine's worker, as JSON (`serde`). Pixels travel next
//! to the JSON as transferred `Uint8Array`s (see `worker.rs` and `client.rs`), never inside it.

use serde::{Deserialize, Serialize};

use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

use crate::recipe::{ModelUrls, Recipe};

/// A message as posted: `{ json, bufs }`, the byte arrays transferred (not copied).
pub fn envelope(json: &str, bufs: Vec<Vec<u8>>) -> Result<(Object, Array), JsValue> {
    let obj = Object::new();
    let arrays = Array::new();
    let transfer = Array::new();
    for b in bufs {
        let a = Uint8Array::from(b.as_slice());
        transfer.push(&a.buffer());
        arrays.push(&a);
    }
    Reflect::set(&obj, &"json".into(), &json.into())?;
    Reflect::set(&obj, &"bufs".into(), &arrays)?;
    Ok((obj, transfer))
}

/// The JSON text and byte arrays of a received [`envelope`].
pub fn open_envelope(data: &JsValue) -> (String, Vec<Vec<u8>>) {
    let text = Reflect::get(data, &"json".into()).ok().and_then(|j| j.as_string()).unwrap_or_default();
    let bufs = Reflect::get(data, &"bufs".into())
        .ok()
        .and_then(|b| b.dyn_into::<Array>().ok())
        .map(|a| a.iter().filter_map(|v| v.dyn_into::<Uint8Array>().ok()).map(|u| u.to_vec()).collect())
        .unwrap_or_default();
    (text, bufs)
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

/// One generation: the recipe (what the set is) and what only this browser has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerateRequest {
    /// The set to make, validated by the page. The worker derives the run from it
    /// (`Recipe::generate_options`), as `iclora generate --recipe` does, and writes it into the PNGs.
    pub recipe: Recipe,
    /// The recipe's model resolved against the page's address (`Recipe::model_locations`), with
    /// the preview decoder when sharp previews are on.
    pub model: ModelUrls,
    /// The recipe's adapters resolved (`Recipe::lora_locations`), then dropped LoRA files
    /// (`file:<name>`), which recipes never name.
    #[serde(default)]
    pub loras: Vec<(String, f32)>,
    #[serde(default)]
    pub references: Vec<ReferenceSpec>,
    /// Steps between live previews (0: none), decoded by `model.preview_decoder` when set.
    #[serde(default)]
    pub preview_every: usize,
    /// How the transformer's float weights load.
    #[serde(default)]
    pub convert: crate::weights::load::Convert,
}

/// Page → worker.
// `Generate` carries a whole recipe; a message is built and sent once per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ToWorker {
    /// Open the GPU; answered by `Ready` or `Error`.
    Init,
    /// List the files a model (and adapters) will download, with sizes and cache state.
    Plan {
        job: u32,
        model: ModelUrls,
        loras: Vec<(String, f32)>,
    },
    Generate {
        job: u32,
        request: GenerateRequest,
    },
    Cancel {
        job: u32,
    },
    /// PNGs of a finished job's panels (and the canvas), optionally zipped.
    Export {
        job: u32,
        zip: bool,
    },
    CacheList,
    CacheDelete {
        url: String,
    },
    /// A file the user dropped (a LoRA); its bytes follow. Later requests name it `file:<name>`.
    AddFile {
        name: String,
    },
}

pub use crate::pipeline::store::PlannedFile;

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
    /// `paths`: the kernel paths generation runs (`kernels::describe_paths`).
    Ready {
        adapter: String,
        paths: String,
        max_binding: u64,
        max_buffer: u64,
    },
    Plan {
        job: u32,
        files: Vec<PlannedFile>,
    },
    /// Download progress of one file (`total` 0 when unknown); `overall_*` over the whole plan.
    Download {
        job: u32,
        file: String,
        bytes: u64,
        total: u64,
        rate: f64,
        eta: f64,
        overall_bytes: u64,
        overall_total: u64,
    },
    Stage {
        job: u32,
        stage: String,
        what: String,
    },
    /// `computed`: with a step cache, the steps so far that ran every block.
    Step {
        job: u32,
        index: usize,
        steps: usize,
        seconds: f64,
        #[serde(default)]
        computed: Option<usize>,
    },
    Line {
        job: u32,
        line: String,
    },
    Warning {
        job: u32,
        message: String,
    },
    /// An adapter's report (formats, ranks, layers applied, keys ignored).
    Adapter {
        job: u32,
        summary: String,
    },
    /// RGBA pixels (`width·height·4`) follow.
    Preview {
        job: u32,
        step: usize,
        width: usize,
        height: usize,
    },
    /// RGBA pixels of the canvas follow, then the canvas PNG (with the recipe).
    Done {
        job: u32,
        width: usize,
        height: usize,
        seconds: f64,
    },
    /// Files follow in order (PNG or one zip), named by `names`.
    Exported {
        job: u32,
        names: Vec<String>,
    },
    Cache {
        files: Vec<CachedFile>,
        note: String,
    },
    Error {
        job: u32,
        kind: String,
        message: String,
    },
    /// The worker's wasm instance died (web/worker.js reports a rejected promise, e.g. a panic in
    /// an async task); the page replaces the worker.
    Crashed {
        message: String,
    },
}
