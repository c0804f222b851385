//! LoRA safetensors → modules on our BFL weights (the formats diffusers'
//! `FluxLoraLoaderMixin.lora_state_dict` tells apart, src/diffusers/loaders/lora_pipeline.py @ 58eb52c):
//! every key is classified (format, module, role), checked against the model config, and the factors are read
//! to f32 on the CPU (they are small: rank × width). CLIP-L text-encoder modules (`lora_te1_…`,
//! `text_encoder.…`) become modules on the CLIP Linears (`lora::clip`), checked against the CLIP
//! config when applied; T5 parts are reported as ignored.

use std::collections::{BTreeMap, BTreeSet};

use super::clip::clip_linear_name;
use super::targets::{Target, Targets};
use crate::error::{Error, Result};
use crate::limits::{LORA_F32_BYTES, LORA_RANK};
use crate::model::flux::FluxConfig;
use crate::weights::load::{read_floats, read_header, ByteSource};
use crate::weights::tensor_info::{TensorInfo, WeightsHeader};

/// The key scheme a LoRA file was written in (the converters of
/// src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LoraFormat {
    /// `transformer.<diffusers module>.lora_A/B.weight` (also `base_model.model.` or no prefix).
    Diffusers,
    /// `lora_unet_<bfl path>.lora_down/up.weight` + `.alpha` (also `lora_transformer_` "mixture").
    Kohya,
    /// `[diffusion_model.]<bfl path>.lora_A/B.weight`.
    BflNative,
    /// `double_blocks.{i}.processor.qkv_lora1.down/up.weight`.
    XLabs,
}

/// One low-rank delta on rows `target.n0 .. + target.len` of the BFL Linear `target.bfl`:
/// `Δy = (alpha / rank) · (x·Aᵀ)·Bᵀ` (diffusers `_convert_kohya_flux_lora_to_diffusers`,
/// src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c). `b` is in BFL row order (a diffusers
/// final-layer module has its halves swapped when applied, see `apply`).
#[derive(Debug, Clone)]
pub struct LoraModule {
    /// The module name as in the file (prefix and suffix removed).
    pub key: String,
    pub target: Target,
    pub rank: usize,
    /// `[rank, k]` row-major.
    pub a: Vec<f32>,
    /// `[len, rank]` row-major.
    pub b: Vec<f32>,
    pub alpha: f32,
}

impl LoraModule {
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }
}

/// What a LoRA file holds and what of it is used.
#[derive(Debug, Clone, Default)]
pub struct LoraReport {
    pub file: String,
    /// Formats seen (one for every ordinary file).
    pub formats: Vec<LoraFormat>,
    /// Distinct ranks, ascending.
    pub ranks: Vec<usize>,
    /// BFL Linears the adapter changes, in file order of first appearance.
    pub layers: Vec<String>,
    /// CLIP text-encoder Linears it changes (HF names, `text_model.encoder.layers.{i}.self_attn.q_proj`),
    /// in file order; applied by the CLIP text encoder's `LoraHost::set_loras`.
    pub clip_layers: Vec<String>,
    /// `(key, why)` for every key not applied (T5 text-encoder parts).
    pub ignored: Vec<(String, String)>,
}

impl LoraReport {
    /// One line for people: formats, ranks, what it changes and what it leaves out.
    pub fn summary(&self) -> String {
        let formats: Vec<String> = self.formats.iter().map(|f| format!("{f:?}")).collect();
        let ranks: Vec<String> = self.ranks.iter().map(|r| r.to_string()).collect();
        let mut s = format!(
            "{}: {} format, rank {}, {} transformer layers",
            self.file,
            formats.join("+"),
            ranks.join("/"),
            self.layers.len()
        );
        if !self.clip_layers.is_empty() {
            s += &format!(", {} CLIP layers", self.clip_layers.len());
        }
        if let Some((key, why)) = self.ignored.first() {
            s += &format!("; {} keys ignored (e.g. `{key}`: {why})", self.ignored.len());
        }
        s
    }
}

/// A parsed LoRA: modules on the transformer and on the CLIP text encoder.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub modules: Vec<LoraModule>,
    /// CLIP-L modules (`lora_te1_…` / `text_encoder.…`); `target.bfl` is the CLIP Linear's HF name
    /// and `target.len`/`target.k` come from the file (checked when applied).
    pub clip: Vec<LoraModule>,
    pub report: LoraReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Down,
    Up,
    Alpha,
}

/// Longest suffixes first: `.lora.down.weight` must not be read as XLabs' `.down.weight`.
const SUFFIXES: &[(&str, Role)] = &[
    (".lora.down.weight", Role::Down),
    (".lora.up.weight", Role::Up),
    (".lora_down.weight", Role::Down),
    (".lora_up.weight", Role::Up),
    (".lora_A.weight", Role::Down),
    (".lora_B.weight", Role::Up),
    (".down.weight", Role::Down),
    (".up.weight", Role::Up),
    (".alpha", Role::Alpha),
];

const PREFIXES: &[&str] = &["base_model.model.", "transformer.", "model.diffusion_model.", "diffusion_model."];

enum Class {
    /// A factor of a module on `target` (FLUX, or CLIP when `clip`).
    Module {
        target: Target,
        format: LoraFormat,
        module: String,
        role: Role,
        clip: bool,
    },
    T5,
}

fn lora_err(file: &str, key: &str, why: impl Into<String>) -> Error {
    Error::Lora { file: file.into(), key: key.into(), why: why.into() }
}

/// Kinds this engine does not apply; they would change the output if skipped.
fn unsupported_kind(key: &str) -> Option<&'static str> {
    if key.contains("dora_scale") {
        Some("DoRA (`dora_scale`) adapters are not supported; use a plain LoRA")
    } else if key.contains("lokr_") {
        Some("LoKr adapters are not supported; use a plain LoRA")
    } else if key.contains(".hada_") {
        Some("LoHa adapters are not supported; use a plain LoRA")
    } else if key.ends_with(".diff") || key.ends_with(".diff_b") {
        Some("full-delta (`.diff`) keys are not supported; use a plain LoRA")
    } else if key.ends_with(".lora_B.bias") || key.ends_with(".lora_up.bias") {
        Some("LoRA biases (BFL control LoRAs) are not supported")
    } else {
        None
    }
}

fn classify(t: &Targets, file: &str, key: &str) -> Result<Class> {
    if let Some(why) = unsupported_kind(key) {
        return Err(lora_err(file, key, why));
    }
    if ["lora_te2_", "text_encoder_2.", "text_encoders.t5xxl."].iter().any(|p| key.starts_with(p)) {
        return Ok(Class::T5);
    }
    let (module, role) = SUFFIXES
        .iter()
        .find_map(|(s, r)| key.strip_suffix(s).map(|m| (m, *r)))
        .ok_or_else(|| lora_err(file, key, "not a LoRA factor (`lora_A/B`, `lora_down/up`, `down/up` or `alpha`)"))?;
    // Raw PEFT saves of the text encoder alone start at its `text_model.` (FLUX has none).
    if ["lora_te1_", "lora_te_", "text_encoder.", "text_encoders.clip_l.", "base_model.model.text_model."]
        .iter()
        .any(|p| key.starts_with(p))
    {
        let name = clip_linear_name(module).ok_or_else(|| {
            lora_err(file, key, "no such Linear in the CLIP text encoder (LoRAs on its encoder layers' q/k/v/out projections and MLP are supported)")
        })?;
        let format = if module.starts_with("lora_te") { LoraFormat::Kohya } else { LoraFormat::Diffusers };
        // n and k are those of the file's factors, set when both are read.
        let target = Target { bfl: name, n0: 0, len: 0, k: 0, diffusers_halves: false };
        return Ok(Class::Module { target, format, module: module.to_string(), role, clip: true });
    }
    let found = if let Some(m) = module.strip_prefix("lora_unet_") {
        t.kohya.get(m).map(|x| (x, LoraFormat::Kohya))
    } else if let Some(m) = module.strip_prefix("lora_transformer_") {
        t.diffusers_underscored.get(m).map(|x| (x, LoraFormat::Kohya))
    } else {
        let mut m = module;
        while let Some(p) = PREFIXES.iter().find(|p| m.starts_with(*p)) {
            m = &m[p.len()..];
        }
        if m.contains(".processor.") {
            t.xlabs.get(m).map(|x| (x, LoraFormat::XLabs))
        } else if let Some(x) = t.diffusers.get(m) {
            Some((x, LoraFormat::Diffusers))
        } else {
            t.bfl.get(m).map(|x| (x, LoraFormat::BflNative))
        }
    };
    match found {
        Some((target, format)) => {
            Ok(Class::Module { target: target.clone(), format, module: module.to_string(), role, clip: false })
        }
        None => Err(lora_err(
            file,
            key,
            "no such Linear in this FLUX model (a LoRA for another base model or block count?)",
        )),
    }
}

/// A tensor as f32 values (F32, F16, BF16, F8).
fn values(src: &mut dyn ByteSource, h: &WeightsHeader, info: &TensorInfo) -> Result<Vec<f32>> {
    read_floats(src, info)?.ok_or_else(|| {
        lora_err(&h.file, &info.name, format!("LoRA factors must be F32, F16, BF16 or F8, not {}", info.dtype.name()))
    })
}

/// `lora_alpha` (and `alpha_pattern`) from diffusers' `__metadata__["lora_adapter_metadata"]`,
/// for the transformer or the text encoder.
struct MetaAlpha {
    alpha: Option<f32>,
    pattern: Vec<(String, f32)>,
}

impl MetaAlpha {
    /// `component`: `transformer` or `text_encoder`.
    fn new(h: &WeightsHeader, component: &str) -> Result<MetaAlpha> {
        let Some(json) = h.meta("lora_adapter_metadata").and_then(|v| v.as_str()) else {
            return Ok(MetaAlpha { alpha: None, pattern: Vec::new() });
        };
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| lora_err(&h.file, "__metadata__.lora_adapter_metadata", format!("not JSON: {e}")))?;
        // A raw peft config has `lora_alpha`; `FluxPipeline.save_lora_weights` writes it per
        // component, `transformer.lora_alpha`, `text_encoder.lora_alpha` (`_pack_dict_with_prefix`).
        let field = |name: &str| v.get(format!("{component}.{name}")).or_else(|| v.get(name));
        let pattern = field("alpha_pattern")
            .and_then(|p| p.as_object())
            .map(|o| o.iter().filter_map(|(k, a)| a.as_f64().map(|a| (k.clone(), a as f32))).collect())
            .unwrap_or_default();
        Ok(MetaAlpha { alpha: field("lora_alpha").and_then(|a| a.as_f64()).map(|a| a as f32), pattern })
    }

    fn get(&self, module: &str) -> Option<f32> {
        let m = PREFIXES.iter().fold(module, |m, p| m.strip_prefix(p).unwrap_or(m));
        self.pattern.iter().find(|(p, _)| m == p || m.ends_with(&format!(".{p}"))).map(|p| p.1).or(self.alpha)
    }
}

#[derive(Default)]
struct Parts<'a> {
    target: Option<(Target, LoraFormat)>,
    clip: bool,
    down: Option<&'a TensorInfo>,
    up: Option<&'a TensorInfo>,
    alpha: Option<&'a TensorInfo>,
}

fn dims(info: &TensorInfo) -> Vec<usize> {
    info.shape.iter().map(|&d| d as usize).collect()
}

impl LoraAdapter {
    /// Reads the header and every factor of a LoRA file from `src`, for a model of config `c`.
    pub fn load(src: &mut dyn ByteSource, c: &FluxConfig) -> Result<LoraAdapter> {
        let header = read_header(src)?;
        LoraAdapter::from_header(src, &header, c)
    }

    /// Like [`load`](Self::load) with the header already parsed. Errors (typed, naming the first
    /// offending key): unsupported kinds, unknown modules, shapes that do not fit `c`.
    pub fn from_header(src: &mut dyn ByteSource, h: &WeightsHeader, c: &FluxConfig) -> Result<LoraAdapter> {
        let t = Targets::new(c);
        let file = h.file.as_str();
        let (meta, clip_meta) = (MetaAlpha::new(h, "transformer")?, MetaAlpha::new(h, "text_encoder")?);
        let mut report = LoraReport { file: file.into(), ..Default::default() };
        let mut groups: BTreeMap<String, (usize, Parts)> = BTreeMap::new();
        for (order, info) in h.tensors.iter().enumerate() {
            match classify(&t, file, &info.name)? {
                Class::T5 => report
                    .ignored
                    .push((info.name.clone(), "T5 text-encoder LoRA: not applied (diffusers drops it too)".into())),
                Class::Module { target, format, module, role, clip } => {
                    let g = &mut groups.entry(module).or_insert_with(|| (order, Parts::default())).1;
                    g.target = Some((target, format));
                    g.clip = clip;
                    match role {
                        Role::Down => g.down = Some(info),
                        Role::Up => g.up = Some(info),
                        Role::Alpha => g.alpha = Some(info),
                    }
                }
            }
        }
        let mut ordered: Vec<(String, (usize, Parts))> = groups.into_iter().collect();
        ordered.sort_by_key(|(_, (o, _))| *o);
        let (mut formats, mut ranks, mut layers, mut clip_layers) =
            (BTreeSet::new(), BTreeSet::new(), Vec::new(), Vec::new());
        let (mut modules, mut clip) = (Vec::new(), Vec::new());
        // Every factor is decoded to f32 below: the total is checked before the first is read.
        let factors = ordered.iter().flat_map(|(_, (_, p))| [p.down, p.up, p.alpha]).flatten();
        LORA_F32_BYTES.check(file, factors.fold(0u64, |d, i| d.saturating_add(i.numel().saturating_mul(4))))?;
        for (module, (_, p)) in ordered {
            let Some((mut target, format)) = p.target else { continue };
            let (Some(down), Some(up)) = (p.down, p.up) else {
                let key = p.down.or(p.up).or(p.alpha).map_or(module.clone(), |i| i.name.clone());
                return Err(lora_err(file, &key, "a LoRA module needs both its down (A) and up (B) matrix"));
            };
            let (ds, us) = (dims(down), dims(up));
            if p.clip {
                // CLIP's widths are checked against its config when applied.
                (target.k, target.len) = (ds.get(1).copied().unwrap_or(0), us.first().copied().unwrap_or(0));
            }
            let rank = ds.first().copied().unwrap_or(0);
            LORA_RANK.check_usize(file, rank)?;
            let shape_err = |info: &TensorInfo, expected: String, got: &[usize]| Error::TensorShape {
                file: file.into(),
                name: info.name.clone(),
                expected,
                got: format!("{got:?}"),
            };
            if ds.len() != 2 || rank == 0 || ds[1] != target.k {
                return Err(shape_err(
                    down,
                    format!("[rank, {}] (LoRA down/A for `{}`; a LoRA for another base model?)", target.k, target.bfl),
                    &ds,
                ));
            }
            if us != [target.len, rank] {
                return Err(shape_err(up, format!("[{}, {rank}] (LoRA up/B for `{}`)", target.len, target.bfl), &us));
            }
            let alpha = match p.alpha {
                Some(a) => *values(src, h, a)?.first().ok_or_else(|| lora_err(file, &a.name, "empty alpha"))?,
                // XLabs LoRAs are alpha-free (diffusers `FluxLoraLoaderMixin.lora_state_dict`,
                // src/diffusers/loaders/lora_pipeline.py @ 58eb52c); otherwise alpha = r unless the metadata
                // says.
                None if format == LoraFormat::XLabs => rank as f32,
                None => if p.clip { &clip_meta } else { &meta }.get(&module).unwrap_or(rank as f32),
            };
            if !alpha.is_finite() {
                return Err(lora_err(file, &module, format!("alpha {alpha} is not finite")));
            }
            formats.insert(format);
            ranks.insert(rank);
            let (names, list) = if p.clip { (&mut clip_layers, &mut clip) } else { (&mut layers, &mut modules) };
            if !names.contains(&target.bfl) {
                names.push(target.bfl.clone());
            }
            let (a, b) = (values(src, h, down)?, values(src, h, up)?);
            list.push(LoraModule { key: module, target, rank, a, b, alpha });
        }
        if modules.is_empty() && clip.is_empty() {
            return Err(lora_err(file, "", "no LoRA modules for the FLUX transformer or CLIP in this file"));
        }
        report.formats = formats.into_iter().collect();
        report.ranks = ranks.into_iter().collect();
        report.layers = layers;
        report.clip_layers = clip_layers;
        Ok(LoraAdapter { modules, clip, report })
    }
}
