//! TAEF1, the tiny autoencoder for FLUX latents (`madebyollin/taef1`, diffusers `AutoencoderTiny`):
//! its decoder only, for a live preview that looks like the result at full resolution, for a
//! small fraction of a step (measured in BENCHMARKS.md) instead of the 16→3 linear map of
//! `pipeline::preview`.
//!
//! The decoder, as diffusers' `DecoderTiny` (`src/diffusers/models/autoencoders/vae.py` at
//! huggingface/diffusers@9578d7e80409e05b031ba5ff664242744fb528f4) runs it, one width `C`
//! everywhere (TAEF1: 64, levels of 3, 3, 3, 1 blocks):
//!
//! ```text
//! x = 3·tanh(z / 3)                                   (soft clamp of the latent)
//! x = ReLU(conv3×3(x))                                latent channels → C
//! per level: x = Block(x) × blocks[level]
//!            then, except after the last level: x = conv3×3(nearest×2(x)), no bias
//! x = conv3×3(x)                                      C → 3, with bias
//! image = 2·x − 1                                     [0, 1] → diffusers' [−1, 1]
//! Block(x) = ReLU(conv(ReLU(conv(ReLU(conv(x))))) + x)   3×3 convs with bias
//! ```
//!
//! Input: latents in the sampler's space. diffusers' `FluxPipeline` divides by the autoencoder's
//! `scaling_factor` and adds its `shift_factor` before decoding, and TAEF1's `config.json` sets
//! them to 1.0 and 0.0, so TAEF1 decodes exactly what the sampler holds.
//!
//! Weights: diffusers names (`decoder.layers.{i}.…`, i over the `nn.Sequential` above: ReLU and
//! Upsample take an index but have no weights) or the original `taef1_decoder` file's
//! (`{i + 1}.…`: its Sequential starts with the clamp). Stored F16 stays F16; other float
//! formats become F32. Each ReLU and the block's residual add are fused into the convolutions.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::gpu::{Batch, Gpu, Tensor};
use crate::kernels::conv2d::{conv2d, Conv2d};
use crate::kernels::elementwise::{activation, affine, Activation};
use crate::weights::load::ByteSource;
use crate::weights::loader::{Missing, TensorLoader};
use crate::weights::tensor_info::WeightsHeader;

/// Names the model in errors and progress lines.
pub const MODEL: &str = "TAEF1 preview decoder";

/// The decoder's shape; [`TinyDecoderConfig::taef1`] unless a diffusers `config.json` says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TinyDecoderConfig {
    pub latent_channels: usize,
    /// The one width of every level (diffusers `decoder_block_out_channels`, all equal).
    pub channels: usize,
    /// Blocks per level, lowest resolution first (diffusers `num_decoder_blocks`).
    pub blocks: Vec<usize>,
    pub out_channels: usize,
}

impl TinyDecoderConfig {
    /// `madebyollin/taef1`'s `config.json`.
    pub fn taef1() -> TinyDecoderConfig {
        TinyDecoderConfig { latent_channels: 16, channels: 64, blocks: vec![3, 3, 3, 1], out_channels: 3 }
    }

    /// Pixels per latent pixel along each side: 2^(levels − 1) (TAEF1: 8, as the FLUX VAE).
    pub fn upscale(&self) -> usize {
        1 << self.blocks.len().saturating_sub(1)
    }

    /// From diffusers' `AutoencoderTiny` `config.json` (`file` names it in errors); fields it leaves
    /// out keep TAEF1's values. Refuses what this decoder does not implement (another activation or
    /// upsampling, levels of different widths) and counts over `crate::limits`.
    pub fn from_diffusers_json(file: &str, bytes: &[u8]) -> Result<TinyDecoderConfig> {
        let bad = |what: String| Error::InvalidArgument(format!("{MODEL} config ({file}): {what}"));
        let j: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let get = |key: &str| j.get(key).filter(|v| !v.is_null());
        let count = |key: &str, default: usize| -> Result<usize> {
            get(key)
                .map_or(Ok(default), |v| v.as_u64().map(|n| n as usize).ok_or_else(|| bad(format!("`{key}` is {v}"))))
        };
        let list = |key: &str| -> Result<Option<Vec<usize>>> {
            let Some(v) = get(key) else { return Ok(None) };
            let items = v.as_array().ok_or_else(|| bad(format!("`{key}` is {v}, not a list")))?;
            crate::limits::VAE_LEVELS.check_usize(file, items.len())?;
            items
                .iter()
                .map(|x| x.as_u64().map(|n| n as usize).ok_or_else(|| bad(format!("`{key}` has {x}"))))
                .collect::<Result<Vec<_>>>()
                .map(Some)
        };
        for (key, want) in [("act_fn", "relu"), ("upsample_fn", "nearest")] {
            if let Some(v) = get(key).filter(|v| v.as_str() != Some(want)) {
                return Err(bad(format!("`{key}` is {v}; this decoder implements only \"{want}\"")));
            }
        }
        if let Some(v) = get("upsampling_scaling_factor").filter(|v| v.as_u64() != Some(2)) {
            return Err(bad(format!("`upsampling_scaling_factor` is {v}; this decoder implements only 2")));
        }
        let d = TinyDecoderConfig::taef1();
        let widths = list("decoder_block_out_channels")?.unwrap_or_else(|| vec![d.channels; d.blocks.len()]);
        let blocks = list("num_decoder_blocks")?.unwrap_or(d.blocks);
        let channels = widths.first().copied().unwrap_or(0);
        if widths.iter().any(|&w| w != channels) || widths.len() != blocks.len() {
            return Err(bad(format!(
                "`decoder_block_out_channels` {widths:?} with `num_decoder_blocks` {blocks:?}: this decoder needs one width per level, all equal (as diffusers' DecoderTiny)"
            )));
        }
        let c = TinyDecoderConfig {
            latent_channels: count("latent_channels", d.latent_channels)?,
            channels,
            blocks,
            out_channels: count("out_channels", d.out_channels)?,
        };
        c.check(file)?;
        Ok(c)
    }

    /// Every count against `crate::limits`, and a shape this decoder can run.
    fn check(&self, file: &str) -> Result<()> {
        use crate::limits::{VAE_LAYERS, VAE_LEVELS, VAE_WIDTH};
        VAE_LEVELS.check_usize(file, self.blocks.len())?;
        self.blocks.iter().try_for_each(|&n| VAE_LAYERS.check_usize(file, n))?;
        [self.latent_channels, self.channels, self.out_channels]
            .iter()
            .try_for_each(|&w| VAE_WIDTH.check_usize(file, w))?;
        if self.blocks.is_empty() || self.latent_channels == 0 || self.channels == 0 || self.out_channels == 0 {
            return Err(Error::InvalidArgument(format!(
                "{MODEL} config ({file}): a level and non-zero channel counts are needed, got {self:?}"
            )));
        }
        Ok(())
    }
}

/// A 3×3 convolution: `w` `[O, I, 3, 3]` (F32 or F16), `b` F32 `[O]` (zeros where the layer has none).
struct Conv {
    w: Tensor,
    b: Tensor,
}

/// `AutoencoderTinyBlock`: three 3×3 convs, identity skip (input and output widths are equal).
struct Block {
    convs: [Conv; 3],
}

/// One level: its blocks, then (all levels but the last) nearest ×2 fused into a bias-less conv.
struct Level {
    blocks: Vec<Block>,
    upsample: Option<Conv>,
}

pub struct TinyDecoder {
    pub config: TinyDecoderConfig,
    conv_in: Conv,
    levels: Vec<Level>,
    conv_out: Conv,
}

/// The two key schemes: diffusers `decoder.layers.{i}` or the original file's `{i + 1}`.
fn layer_prefix(header: &WeightsHeader) -> Result<fn(usize) -> String> {
    fn diffusers(i: usize) -> String {
        format!("decoder.layers.{i}")
    }
    fn original(i: usize) -> String {
        format!("{}", i + 1)
    }
    for scheme in [diffusers as fn(usize) -> String, original] {
        if header.tensor(&format!("{}.weight", scheme(0))).is_some() {
            return Ok(scheme);
        }
    }
    Err(Error::MissingModelTensor {
        model: MODEL,
        file: header.file.clone(),
        name: "decoder.layers.0.weight` (diffusers) or `1.weight` (taef1_decoder)".into(),
    })
}

impl TinyDecoder {
    /// Loads the decoder from `header`/`src`; `config` from a diffusers `config.json` when given,
    /// else TAEF1's. A missing tensor or one of another shape is a typed error naming it.
    pub fn load(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        config: Option<TinyDecoderConfig>,
    ) -> Result<TinyDecoder> {
        let config = config.unwrap_or_else(TinyDecoderConfig::taef1);
        config.check(&header.file)?;
        let prefix = layer_prefix(header)?;
        let mut l = TensorLoader::new(gpu, src, header, MODEL, Missing::ModelTensor);
        let c = config.channels;
        let zeros = gpu.upload_f32(&[c], &vec![0.0; c])?;
        let mut conv = |name: String, cout: usize, cin: usize, bias: bool| -> Result<Conv> {
            let shape = [cout, cin, 3, 3];
            let w = l.float_weight(&format!("{name}.weight"), &[&shape], &shape)?;
            let b = if bias { l.vector(&format!("{name}.bias"), cout)? } else { zeros.clone() };
            Ok(Conv { w, b })
        };
        // Layer indices of diffusers' nn.Sequential: conv, ReLU, then per level its blocks,
        // Upsample (not after the last level) and a conv.
        let conv_in = conv(prefix(0), c, config.latent_channels, true)?;
        let mut i = 2;
        let mut levels = Vec::with_capacity(config.blocks.len());
        for (level, &n) in config.blocks.iter().enumerate() {
            let mut blocks = Vec::with_capacity(n);
            for _ in 0..n {
                let p = prefix(i);
                let k = |j: usize| format!("{p}.conv.{j}");
                blocks
                    .push(Block { convs: [conv(k(0), c, c, true)?, conv(k(2), c, c, true)?, conv(k(4), c, c, true)?] });
                i += 1;
            }
            if level + 1 == config.blocks.len() {
                levels.push(Level { blocks, upsample: None });
            } else {
                levels.push(Level { blocks, upsample: Some(conv(prefix(i + 1), c, c, false)?) });
                i += 2;
            }
        }
        let conv_out = conv(prefix(i), config.out_channels, c, true)?;
        Ok(TinyDecoder { config, conv_in, levels, conv_out })
    }

    /// Random weights of `config`'s shape (F16, He-scaled), for benchmarks.
    pub fn random(gpu: &Gpu, config: TinyDecoderConfig, seed: u64) -> Result<TinyDecoder> {
        let mut rng = crate::reference::random::Rng::new(seed);
        let c = config.channels;
        let mut conv = |cout: usize, cin: usize| -> Result<Conv> {
            let s = (2.0 / (cin * 9) as f32).sqrt();
            let w = gpu.upload_half(&[cout, cin, 3, 3], &rng.vec(cout * cin * 9, -s, s), crate::gpu::DType::F16)?;
            Ok(Conv { w, b: gpu.upload_f32(&[cout], &rng.vec(cout, -0.05, 0.05))? })
        };
        let conv_in = conv(c, config.latent_channels)?;
        let mut levels = Vec::new();
        for (level, &n) in config.blocks.iter().enumerate() {
            let blocks = (0..n)
                .map(|_| Ok(Block { convs: [conv(c, c)?, conv(c, c)?, conv(c, c)?] }))
                .collect::<Result<Vec<_>>>()?;
            let upsample = if level + 1 < config.blocks.len() { Some(conv(c, c)?) } else { None };
            levels.push(Level { blocks, upsample });
        }
        let conv_out = conv(config.out_channels, c)?;
        Ok(TinyDecoder { config, conv_in, levels, conv_out })
    }

    /// FLOPs of one decode of an `h × w` latent (`2·O·I·9` per output pixel of each conv).
    pub fn flops(&self, h: usize, w: usize) -> f64 {
        let c = &self.config;
        let conv = |o: usize, i: usize, pixels: usize| 2.0 * (o * i * 9 * pixels) as f64;
        let mut pixels = h * w;
        let mut total = conv(c.channels, c.latent_channels, pixels);
        for (level, &n) in c.blocks.iter().enumerate() {
            total += 3.0 * n as f64 * conv(c.channels, c.channels, pixels);
            if level + 1 < c.blocks.len() {
                pixels *= 4;
                total += conv(c.channels, c.channels, pixels);
            }
        }
        total + conv(c.out_channels, c.channels, pixels)
    }

    /// A latent `[latent_channels, h, w]` in the sampler's space → image `[out_channels, f·h, f·w]`
    /// in about [−1, 1] (f = [`TinyDecoderConfig::upscale`]). Each level is submitted on its own, so
    /// its activations return to the pool before the next, four times larger, level.
    pub fn decode(&self, gpu: &Gpu, b: &mut Batch, z: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        match *z.shape() {
            [ch, h, w] if ch == c.latent_channels && h > 0 && w > 0 => {}
            _ => {
                return Err(crate::kernels::shape_err(
                    "taef1 decode",
                    format!("[{}, h, w] (F32)", c.latent_channels),
                    z.shape(),
                ))
            }
        }
        let x = affine(gpu, b, z, 1.0 / 3.0, 0.0)?;
        let x = activation(gpu, b, &x, Activation::Tanh)?;
        let x = affine(gpu, b, &x, 3.0, 0.0)?;
        let same_relu = Conv2d::same(1).then_relu();
        let mut x = conv2d(gpu, b, &x, &self.conv_in.w, &self.conv_in.b, same_relu, None)?;
        for level in &self.levels {
            for block in &level.blocks {
                let [c0, c1, c2] = &block.convs;
                let h = conv2d(gpu, b, &x, &c0.w, &c0.b, same_relu, None)?;
                let h = conv2d(gpu, b, &h, &c1.w, &c1.b, same_relu, None)?;
                x = conv2d(gpu, b, &h, &c2.w, &c2.b, same_relu, Some(&x))?;
            }
            if let Some(up) = &level.upsample {
                x = conv2d(gpu, b, &x, &up.w, &up.b, Conv2d::UPSAMPLE, None)?;
            }
            b.flush(gpu)?;
        }
        let x = conv2d(gpu, b, &x, &self.conv_out.w, &self.conv_out.b, Conv2d::same(1), None)?;
        affine(gpu, b, &x, 2.0, -1.0)
    }
}
