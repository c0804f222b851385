//! FLUX transformer configuration (diffusers `FluxTransformer2DModel.__init__`,
//! src/diffusers/models/transformers/transformer_flux.py @ 58eb52c): from a diffusers `config.json`, or
//! inferred from the tensor shapes of a checkpoint in diffusers or BFL names.

use serde_json::Value;

use super::tree::{FluxTree, LinearKey, DOUBLE_BLOCKS, SINGLE_BLOCKS};
use crate::error::{Error, Result};
use crate::weights::tensor_info::WeightsHeader;

/// The two key schemes of FLUX checkpoints (BFL and diffusers names, mapped by diffusers'
/// `convert_flux_transformer_checkpoint_to_diffusers`, src/diffusers/loaders/single_file_utils.py @ 58eb52c),
/// with the prefix found before every key (e.g. ComfyUI's `model.diffusion_model.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyScheme {
    /// `x_embedder.weight`, `transformer_blocks.0.attn.to_q.weight`, ... (split q/k/v).
    Diffusers { prefix: String },
    /// `img_in.weight`, `double_blocks.0.img_attn.qkv.weight`, ... (fused qkv, `linear1`).
    Bfl { prefix: String },
}

impl KeyScheme {
    /// Detects the scheme from the input projection's name (`img_in` in the key tree).
    pub fn detect(header: &WeightsHeader) -> Result<KeyScheme> {
        let img_in = FluxTree::probe().img_in;
        let (d, b) = (format!("{}.weight", img_in.diffusers[0].0), format!("{}.weight", img_in.bfl));
        for t in &header.tensors {
            if let Some(p) = t.name.strip_suffix(&d) {
                return Ok(KeyScheme::Diffusers { prefix: p.to_string() });
            }
            if let Some(p) = t.name.strip_suffix(&b) {
                return Ok(KeyScheme::Bfl { prefix: p.to_string() });
            }
        }
        Err(Error::MissingTensor { file: header.file.clone(), name: format!("{d} (diffusers) or {b} (BFL)") })
    }

    pub fn prefix(&self) -> &str {
        match self {
            KeyScheme::Diffusers { prefix } | KeyScheme::Bfl { prefix } => prefix,
        }
    }

    /// The full key of `diffusers` or `bfl` (whichever this scheme uses).
    pub fn key(&self, diffusers: &str, bfl: &str) -> String {
        match self {
            KeyScheme::Diffusers { prefix } => format!("{prefix}{diffusers}"),
            KeyScheme::Bfl { prefix } => format!("{prefix}{bfl}"),
        }
    }
}

/// Hyper-parameters of the transformer; FLUX.1 values in BFL `configs["flux-dev"].params`
/// (src/flux/util.py @ 802fb47).
#[derive(Debug, Clone, PartialEq)]
pub struct FluxConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub double_blocks: usize,
    pub single_blocks: usize,
    /// MLP hidden width (4 × hidden in FLUX.1).
    pub mlp_hidden: usize,
    /// Text feature width (T5-XXL: 4096).
    pub context_dim: usize,
    /// Pooled text width (CLIP-L: 768).
    pub pooled_dim: usize,
    /// dev: true (guidance embedder), schnell: false.
    pub guidance: bool,
    pub axes_dim: Vec<usize>,
    pub theta: f64,
}

/// A field of diffusers' config.json: `Ok(None)` when absent or null.
fn field_usize(j: &Value, key: &str) -> Result<Option<usize>> {
    match j.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
            Error::InvalidArgument(format!("FLUX config.json: `{key}` is {v}, not a non-negative integer"))
        }),
    }
}

fn required(j: &Value, key: &str) -> Result<usize> {
    field_usize(j, key)?.ok_or_else(|| Error::InvalidArgument(format!("FLUX config.json: `{key}` is missing")))
}

impl FluxConfig {
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// FLUX.1 [dev] as released (BFL `configs["flux-dev"].params`, src/flux/util.py @ 802fb47).
    pub fn flux1_dev() -> FluxConfig {
        FluxConfig {
            in_channels: 64,
            out_channels: 64,
            heads: 24,
            head_dim: 128,
            double_blocks: 19,
            single_blocks: 38,
            mlp_hidden: 12288,
            context_dim: 4096,
            pooled_dim: 768,
            guidance: true,
            axes_dim: vec![16, 56, 56],
            theta: 10000.0,
        }
    }

    /// From diffusers' `transformer/config.json` (the MLP ratio is fixed at 4 there).
    pub fn from_diffusers_json(json: &str) -> Result<FluxConfig> {
        let j: Value =
            serde_json::from_str(json).map_err(|e| Error::InvalidArgument(format!("FLUX config.json: {e}")))?;
        let (heads, head_dim) = (required(&j, "num_attention_heads")?, required(&j, "attention_head_dim")?);
        let in_channels = required(&j, "in_channels")?;
        let axes_dim = match j.get("axes_dims_rope") {
            None | Some(Value::Null) => vec![16, 56, 56],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_u64().map(|n| n as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Error::InvalidArgument(format!("FLUX config.json: `axes_dims_rope` is {a:?}")))?,
            Some(v) => return Err(Error::InvalidArgument(format!("FLUX config.json: `axes_dims_rope` is {v}"))),
        };
        let c = FluxConfig {
            in_channels,
            out_channels: field_usize(&j, "out_channels")?.unwrap_or(in_channels),
            heads,
            head_dim,
            double_blocks: required(&j, "num_layers")?,
            single_blocks: required(&j, "num_single_layers")?,
            mlp_hidden: heads.saturating_mul(head_dim).saturating_mul(4),
            context_dim: required(&j, "joint_attention_dim")?,
            pooled_dim: required(&j, "pooled_projection_dim")?,
            guidance: j.get("guidance_embeds").and_then(Value::as_bool).unwrap_or(false),
            axes_dim,
            theta: 10000.0,
        };
        c.check_caps("FLUX config.json")?;
        c.validate()?;
        Ok(c)
    }

    /// Inferred from tensor shapes: hidden size and input/context/pooled widths from the input
    /// projections, head dim from the QK-norm scale length, block counts from the highest block
    /// index, guidance from the presence of the guidance embedder. RoPE axes cannot be seen in the
    /// weights: FLUX.1's (16, 56, 56) for head dim 128, scaled as (d/8, 7d/16, 7d/16) otherwise.
    pub fn infer(header: &WeightsHeader) -> Result<FluxConfig> {
        let s = KeyScheme::detect(header)?;
        let keys = FluxTree::probe();
        let shape = |name: String| -> Result<Vec<usize>> {
            let t = header.tensor(&name).ok_or_else(|| Error::MissingTensor { file: header.file.clone(), name })?;
            Ok(t.shape.iter().map(|&v| v as usize).collect())
        };
        let dims2 = |name: String| -> Result<(usize, usize)> {
            match shape(name.clone())?[..] {
                [n, k] => Ok((n, k)),
                ref other => Err(Error::TensorShape {
                    file: header.file.clone(),
                    name,
                    expected: "a 2-D weight".into(),
                    got: format!("{other:?}"),
                }),
            }
        };
        let weight = |k: &LinearKey| k.name(&s, "weight");
        let (hidden, in_channels) = dims2(weight(&keys.img_in))?;
        let (_, context_dim) = dims2(weight(&keys.txt_in))?;
        let (_, pooled_dim) = dims2(weight(&keys.vector_in.in_layer))?;
        let (out_channels, _) = dims2(weight(&keys.final_layer.linear))?;
        let count = |(b, d): (&str, &str)| -> usize {
            let p = s.key(&format!("{d}."), &format!("{b}."));
            header
                .tensors
                .iter()
                .filter_map(|t| t.name.strip_prefix(&p)?.split('.').next()?.parse::<usize>().ok())
                .map(|i| i + 1)
                .max()
                .unwrap_or(0)
        };
        let double_blocks = count(DOUBLE_BLOCKS);
        let single_blocks = count(SINGLE_BLOCKS);
        let (double, single) = (&keys.double_blocks[0], &keys.single_blocks[0]);
        let head_dim = if double_blocks > 0 {
            shape(double.img_attn.query_norm.name(&s))?
        } else {
            shape(single.query_norm.name(&s))?
        }
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX);
        let mlp_hidden = if double_blocks > 0 {
            dims2(weight(&double.img_mlp_0))?.0
        } else {
            // The MLP rows of `linear1`: diffusers' last part (`proj_mlp`), or BFL's rows past q | k | v.
            let (name, _) = single.linear1.names(&s, "weight").pop().unwrap_or_default();
            let n = dims2(name)?.0;
            if matches!(s, KeyScheme::Bfl { .. }) {
                n.saturating_sub(hidden.saturating_mul(3))
            } else {
                n
            }
        };
        let guidance = keys.guidance_in.as_ref().is_some_and(|g| header.tensor(&weight(&g.in_layer)).is_some());
        let axes_dim = if head_dim == 128 {
            vec![16, 56, 56]
        } else {
            vec![head_dim / 8, head_dim.saturating_mul(7) / 16, head_dim.saturating_mul(7) / 16]
        };
        let c = FluxConfig {
            in_channels,
            out_channels,
            heads: hidden.checked_div(head_dim).unwrap_or(0),
            head_dim,
            double_blocks,
            single_blocks,
            mlp_hidden,
            context_dim,
            pooled_dim,
            guidance,
            axes_dim,
            theta: 10000.0,
        };
        if c.hidden() != hidden {
            return Err(Error::InvalidArgument(format!(
                "`{}`: hidden size {hidden} is not a multiple of the QK-norm length {head_dim}",
                header.file
            )));
        }
        c.check_caps(&header.file)?;
        c.validate()?;
        Ok(c)
    }

    /// Every count and width against `crate::limits` (`file` names the config in the error),
    /// before anything is allocated from them.
    pub fn check_caps(&self, file: &str) -> Result<()> {
        use crate::limits::{FLUX_DOUBLE_BLOCKS, FLUX_HEADS, FLUX_HEAD_DIM, FLUX_MLP, FLUX_SINGLE_BLOCKS, FLUX_WIDTH};
        FLUX_DOUBLE_BLOCKS.check_usize(file, self.double_blocks)?;
        FLUX_SINGLE_BLOCKS.check_usize(file, self.single_blocks)?;
        FLUX_HEADS.check_usize(file, self.heads)?;
        FLUX_HEAD_DIM.check_usize(file, self.head_dim)?;
        FLUX_MLP.check_usize(file, self.mlp_hidden)?;
        let widths = [self.in_channels, self.out_channels, self.context_dim, self.pooled_dim];
        widths.iter().chain(&self.axes_dim).try_for_each(|&w| FLUX_WIDTH.check_usize(file, w))
    }

    /// Consistency checks the kernels rely on (RoPE covers the whole head).
    pub fn validate(&self) -> Result<()> {
        let rope: usize = self.axes_dim.iter().map(|d| d / 2 * 2).sum();
        if self.heads == 0
            || self.head_dim == 0
            || !self.head_dim.is_multiple_of(2)
            || rope != self.head_dim
            || self.axes_dim.len() > 3
        {
            return Err(Error::InvalidArgument(format!(
                "FLUX config: {} heads of dim {} with RoPE axes {:?} (the axes must be ≤ 3 even dims summing to the head dim)",
                self.heads, self.head_dim, self.axes_dim
            )));
        }
        if self.double_blocks + self.single_blocks == 0 {
            return Err(Error::InvalidArgument("FLUX config: no transformer blocks".into()));
        }
        Ok(())
    }
}
