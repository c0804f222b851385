//! The VAE's weights on the GPU, a struct tree mirroring diffusers' `AutoencoderKL`
//! (src/diffusers/models/autoencoders/autoencoder_kl.py @ 58eb52c; `Encoder`/`Decoder` in
//! src/diffusers/models/autoencoders/vae.py @ 58eb52c), loaded by name from diffusers or BFL
//! (`ae.safetensors`, src/flux/modules/autoencoder.py @ 802fb47) keys.
//!
//! Conv and attention weights stay F16 when the file stores F16 (the conv and matmul kernels read F16
//! weights) and become F32 otherwise (BF16, F8, F32); biases and GroupNorm affines become F32. BFL's
//! attention projections are 1×1 convs `[C, C, 1, 1]`, diffusers' are Linear `[C, C]`: the same numbers,
//! both accepted and uploaded as `[C, C]`.

use super::config::{VaeConfig, VaeKeys};
use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::model::layers::Linear;
use crate::weights::load::ByteSource;
use crate::weights::loader::{Missing, TensorLoader};
use crate::weights::tensor_info::WeightsHeader;

/// A convolution: `w` `[O, I, kh, kw]` (F32 or F16), `b` F32 `[O]`.
pub struct Conv {
    pub w: Tensor,
    pub b: Tensor,
}

/// GroupNorm affine, F32 `[C]` each.
pub struct GroupNorm {
    pub w: Tensor,
    pub b: Tensor,
}

/// `ResnetBlock2D` (src/diffusers/models/resnet.py @ 58eb52c); `conv_shortcut` (BFL `nin_shortcut`) is a 1×1
/// conv iff cin ≠ cout.
pub struct Resnet {
    pub norm1: GroupNorm,
    pub conv1: Conv,
    pub norm2: GroupNorm,
    pub conv2: Conv,
    pub conv_shortcut: Option<Conv>,
}

/// Single-head mid-block attention (BFL `AttnBlock`, src/flux/modules/autoencoder.py @ 802fb47): diffusers
/// `group_norm, to_q, to_k, to_v, to_out.0`.
pub struct Attention {
    pub group_norm: GroupNorm,
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
}

/// `resnets.0`, `attentions.0` (when configured), `resnets.1`.
pub struct MidBlock {
    pub resnet_0: Resnet,
    pub attention: Option<Attention>,
    pub resnet_1: Resnet,
}

/// An encoder level: resnets, then a stride-2 conv (all levels but the last).
pub struct DownBlock {
    pub resnets: Vec<Resnet>,
    pub downsampler: Option<Conv>,
}

/// A decoder level in execution order: resnets, then nearest ×2 + conv (all levels but the last).
pub struct UpBlock {
    pub resnets: Vec<Resnet>,
    pub upsampler: Option<Conv>,
}

pub struct Encoder {
    pub conv_in: Conv,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv,
}

pub struct Decoder {
    pub conv_in: Conv,
    pub mid_block: MidBlock,
    /// Execution order (diffusers `up_blocks.{i}` = BFL `up.{levels − 1 − i}`).
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv,
}

/// Builds the tree with the checked loader, each key in the file's scheme.
struct Loader<'a> {
    l: TensorLoader<'a>,
    keys: VaeKeys,
}

impl Loader<'_> {
    fn key(&self, d: &str, b: &str) -> String {
        self.keys.key(d, b)
    }

    fn conv(&mut self, d: &str, b: &str, cout: usize, cin: usize, k: usize) -> Result<Conv> {
        let p = self.key(d, b);
        let shape = [cout, cin, k, k];
        Ok(Conv {
            w: self.l.float_weight(&format!("{p}.weight"), &[&shape], &shape)?,
            b: self.l.vector(&format!("{p}.bias"), cout)?,
        })
    }

    fn linear(&mut self, d: &str, b: &str, c: usize) -> Result<Linear> {
        let p = self.key(d, b);
        let w = self.l.float_weight(&format!("{p}.weight"), &[&[c, c], &[c, c, 1, 1]], &[c, c])?;
        Ok(Linear::new(w, self.l.vector(&format!("{p}.bias"), c)?))
    }

    fn norm(&mut self, d: &str, b: &str, c: usize) -> Result<GroupNorm> {
        let p = self.key(d, b);
        Ok(GroupNorm { w: self.l.vector(&format!("{p}.weight"), c)?, b: self.l.vector(&format!("{p}.bias"), c)? })
    }

    /// A resnet at diffusers prefix `d` / BFL prefix `b`.
    fn resnet(&mut self, d: &str, b: &str, cin: usize, cout: usize) -> Result<Resnet> {
        let s = |x: &str, y: &str| (format!("{d}.{x}"), format!("{b}.{y}"));
        let k = |x: &str| s(x, x);
        let (n1, c1, n2, c2, sc) = (k("norm1"), k("conv1"), k("norm2"), k("conv2"), s("conv_shortcut", "nin_shortcut"));
        Ok(Resnet {
            norm1: self.norm(&n1.0, &n1.1, cin)?,
            conv1: self.conv(&c1.0, &c1.1, cout, cin, 3)?,
            norm2: self.norm(&n2.0, &n2.1, cout)?,
            conv2: self.conv(&c2.0, &c2.1, cout, cout, 3)?,
            conv_shortcut: if cin != cout { Some(self.conv(&sc.0, &sc.1, cout, cin, 1)?) } else { None },
        })
    }

    fn mid(&mut self, part: &str, c: usize, attention: bool) -> Result<MidBlock> {
        let (d, b) = (format!("{part}.mid_block"), format!("{part}.mid"));
        let attention = if attention {
            let s = |x: &str, y: &str| (format!("{d}.attentions.0.{x}"), format!("{b}.attn_1.{y}"));
            let (n, q, k, v, o) =
                (s("group_norm", "norm"), s("to_q", "q"), s("to_k", "k"), s("to_v", "v"), s("to_out.0", "proj_out"));
            Some(Attention {
                group_norm: self.norm(&n.0, &n.1, c)?,
                to_q: self.linear(&q.0, &q.1, c)?,
                to_k: self.linear(&k.0, &k.1, c)?,
                to_v: self.linear(&v.0, &v.1, c)?,
                to_out: self.linear(&o.0, &o.1, c)?,
            })
        } else {
            None
        };
        Ok(MidBlock {
            resnet_0: self.resnet(&format!("{d}.resnets.0"), &format!("{b}.block_1"), c, c)?,
            attention,
            resnet_1: self.resnet(&format!("{d}.resnets.1"), &format!("{b}.block_2"), c, c)?,
        })
    }

    fn encoder(&mut self, c: &VaeConfig) -> Result<Encoder> {
        let boc = &c.block_out_channels;
        let n = boc.len();
        let conv_in = self.conv("encoder.conv_in", "encoder.conv_in", boc[0], c.in_channels, 3)?;
        let mut down_blocks = Vec::with_capacity(n);
        for (i, &out) in boc.iter().enumerate() {
            let mut cin = if i == 0 { boc[0] } else { boc[i - 1] };
            let mut resnets = Vec::with_capacity(c.layers_per_block);
            for j in 0..c.layers_per_block {
                resnets.push(self.resnet(
                    &format!("encoder.down_blocks.{i}.resnets.{j}"),
                    &format!("encoder.down.{i}.block.{j}"),
                    cin,
                    out,
                )?);
                cin = out;
            }
            let downsampler = if i + 1 < n {
                Some(self.conv(
                    &format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
                    &format!("encoder.down.{i}.downsample.conv"),
                    out,
                    out,
                    3,
                )?)
            } else {
                None
            };
            down_blocks.push(DownBlock { resnets, downsampler });
        }
        let top = c.mid_channels();
        Ok(Encoder {
            conv_in,
            down_blocks,
            mid_block: self.mid("encoder", top, c.mid_block_attention)?,
            conv_norm_out: self.norm("encoder.conv_norm_out", "encoder.norm_out", top)?,
            conv_out: self.conv("encoder.conv_out", "encoder.conv_out", 2 * c.latent_channels, top, 3)?,
        })
    }

    fn decoder(&mut self, c: &VaeConfig) -> Result<Decoder> {
        let rev: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
        let n = rev.len();
        let conv_in = self.conv("decoder.conv_in", "decoder.conv_in", rev[0], c.latent_channels, 3)?;
        let mid_block = self.mid("decoder", rev[0], c.mid_block_attention)?;
        let mut up_blocks = Vec::with_capacity(n);
        for (i, &out) in rev.iter().enumerate() {
            let level = n - 1 - i;
            let mut cin = if i == 0 { rev[0] } else { rev[i - 1] };
            let mut resnets = Vec::with_capacity(c.layers_per_block + 1);
            for j in 0..=c.layers_per_block {
                resnets.push(self.resnet(
                    &format!("decoder.up_blocks.{i}.resnets.{j}"),
                    &format!("decoder.up.{level}.block.{j}"),
                    cin,
                    out,
                )?);
                cin = out;
            }
            let upsampler = if i + 1 < n {
                Some(self.conv(
                    &format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                    &format!("decoder.up.{level}.upsample.conv"),
                    out,
                    out,
                    3,
                )?)
            } else {
                None
            };
            up_blocks.push(UpBlock { resnets, upsampler });
        }
        Ok(Decoder {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out: self.norm("decoder.conv_norm_out", "decoder.norm_out", rev[n - 1])?,
            conv_out: self.conv("decoder.conv_out", "decoder.conv_out", c.out_channels, rev[n - 1], 3)?,
        })
    }
}

/// Which halves to load (the encoder is only needed for image-conditioned sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaeParts {
    pub encoder: bool,
    pub decoder: bool,
}

impl VaeParts {
    pub const BOTH: VaeParts = VaeParts { encoder: true, decoder: true };
    pub const DECODER: VaeParts = VaeParts { encoder: false, decoder: true };
    pub const ENCODER: VaeParts = VaeParts { encoder: true, decoder: false };
}

/// Loads `parts` of the VAE `config` describes from `src` (parsed header `header`), in diffusers or
/// BFL names (detected). A missing tensor is `Error::MissingTensor`, one of another shape than the
/// config implies `Error::TensorShape`, both naming the tensor and the file.
pub fn load_vae(
    gpu: &Gpu,
    src: &mut dyn ByteSource,
    header: &WeightsHeader,
    config: &VaeConfig,
    parts: VaeParts,
) -> Result<(Option<Encoder>, Option<Decoder>)> {
    // A config built in code skipped `from_diffusers_json`'s caps; they bound the block lists.
    config.check_caps(&header.file)?;
    config.validate()?;
    let keys = VaeKeys::detect(header)?;
    let mut l = Loader { l: TensorLoader::new(gpu, src, header, "VAE weights", Missing::Tensor), keys };
    let encoder = if parts.encoder { Some(l.encoder(config)?) } else { None };
    let decoder = if parts.decoder { Some(l.decoder(config)?) } else { None };
    Ok((encoder, decoder))
}
