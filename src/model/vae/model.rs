//! The whole VAE (BFL `AutoEncoder`, src/flux/modules/autoencoder.py @ 802fb47): latent (de)normalisation,
//! encoder and decoder, batch 1, f32 activations `[C, H, W]`, images RGB in [−1, 1].
//!
//! Encoder and decoder are each split in two stages: the *latent stage* (the mid-block with its
//! global attention; decoder: with the denormalisation and `conv_in`, encoder: with `conv_norm_out`
//! and `conv_out`) runs on the whole latent, which is small (`mid_channels · h · w` floats: 64 MiB
//! for a 2048×1024 canvas); the *pixel stage* (decoder up-blocks, encoder `conv_in` + down-blocks)
//! grows with the square of the downsampling factor; it runs whole while its activations fit one
//! buffer (the kernels split them over storage bindings), and [`Vae::decode_tiled`] /
//! [`Vae::encode_tiled`] fall back to bands beyond that (module `tiled`).

use super::blocks::{conv, dims, down_block, mid_block, norm, up_block};
use super::config::VaeConfig;
use super::weights::{load_vae, Decoder, Encoder, VaeParts};
use crate::error::{Error, Result};
use crate::gpu::{Batch, Gpu, Tensor};
use crate::kernels::conv2d::Conv2d;
use crate::kernels::copy::slice_rows;
use crate::kernels::elementwise::affine;
use crate::kernels::shape_err;
use crate::weights::load::ByteSource;
use crate::weights::tensor_info::WeightsHeader;

pub struct Vae {
    pub config: VaeConfig,
    pub encoder: Option<Encoder>,
    pub decoder: Option<Decoder>,
}

impl Vae {
    /// Loads `parts` of the VAE from `header`/`src` (diffusers or BFL names, detected); `config` from
    /// diffusers' `vae/config.json` when given, else FLUX.1's (BFL `configs["flux-dev"].ae_params`,
    /// src/flux/util.py @ 802fb47).
    pub fn load(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        config: Option<VaeConfig>,
        parts: VaeParts,
    ) -> Result<Vae> {
        let config = config.unwrap_or_else(VaeConfig::flux1);
        let (encoder, decoder) = load_vae(gpu, src, header, &config, parts)?;
        Ok(Vae { config, encoder, decoder })
    }

    fn groups(&self) -> usize {
        self.config.norm_num_groups
    }

    pub(crate) fn decoder(&self) -> Result<&Decoder> {
        self.decoder.as_ref().ok_or_else(|| Error::InvalidArgument("VAE: loaded without its decoder (VaeParts)".into()))
    }

    fn encoder(&self) -> Result<&Encoder> {
        self.encoder.as_ref().ok_or_else(|| Error::InvalidArgument("VAE: loaded without its encoder (VaeParts)".into()))
    }

    /// Checks a `[C, H, W]` input of `channels` channels.
    fn input(&self, what: &'static str, x: &Tensor, channels: usize) -> Result<(usize, usize, usize)> {
        match dims(x) {
            Ok(d) if d.0 == channels && d.1 > 0 && d.2 > 0 => Ok(d),
            _ => Err(shape_err(what, format!("[{channels}, H, W] (F32)"), x.shape())),
        }
    }

    /// Decoder latent stage: `z / scaling + shift` (BFL `AutoEncoder.decode`,
    /// src/flux/modules/autoencoder.py @ 802fb47), `conv_in`, mid-block → `[mid, h, w]`.
    pub fn decode_latent_stage(&self, gpu: &Gpu, b: &mut Batch, z: &Tensor) -> Result<Tensor> {
        let d = self.decoder()?;
        self.input("vae decode", z, self.config.latent_channels)?;
        let c = &self.config;
        let x = affine(gpu, b, z, 1.0 / c.scaling_factor, c.shift_factor)?;
        let x = conv(gpu, b, &x, &d.conv_in, Conv2d::same(1), None)?;
        mid_block(gpu, b, &x, &d.mid_block, self.groups())
    }

    /// Decoder pixel stage: up-blocks, `silu(GN(·))`, `conv_out` → `[out, f·h, f·w]` (the rest of BFL
    /// `Decoder.forward`, src/flux/modules/autoencoder.py @ 802fb47).
    pub fn decode_pixel_stage(&self, gpu: &Gpu, b: &mut Batch, x: &Tensor) -> Result<Tensor> {
        let d = self.decoder()?;
        let mut x = x.clone();
        for u in &d.up_blocks {
            x = up_block(gpu, b, &x, u, self.groups())?;
            // Submit per level: the level's intermediates go back to the pool, so a whole-canvas
            // decode holds about one level's activations, not all of them (memory: module `tiled`).
            b.flush(gpu)?;
        }
        let x = norm(gpu, b, &x, &d.conv_norm_out, self.groups(), true)?;
        conv(gpu, b, &x, &d.conv_out, Conv2d::same(1), None)
    }

    /// A normalised latent `z` `[latent_channels, h, w]` (what the sampler produces) → image
    /// `[out_channels, f·h, f·w]` in [−1, 1] (f = 8 for FLUX), untiled: activations over the storage
    /// binding limit are split over bindings inside the kernels (conv2d, group_norm), so this works
    /// while every activation fits one buffer (`max_buffer_size`) and one GroupNorm group fits a
    /// binding; [`decode_tiled`](Self::decode_tiled) picks bands only beyond that.
    pub fn decode(&self, gpu: &Gpu, b: &mut Batch, z: &Tensor) -> Result<Tensor> {
        let x = self.decode_latent_stage(gpu, b, z)?;
        self.decode_pixel_stage(gpu, b, &x)
    }

    /// Encoder pixel stage: `conv_in` and the down-blocks, image `[in, H, W]` → `[mid, H/f, W/f]`
    /// (BFL `Encoder.forward` up to its mid-block, src/flux/modules/autoencoder.py @ 802fb47); tiled by
    /// [`encode_tiled`](Self::encode_tiled).
    pub fn encode_pixel_stage(&self, gpu: &Gpu, b: &mut Batch, image: &Tensor) -> Result<Tensor> {
        let e = self.encoder()?;
        self.input("vae encode", image, self.config.in_channels)?;
        let mut x = conv(gpu, b, image, &e.conv_in, Conv2d::same(1), None)?;
        for d in &e.down_blocks {
            x = down_block(gpu, b, &x, d, self.groups())?;
            b.flush(gpu)?; // as in decode_pixel_stage
        }
        Ok(x)
    }

    /// Encoder latent stage: mid-block (global attention), `silu(GN(·))`, `conv_out` → moments
    /// `[2·latent, h, w]` (the end of BFL `Encoder.forward`, src/flux/modules/autoencoder.py @ 802fb47).
    pub fn encode_latent_stage(&self, gpu: &Gpu, b: &mut Batch, x: &Tensor) -> Result<Tensor> {
        let e = self.encoder()?;
        let g = self.groups();
        let x = mid_block(gpu, b, x, &e.mid_block, g)?;
        let x = norm(gpu, b, &x, &e.conv_norm_out, g, true)?;
        conv(gpu, b, &x, &e.conv_out, Conv2d::same(1), None)
    }

    /// Image `[in_channels, H, W]` in [−1, 1] → moments `[2·latent, H/f, W/f]` (mean, then log-variance).
    pub fn encode_moments(&self, gpu: &Gpu, b: &mut Batch, image: &Tensor) -> Result<Tensor> {
        let x = self.encode_pixel_stage(gpu, b, image)?;
        self.encode_latent_stage(gpu, b, &x)
    }

    /// The first `latent` channels of moments `[2·latent, h, w]` (a contiguous slice).
    pub fn moments_mean(&self, gpu: &Gpu, b: &mut Batch, m: &Tensor) -> Result<Tensor> {
        let (c2, h, w) = dims(m)?;
        let l = c2 / 2;
        slice_rows(gpu, b, &m.reshape(&[c2, h * w])?, 0, l)?.reshape(&[l, h, w])
    }

    /// Mean `[latent, h, w]` → normalised latent `scaling · (mean − shift)` (BFL `AutoEncoder.encode`,
    /// src/flux/modules/autoencoder.py @ 802fb47).
    pub fn normalize(&self, gpu: &Gpu, b: &mut Batch, mean: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        affine(gpu, b, mean, c.scaling_factor, -c.shift_factor * c.scaling_factor)
    }

    /// The posterior's mean `[latent, h, w]`: the first half of the moments (diffusers
    /// `latent_dist.mode()`, src/diffusers/models/autoencoders/vae.py @ 58eb52c; BFL `sample_z=False`,
    /// src/flux/modules/autoencoder.py @ 802fb47).
    pub fn encode_mean(&self, gpu: &Gpu, b: &mut Batch, image: &Tensor) -> Result<Tensor> {
        let m = self.encode_moments(gpu, b, image)?;
        self.moments_mean(gpu, b, &m)
    }

    /// Image → normalised latent `scaling · (mean − shift)` (BFL `AutoEncoder.encode`,
    /// src/flux/modules/autoencoder.py @ 802fb47), what the sampler works on. Untiled;
    /// [`encode_tiled`](Self::encode_tiled) for images whose activations exceed a binding.
    pub fn encode(&self, gpu: &Gpu, b: &mut Batch, image: &Tensor) -> Result<Tensor> {
        let mean = self.encode_mean(gpu, b, image)?;
        self.normalize(gpu, b, &mean)
    }
}
