//! Recipe ↔ URL fragment: `#r=` + base64url(raw deflate(positional JSON)).
//!
//! Positional JSON (an array, no field names) plus deflate keeps links short: the captions and
//! the joint prompt repeat each other, which deflate's back-references absorb. The version comes
//! first so a link from a newer app is reported as such before anything else is parsed. A
//! fragment never reaches a server, so the recipe stays between the people who share it.
//!
//! Wire array, in order: version, model (preset id string, or `[root, transformer, t5, clip, vae,
//! t5_tokenizer, clip_tokenizer]` with nulls), adapters `[[url, scale], ...]`, task (or null),
//! overall caption, panel captions, prompt, rows, cols, width, height, steps, guidance, seed,
//! sampler, references_used (0/1), then — only when the step cache is on — `[threshold,
//! max_reuse or null]` (links written before the cache existed end before it: off).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{Adapter, Captions, Layout, ModelSource, ModelUrls, Recipe, RECIPE_VERSION};
use crate::error::{Error, Result};
use crate::pipeline::step_cache::StepCache;

/// The fragment parameter that holds a recipe.
pub const PARAM: &str = "r";
/// Inflated size limit: far above any valid recipe, small enough that a hostile link cannot
/// make the page allocate much.
const MAX_INFLATED: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum WireModel {
    Preset(String),
    Custom([Option<String>; 7]),
}

#[derive(Serialize, Deserialize)]
struct Wire(
    u64,
    WireModel,
    Vec<(String, f32)>,
    Option<String>,
    String,
    Vec<String>,
    String,
    u32,
    u32,
    u32,
    u32,
    u32,
    f32,
    u64,
    String,
    u8,
    #[serde(default, skip_serializing_if = "Option::is_none")] Option<(f32, Option<u32>)>,
);

fn bad(why: impl Into<String>) -> Error {
    Error::BadShareLink(why.into())
}

impl Wire {
    fn from_recipe(r: &Recipe) -> Wire {
        let model = match &r.model {
            ModelSource::Preset(id) => WireModel::Preset(id.clone()),
            ModelSource::Custom(u) => WireModel::Custom([
                u.root.clone(),
                u.transformer.clone(),
                u.t5.clone(),
                u.clip.clone(),
                u.vae.clone(),
                u.t5_tokenizer.clone(),
                u.clip_tokenizer.clone(),
            ]),
        };
        Wire(
            r.version,
            model,
            r.adapters.iter().map(|a| (a.url.clone(), a.scale)).collect(),
            r.task.clone(),
            r.captions.overall.clone(),
            r.captions.panels.clone(),
            r.prompt.clone(),
            r.layout.rows,
            r.layout.cols,
            r.width,
            r.height,
            r.steps,
            r.guidance,
            r.seed,
            r.sampler.clone(),
            r.references_used as u8,
            r.step_cache.map(|c| (c.threshold, c.max_reuse)),
        )
    }

    fn into_recipe(self) -> Recipe {
        let Wire(
            version,
            model,
            adapters,
            task,
            overall,
            panels,
            prompt,
            rows,
            cols,
            width,
            height,
            steps,
            guidance,
            seed,
            sampler,
            refs,
            cache,
        ) = self;
        let model = match model {
            WireModel::Preset(id) => ModelSource::Preset(id),
            WireModel::Custom([root, transformer, t5, clip, vae, t5_tokenizer, clip_tokenizer]) => {
                ModelSource::Custom(ModelUrls {
                    root,
                    transformer,
                    t5,
                    clip,
                    vae,
                    t5_tokenizer,
                    clip_tokenizer,
                    preview_decoder: None,
                })
            }
        };
        Recipe {
            version,
            model,
            adapters: adapters.into_iter().map(|(url, scale)| Adapter { url, scale }).collect(),
            task,
            captions: Captions { overall, panels },
            prompt,
            layout: Layout { rows, cols },
            width,
            height,
            steps,
            guidance,
            seed,
            sampler,
            references_used: refs != 0,
            step_cache: cache.map(|(threshold, max_reuse)| StepCache { threshold, max_reuse }),
        }
    }
}

/// `#r=...` for a valid recipe (an invalid one is refused: a link that cannot open is useless).
pub fn to_fragment(recipe: &Recipe) -> Result<String> {
    recipe.validate()?;
    let json = serde_json::to_vec(&Wire::from_recipe(recipe)).map_err(|e| bad(e.to_string()))?;
    let packed = miniz_oxide::deflate::compress_to_vec(&json, 9);
    Ok(format!("#{PARAM}={}", base64url_encode(&packed)))
}

/// The recipe in a fragment (`#r=...`, `r=...`, or a whole URL with such a fragment; other
/// `&`-separated parameters are ignored), validated.
pub fn from_fragment(fragment: &str) -> Result<Recipe> {
    let frag = match fragment.split_once('#') {
        Some((_, f)) => f,
        None => fragment,
    };
    let value = frag
        .split('&')
        .find_map(|kv| kv.strip_prefix(PARAM).and_then(|v| v.strip_prefix('=')))
        .ok_or_else(|| bad("it has no `r=` part"))?;
    let packed = base64url_decode(value)?;
    let json = miniz_oxide::inflate::decompress_to_vec_with_limit(&packed, MAX_INFLATED)
        .map_err(|e| bad(format!("its data does not unpack ({:?})", e.status)))?;
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| bad(format!("its data is not a recipe ({e})")))?;
    match value.get(0).and_then(|v| v.as_u64()) {
        Some(RECIPE_VERSION) => {}
        Some(found) => return Err(Error::RecipeVersion { found, supported: RECIPE_VERSION }),
        None => return Err(bad("its data has no format version")),
    }
    let wire: Wire = serde_json::from_value(value).map_err(|e| bad(format!("its data is not a recipe ({e})")))?;
    let recipe = wire.into_recipe();
    recipe.validate()?;
    Ok(recipe)
}

/// RFC 4648 §5 base64url: encoded without padding; trailing `=` padding accepted when decoding;
/// non-canonical trailing bits refused (one link, one spelling).
const B64URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// RFC 4648 §5 base64url without padding.
pub fn base64url_encode(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

/// Inverse of [`base64url_encode`]; also accepts trailing `=` padding. Anything else that is not
/// canonical base64url is an error that says what is wrong with the link.
pub fn base64url_decode(text: &str) -> Result<Vec<u8>> {
    use base64::DecodeError as E;
    B64URL.decode(text).map_err(|e| match e {
        E::InvalidByte(_, c) => bad(format!("it has a character `{}` that links do not use", c as char)),
        E::InvalidLength(_) => bad("its data was cut off"),
        E::InvalidLastSymbol { .. } => bad("its data ends in a character that cannot end a link"),
        E::InvalidPadding => bad("its data has misplaced `=` padding"),
    })
}
