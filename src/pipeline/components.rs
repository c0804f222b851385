//! Where the pieces of a FLUX pipeline come from: a diffusers-layout model directory or URL root
//! (`model_index.json`, `transformer/`, `vae/`, `text_encoder/` (CLIP), `text_encoder_2/` (T5),
//! `tokenizer/`, `tokenizer_2/`, `scheduler/`) and per-component overrides (a weights file, a
//! component folder, or a tokenizer file, each a path or URL). Weights are one file or shards
//! listed by a `*.safetensors.index.json` (`weight_map`), read through one `weights::sharded::ShardedSource`. Every location is read through the
//! [`ModelStore`] the caller passes.
//! Every error names the component and the file (`Error::Component`).

use std::collections::BTreeSet;

use super::store::ModelStore;
use crate::error::{Error, Result};
use crate::limits::{Cap, CONFIG_JSON_BYTES, INDEX_JSON_BYTES, TOKENIZER_BYTES};
use crate::weights::load::{read_header, ByteSource};
use crate::weights::sharded::ShardedSource;
use crate::weights::tensor_info::WeightsHeader;

pub use super::store::is_url;

/// A local directory, or a URL that names no file (no `.safetensors` / `.gguf` / `.json` /
/// `.txt` ending): a folder of a diffusers-layout repository, such as `…/resolve/main/tokenizer`.
fn is_folder(store: &ModelStore, location: &str) -> bool {
    let file_like = [".safetensors", ".gguf", ".json", ".txt", ".bin", ".sft"].iter().any(|e| location.ends_with(e));
    store.is_dir(location) || (is_url(location) && !file_like)
}

/// `root` + `/` + `rel` for URLs and paths alike.
pub fn join(root: &str, rel: &str) -> String {
    if is_url(root) {
        format!("{}/{rel}", root.trim_end_matches('/'))
    } else {
        std::path::Path::new(root).join(rel).display().to_string()
    }
}

/// The folder holding `file` (for the `tokenizer_config.json` next to a `tokenizer.json`).
fn parent(file: &str) -> String {
    if is_url(file) {
        file.rsplit_once('/').map(|(p, _)| p.to_string()).unwrap_or_default()
    } else {
        std::path::Path::new(file).parent().map(|p| p.display().to_string()).unwrap_or_default()
    }
}

/// Wraps `e` with the component it happened in, unless it already names one. Errors that name
/// their URL or file themselves and that a user acts on by kind (network, storage, GPU memory,
/// a refused LoRA, cancel) stay as they are, so the app can say what to do.
pub fn in_component(component: &str, file: &str, e: Error) -> Error {
    match e {
        Error::Component { .. }
        | Error::Http { .. }
        | Error::Cors { .. }
        | Error::Quota { .. }
        | Error::NoRangeSupport { .. }
        | Error::RangesNotShown { .. }
        | Error::FileChanged { .. }
        | Error::InsecureRedirect { .. }
        | Error::Timeout { .. }
        | Error::Lora { .. }
        | Error::OutOfMemory(_)
        | Error::DeviceLost(_)
        | Error::Cancelled => e,
        other => Error::Component { component: component.into(), file: file.into(), message: other.to_string() },
    }
}

/// A small file (config, tokenizer, index) whole, at most `cap` bytes (`crate::limits`).
pub fn read_all(store: &ModelStore, component: &str, location: &str, cap: &Cap) -> Result<Vec<u8>> {
    store.read_all(location, cap).map_err(|e| in_component(component, location, e))
}

/// A small file when it exists, `None` when it does not.
pub fn read_optional(store: &ModelStore, component: &str, location: &str, cap: &Cap) -> Result<Option<Vec<u8>>> {
    if store.exists(location).map_err(|e| in_component(component, location, e))? {
        read_all(store, component, location, cap).map(Some)
    } else {
        Ok(None)
    }
}

/// The shard files of a `*.safetensors.index.json` (its `weight_map` values, in sorted order),
/// resolved next to the index.
pub fn shard_files(index: &str, json: &[u8]) -> Result<Vec<String>> {
    let bad = |what: String| Error::Malformed { file: index.into(), what };
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no `weight_map` object".into()))?;
    let names: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
    if names.is_empty() || names.iter().any(|n| n.contains("..") || n.starts_with('/')) {
        return Err(bad("`weight_map` must name shard files next to the index".into()));
    }
    let dir = parent(index);
    Ok(names.into_iter().map(|n| join(&dir, n)).collect())
}

/// An opened weights location: one file, or shards behind an index.
pub struct Weights {
    pub source: Box<dyn ByteSource>,
    pub header: WeightsHeader,
    /// The file (or index) opened, for messages.
    pub file: String,
    /// The files holding the bytes (the file itself, or every shard) with their sizes: what a
    /// browser downloads into its cache before loading.
    pub files: Vec<(String, u64)>,
}

/// Opens weights at `location`: an `*.index.json` (sharded) or a single safetensors/GGUF file.
pub fn open_weights(store: &ModelStore, component: &str, location: &str) -> Result<Weights> {
    let wrap = |e| in_component(component, location, e);
    if location.ends_with(".index.json") {
        let json = read_all(store, component, location, &INDEX_JSON_BYTES)?;
        let files = shard_files(location, &json).map_err(wrap)?;
        let opened = files.iter().map(|f| Ok((f.clone(), store.open(f)?))).collect::<Result<Vec<_>>>().map_err(wrap)?;
        let (src, header) = ShardedSource::open(location, opened).map_err(wrap)?;
        let files = files.into_iter().zip(src.shard_lens()).collect();
        return Ok(Weights { source: Box::new(src), header, file: location.into(), files });
    }
    let mut src = store.open(location).map_err(wrap)?;
    let header = read_header(src.as_mut()).map_err(wrap)?;
    let files = vec![(location.to_string(), src.len())];
    Ok(Weights { source: src, header, file: location.into(), files })
}

/// A model component: its weights and `config.json` text (when it has one).
pub struct Component {
    pub weights: Weights,
    pub config: Option<String>,
}

/// Resolves a component from its folder `dir` (diffusers layout: `config.json` and `{stem}.safetensors`
/// or `{stem}.safetensors.index.json`) or from an explicit `file` (a weights file or an index: no
/// config, it is inferred from the tensors; or a component folder).
pub fn resolve(
    store: &ModelStore,
    component: &str,
    dir: Option<&str>,
    file: Option<&str>,
    stem: &str,
) -> Result<Component> {
    let dir = match (file, dir) {
        (Some(f), _) if !is_folder(store, f) => {
            return Ok(Component { weights: open_weights(store, component, f)?, config: None })
        }
        (Some(f), _) => f.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => {
            return Err(Error::Component {
                component: component.into(),
                file: "(none)".into(),
                message: "no --model and no file given for it".into(),
            })
        }
    };
    let single = join(&dir, &format!("{stem}.safetensors"));
    let index = join(&dir, &format!("{stem}.safetensors.index.json"));
    let location = if store.exists(&single).map_err(|e| in_component(component, &single, e))? {
        single
    } else if store.exists(&index).map_err(|e| in_component(component, &index, e))? {
        index
    } else {
        return Err(Error::Component {
            component: component.into(),
            file: single,
            message: format!("not found (nor `{index}`); is the model folder complete?"),
        });
    };
    let config_file = join(&dir, "config.json");
    let config = read_optional(store, component, &config_file, &CONFIG_JSON_BYTES)?
        .map(|b| {
            String::from_utf8(b).map_err(|_| Error::Component {
                component: component.into(),
                file: config_file.clone(),
                message: "not UTF-8".into(),
            })
        })
        .transpose()?;
    Ok(Component { weights: open_weights(store, component, &location)?, config })
}

/// Tokenizer files: `tokenizer.json`, or (CLIP) `vocab.json` + `merges.txt`; plus
/// `tokenizer_config.json` when present.
pub struct TokenizerFiles {
    pub location: String,
    pub tokenizer_json: Option<Vec<u8>>,
    pub vocab_merges: Option<(Vec<u8>, Vec<u8>)>,
    pub config: Option<Vec<u8>>,
}

/// Tokenizer files from a folder (`dir`) or an explicit file (a `tokenizer.json`, with the
/// `tokenizer_config.json` next to it if any; or a folder).
pub fn resolve_tokenizer(
    store: &ModelStore,
    component: &str,
    dir: Option<&str>,
    file: Option<&str>,
) -> Result<TokenizerFiles> {
    let (dir, json_file) = match (file, dir) {
        (Some(f), _) if !is_folder(store, f) => (parent(f), Some(f.to_string())),
        (Some(f), _) => (f.to_string(), None),
        (None, Some(d)) => (d.to_string(), None),
        (None, None) => {
            return Err(Error::Component {
                component: component.into(),
                file: "(none)".into(),
                message: "no --model and no file given for it".into(),
            })
        }
    };
    let config = read_optional(store, component, &join(&dir, "tokenizer_config.json"), &CONFIG_JSON_BYTES)?;
    let json_file = json_file.unwrap_or_else(|| join(&dir, "tokenizer.json"));
    if let Some(j) = read_optional(store, component, &json_file, &TOKENIZER_BYTES)? {
        return Ok(TokenizerFiles { location: json_file, tokenizer_json: Some(j), vocab_merges: None, config });
    }
    let (vocab, merges) = (join(&dir, "vocab.json"), join(&dir, "merges.txt"));
    let (vocab_bytes, merges_bytes) = (
        read_optional(store, component, &vocab, &TOKENIZER_BYTES)?,
        read_optional(store, component, &merges, &TOKENIZER_BYTES)?,
    );
    match (vocab_bytes, merges_bytes) {
        (Some(v), Some(m)) => {
            Ok(TokenizerFiles { location: dir, tokenizer_json: None, vocab_merges: Some((v, m)), config })
        }
        _ => Err(Error::Component {
            component: component.into(),
            file: json_file,
            message: format!("not found (nor `{vocab}` + `{merges}`); is the model folder complete?"),
        }),
    }
}
