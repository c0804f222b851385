//! A cheap look at the latents while sampling: each latent pixel's 16 channels go through a fixed
//! 16→3 linear map plus bias, giving an RGB image at latent resolution (1/8 of the canvas) in
//! microseconds instead of a VAE decode. CPU only, on latents read back from the GPU.
//!
//! The factors are the published FLUX latent→RGB approximation of ComfyUI,
//! `comfy/latent_formats.py`, class `Flux`, `latent_rgb_factors` / `latent_rgb_factors_bias`
//! (https://github.com/comfyanonymous/ComfyUI/blob/040a3243468ecefd1f2802592d90458f1ce4d65f/comfy/latent_formats.py).
//! They apply to latents in the sampler's space (after `(z − shift)·scale`, BFL `AutoEncoder.encode`,
//! src/flux/modules/autoencoder.py @ 802fb47), which is what the sampler holds; the result is in about
//! [−1, 1] and is mapped to bytes as ComfyUI's `latent_preview.preview_to_image` does:
//! `uint8(clamp((x + 1)/2, 0, 1)·255)`.
//! The sharper preview during sampling is of the predicted clean latent `x − σ·v`.

use super::image::RgbImage;
use crate::error::{Error, Result};

/// Latent channels of the FLUX VAE.
pub const CHANNELS: usize = 16;

/// Row `c` is the (R, G, B) contribution of latent channel `c` (ComfyUI, see the module docs).
pub const FLUX_LATENT_RGB_FACTORS: [[f32; 3]; CHANNELS] = [
    [-0.0346, 0.0244, 0.0681],
    [0.0034, 0.0210, 0.0687],
    [0.0275, -0.0668, -0.0433],
    [-0.0174, 0.0160, 0.0617],
    [0.0859, 0.0721, 0.0329],
    [0.0004, 0.0383, 0.0115],
    [0.0405, 0.0861, 0.0915],
    [-0.0236, -0.0185, -0.0259],
    [-0.0245, 0.0250, 0.1180],
    [0.1008, 0.0755, -0.0421],
    [-0.0515, 0.0201, 0.0011],
    [0.0428, -0.0012, -0.0036],
    [0.0817, 0.0765, 0.0749],
    [-0.1264, -0.0522, -0.1103],
    [-0.0280, -0.0881, -0.0499],
    [-0.1262, -0.0982, -0.0778],
];

pub const FLUX_LATENT_RGB_BIAS: [f32; 3] = [-0.0329, -0.0718, -0.0851];

/// The linear map for one latent pixel's channels, before the byte mapping.
pub fn latent_pixel_rgb(channels: &[f32; CHANNELS]) -> [f32; 3] {
    let mut rgb = FLUX_LATENT_RGB_BIAS;
    for (v, f) in channels.iter().zip(FLUX_LATENT_RGB_FACTORS.iter()) {
        for k in 0..3 {
            rgb[k] += v * f[k];
        }
    }
    rgb
}

/// ComfyUI's byte mapping of a preview value in [−1, 1] (truncating, as its `.to(uint8)`).
pub fn preview_byte(x: f32) -> u8 {
    let t = ((x + 1.0) / 2.0).clamp(0.0, 1.0); // NaN clamps to NaN; `as u8` maps NaN to 0
    (t * 255.0) as u8
}

/// Preview of packed latents `[(h/2)(w/2), 64]` (diffusers `_pack_latents`,
/// src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c) for an `h × w` latent grid (`h = H/8`, `w = W/8`,
/// both even): pixel `(y, x)` reads channel `ch` from token
/// `(y/2)·(w/2) + x/2`, feature `ch·4 + (y%2)·2 + x%2`. The image is `w × h` (latent resolution).
pub fn latent_preview(packed: &[f32], h: usize, w: usize) -> Result<RgbImage> {
    if h == 0 || w == 0 || !h.is_multiple_of(2) || !w.is_multiple_of(2) {
        return Err(Error::InvalidArgument(format!(
            "latent_preview: the latent grid must have even, non-zero sides, got {h}×{w}"
        )));
    }
    let tokens = (h / 2) * (w / 2);
    let feat = 4 * CHANNELS;
    if packed.len() != tokens * feat {
        return Err(Error::ShapeMismatch {
            op: "latent_preview",
            expected: format!("[{tokens}, {feat}] for a {h}×{w} latent grid"),
            got: format!("{} values", packed.len()),
        });
    }
    let mut pixels = Vec::with_capacity(h * w * 3);
    let mut channels = [0f32; CHANNELS];
    for y in 0..h {
        for x in 0..w {
            let token = &packed[((y / 2) * (w / 2) + x / 2) * feat..][..feat];
            let sub = (y % 2) * 2 + x % 2;
            for (ch, c) in channels.iter_mut().enumerate() {
                *c = token[ch * 4 + sub];
            }
            pixels.extend(latent_pixel_rgb(&channels).map(preview_byte));
        }
    }
    Ok(RgbImage { width: w, height: h, pixels })
}
