//! VAE configuration (diffusers `AutoencoderKL.__init__`,
//! src/diffusers/models/autoencoders/autoencoder_kl.py @ 58eb52c): from diffusers' `vae/config.json`, FLUX.1
//! defaults for every field it leaves out, and the two key schemes of VAE checkpoints.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::weights::tensor_info::WeightsHeader;

/// Hyper-parameters of the `AutoencoderKL`; FLUX.1 values in [`VaeConfig::flux1`].
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    /// Image channels (RGB: 3) in and out.
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of each level, encoder order (highest resolution first): FLUX (128, 256, 512, 512).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder level; the decoder has one more per level (diffusers `Decoder`,
    /// src/diffusers/models/autoencoders/vae.py @ 58eb52c).
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub scaling_factor: f32,
    pub shift_factor: f32,
    /// The single-head attention in both mid-blocks (diffusers `mid_block_add_attention`).
    pub mid_block_attention: bool,
}

fn field<'a>(j: &'a Value, key: &str) -> Option<&'a Value> {
    j.get(key).filter(|v| !v.is_null())
}

fn bad(key: &str, v: &Value) -> Error {
    Error::InvalidArgument(format!("VAE config.json: `{key}` is {v}, which this VAE cannot use"))
}

fn usize_or(j: &Value, key: &str, default: usize) -> Result<usize> {
    field(j, key).map_or(Ok(default), |v| v.as_u64().map(|n| n as usize).ok_or_else(|| bad(key, v)))
}

fn f32_or(j: &Value, key: &str, default: f32) -> Result<f32> {
    field(j, key).map_or(Ok(default), |v| v.as_f64().map(|x| x as f32).ok_or_else(|| bad(key, v)))
}

fn bool_or(j: &Value, key: &str, default: bool) -> Result<bool> {
    field(j, key).map_or(Ok(default), |v| v.as_bool().ok_or_else(|| bad(key, v)))
}

impl VaeConfig {
    /// The FLUX.1 VAE (`ae.safetensors`, diffusers `black-forest-labs/FLUX.1-dev/vae`): BFL
    /// `configs["flux-dev"].ae_params`, src/flux/util.py @ 802fb47.
    pub fn flux1() -> VaeConfig {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 16,
            norm_num_groups: 32,
            scaling_factor: 0.3611,
            shift_factor: 0.1159,
            mid_block_attention: true,
        }
    }

    /// From diffusers' `vae/config.json`; absent fields take the FLUX.1 values. Quant convs
    /// (`use_quant_conv` / `use_post_quant_conv` true, SD-style VAEs) are refused: FLUX has none.
    pub fn from_diffusers_json(json: &str) -> Result<VaeConfig> {
        let j: Value =
            serde_json::from_str(json).map_err(|e| Error::InvalidArgument(format!("VAE config.json: {e}")))?;
        let d = VaeConfig::flux1();
        let block_out_channels = match field(&j, "block_out_channels") {
            None => d.block_out_channels,
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect::<Option<Vec<_>>>())
                .ok_or_else(|| bad("block_out_channels", v))?,
        };
        for key in ["use_quant_conv", "use_post_quant_conv"] {
            if bool_or(&j, key, false)? {
                return Err(Error::InvalidArgument(format!(
                    "VAE config.json: `{key}` is true, but the FLUX VAE has no quant_conv/post_quant_conv layers; this config is for another VAE (e.g. Stable Diffusion's): use FLUX.1's `vae/config.json` or leave it out"
                )));
            }
        }
        let c = VaeConfig {
            in_channels: usize_or(&j, "in_channels", d.in_channels)?,
            out_channels: usize_or(&j, "out_channels", d.out_channels)?,
            block_out_channels,
            layers_per_block: usize_or(&j, "layers_per_block", d.layers_per_block)?,
            latent_channels: usize_or(&j, "latent_channels", d.latent_channels)?,
            norm_num_groups: usize_or(&j, "norm_num_groups", d.norm_num_groups)?,
            scaling_factor: f32_or(&j, "scaling_factor", d.scaling_factor)?,
            shift_factor: f32_or(&j, "shift_factor", d.shift_factor)?,
            mid_block_attention: bool_or(&j, "mid_block_add_attention", true)?,
        };
        c.check_caps("VAE config.json")?;
        c.validate()?;
        Ok(c)
    }

    /// Width at the lowest resolution (mid-blocks, attention head dim).
    pub fn mid_channels(&self) -> usize {
        self.block_out_channels.last().copied().unwrap_or(0)
    }

    /// Pixels per latent pixel along each side: 2^(levels − 1) (FLUX: 8).
    pub fn downsampling(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Every count and width against `crate::limits` (`file` names the config in the error),
    /// before anything is allocated from them.
    pub fn check_caps(&self, file: &str) -> Result<()> {
        use crate::limits::{VAE_LAYERS, VAE_LEVELS, VAE_WIDTH};
        VAE_LEVELS.check_usize(file, self.block_out_channels.len())?;
        VAE_LAYERS.check_usize(file, self.layers_per_block)?;
        let widths = [self.in_channels, self.out_channels, self.latent_channels, self.norm_num_groups];
        widths.iter().chain(&self.block_out_channels).try_for_each(|&w| VAE_WIDTH.check_usize(file, w))
    }

    /// Every width a GroupNorm sees must split into the configured number of groups.
    pub fn validate(&self) -> Result<()> {
        let g = self.norm_num_groups;
        let ok_width = |c: &usize| *c > 0 && g > 0 && c.is_multiple_of(g);
        if self.block_out_channels.is_empty()
            || !self.block_out_channels.iter().all(ok_width)
            || self.layers_per_block == 0
            || self.latent_channels == 0
            || self.in_channels == 0
            || self.out_channels == 0
            || !(self.scaling_factor.is_finite() && self.scaling_factor != 0.0 && self.shift_factor.is_finite())
        {
            return Err(Error::InvalidArgument(format!(
                "VAE config: {self:?} (needs ≥ 1 level, widths divisible by {g} groups, ≥ 1 layer per block, a non-zero scaling factor)"
            )));
        }
        Ok(())
    }
}

/// The two key schemes of VAE checkpoints (diffusers names, BFL names as mapped by diffusers'
/// `convert_ldm_vae_checkpoint`, src/diffusers/loaders/single_file_utils.py @ 58eb52c), with the prefix found
/// before every key (e.g. `vae.` or `first_stage_model.` in bundled checkpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaeKeys {
    /// `decoder.mid_block.resnets.0.conv1.weight`, `decoder.up_blocks.0...` (execution order).
    Diffusers { prefix: String },
    /// `decoder.mid.block_1.conv1.weight`, `decoder.up.3...` (numbered by resolution).
    Bfl { prefix: String },
}

impl VaeKeys {
    /// Detects the scheme from the mid-block's first resnet, in the decoder or the encoder.
    pub fn detect(header: &WeightsHeader) -> Result<VaeKeys> {
        for t in &header.tensors {
            for part in ["decoder.", "encoder."] {
                if let Some(p) = t.name.strip_suffix(&format!("{part}mid_block.resnets.0.conv1.weight")) {
                    return Ok(VaeKeys::Diffusers { prefix: p.to_string() });
                }
                if let Some(p) = t.name.strip_suffix(&format!("{part}mid.block_1.conv1.weight")) {
                    return Ok(VaeKeys::Bfl { prefix: p.to_string() });
                }
            }
        }
        Err(Error::MissingTensor {
            file: header.file.clone(),
            name: "decoder.mid_block.resnets.0.conv1.weight (diffusers) or decoder.mid.block_1.conv1.weight (BFL)"
                .into(),
        })
    }

    /// The full key: `diffusers` or `bfl`, whichever this scheme uses.
    pub fn key(&self, diffusers: &str, bfl: &str) -> String {
        match self {
            VaeKeys::Diffusers { prefix } => format!("{prefix}{diffusers}"),
            VaeKeys::Bfl { prefix } => format!("{prefix}{bfl}"),
        }
    }

    pub fn is_bfl(&self) -> bool {
        matches!(self, VaeKeys::Bfl { .. })
    }
}
