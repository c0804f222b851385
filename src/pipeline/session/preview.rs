//! Previews during sampling: the tiny decoder (TAEF1) when one is loaded, else the linear map.

use super::super::generate::{to_rgb8, Event, Observer, RgbImage};
use super::super::preview::latent_preview;
use crate::clock::Stopwatch;
use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::kernels::pack::unpack;
use crate::model::taef1::{self, TinyDecoder};

/// The preview of packed latents after step `index`: through the preview decoder when one is
/// loaded (its time logged), else the linear map. A decoder that fails is dropped with a warning
/// and the linear map takes over: a preview is not worth the run.
pub(super) async fn preview_image(
    gpu: &Gpu,
    decoder: &mut Option<(String, TinyDecoder)>,
    packed: &Tensor,
    (lh, lw): (usize, usize),
    index: usize,
    obs: &mut dyn Observer,
) -> Result<RgbImage> {
    if let Some((file, dec)) = decoder.as_ref() {
        let t = Stopwatch::start();
        match decode_preview(gpu, dec, packed, lh, lw).await {
            Ok(image) => {
                obs.event(Event::Line(&format!("preview: step {} decoded by TAEF1 in {:.3}s", index + 1, t.secs())));
                return Ok(image);
            }
            Err(e) => {
                obs.event(Event::Warning(&format!(
                    "{} ({file}): {e}; previews use the linear map for the rest of this run",
                    taef1::MODEL
                )));
                *decoder = None;
            }
        }
    }
    latent_preview(&gpu.read_f32(packed).await?, lh, lw)
}

/// Packed latents `[(lh/2)(lw/2), 64]` → the tiny decoder's image at full resolution, as bytes.
async fn decode_preview(gpu: &Gpu, dec: &TinyDecoder, packed: &Tensor, lh: usize, lw: usize) -> Result<RgbImage> {
    let mut b = gpu.batch();
    let z = unpack(gpu, &mut b, packed, dec.config.latent_channels, lh, lw)?;
    let image = dec.decode(gpu, &mut b, &z)?;
    gpu.submit(b)?;
    let f = dec.config.upscale();
    to_rgb8(&gpu.read_f32(&image).await?, lh * f, lw * f)
}
