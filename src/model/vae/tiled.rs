//! Decoding and encoding large canvases: whole-canvas when the activations fit one buffer (the
//! kernels split them over storage bindings), else in horizontal bands with overlap and a linear blend
//! (issue 5: IC-LoRA canvases reach 2048×1024 and beyond; the mid-block attention alone is global over all
//! `H/8 · W/8` latent pixels, BFL `AttnBlock`, src/flux/modules/autoencoder.py @ 802fb47).
//!
//! # How memory scales
//!
//! For a latent of `h × w` (image `8h × 8w`), FLUX widths (128, 256, 512, 512):
//! * latent stage (denormalise, `conv_in`, mid-block with attention), run whole: `512·h·w` floats per
//!   activation (64 MiB at 2048×1024); the attention kernel adds only its `[h·w, 512]` output.
//! * pixel stage (up-blocks), the part that grows: the largest activation is the 256-channel output of
//!   the third level's upsampler, `256 · 8h · 8w` floats = **64 KiB per latent pixel** (1 GiB at 1024²,
//!   over any storage binding limit). [`pixel_stage_bytes_per_latent_pixel`] computes it for a config.
//! * whole canvas (the default, [`Vae::decode_tiled`] with `tile_rows: None`): the pixel stage runs
//!   on the whole latent whenever its largest activation (`64 KiB · h · w`) fits one buffer
//!   (`max_buffer_size`: 2 GiB on lavapipe, 1 GiB in Chromium) and one GroupNorm group of it (1/32)
//!   fits one storage binding. The kernels split tensors over the binding limit into runs of whole
//!   channels / groups bound as ranges (`kernels::conv2d`, `kernels::norm::group_norm`), so the
//!   result equals an unsplit decode: no seams. The pixel stage submits after each level, so the
//!   peak is about one level's activations: ~6 tensors of the level's size (input, norms, conv
//!   outputs, shortcut), i.e. ~6 · 64 KiB per latent pixel at the last level (6 GiB at 1024²).
//! * banded (fallback, or `tile_rows: Some(r)`): beyond `max_buffer_size`, bands of `r` latent rows
//!   hold `64 KiB · r · w` in their largest tensor, `r` the most that fit one buffer. Each band is
//!   submitted on its own, so its activations return to the pool before the next band; the peak is
//!   the latent stage + one band's level activations + the output image (`3 · 64 · h · w` floats).
//! * encoder: the pixel stage (`conv_in`, down-blocks) peaks at the 128-channel full-resolution
//!   activations, **32 KiB per latent pixel** ([`encoder_bytes_per_latent_pixel`]; 512 MiB for a 1024²
//!   image); it runs whole under the same conditions, else in bands of image rows (multiples of 8),
//!   and the latent stage runs whole.
//!
//! # Seams
//!
//! A whole-canvas decode has none. In the banded fallback:
//! the mid-block attention is global, so it runs untiled in the latent stage: every band sees the
//! same attention output. What remains local per band is (a) the zero padding of the 3×3 convs at the
//! band's cut edges and (b) the GroupNorm statistics, computed over the band instead of the canvas.
//! Bands overlap by `overlap` latent rows and are cross-faded linearly over those `8·overlap` pixel
//! rows, which hides (a) (its reach decays within a few latent rows) and smooths the tone steps of (b).
//! This is what diffusers' `enable_tiling()` does; the difference to an untiled decode is measured in
//! `tests/model_vae.rs`. Exact banding would need canvas-wide GroupNorm statistics, i.e. holding
//! every band's activations at once — which is the whole-canvas decode above.

use super::blocks::dims;
use super::model::Vae;
use crate::error::{Error, Result};
use crate::gpu::{Batch, Gpu, Tensor};
use crate::kernels::copy::{copy_into, Block};
use crate::kernels::elementwise::{add, mul};

/// Band geometry for [`Vae::decode_tiled`], in latent rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileOptions {
    /// Latent rows per band; `None`: the most that fit the device's storage binding limit.
    pub tile_rows: Option<usize>,
    /// Latent rows shared by neighbouring bands (cross-faded); at most half the band height.
    pub overlap: usize,
}

impl Default for TileOptions {
    /// Automatic band height, 4 latent rows (32 pixels) of overlap.
    fn default() -> TileOptions {
        TileOptions { tile_rows: None, overlap: 4 }
    }
}

/// Bytes per latent pixel of the largest decoder pixel-stage activation (see the module docs).
pub fn pixel_stage_bytes_per_latent_pixel(vae: &Vae) -> usize {
    let c = &vae.config;
    let rev: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
    let (mut f, mut worst, mut prev) = (1usize, 0usize, rev.first().copied().unwrap_or(0));
    for (i, &ch) in rev.iter().enumerate() {
        worst = worst.max(prev.max(ch) * f * f);
        if i + 1 < rev.len() {
            f *= 2;
            worst = worst.max(ch * f * f);
        }
        prev = ch;
    }
    worst.max(c.out_channels * f * f) * 4
}

/// Bytes per latent pixel of the largest encoder pixel-stage activation: level i works at `f/2^i`
/// pixels per latent pixel on `max(cin, cout)` channels (FLUX: 128 · 8² floats = 32 KiB).
pub fn encoder_bytes_per_latent_pixel(vae: &Vae) -> usize {
    let c = &vae.config;
    let f = c.downsampling();
    let mut worst = c.in_channels.max(c.block_out_channels.first().copied().unwrap_or(0)) * f * f;
    let mut prev = c.block_out_channels.first().copied().unwrap_or(0);
    for (i, &ch) in c.block_out_channels.iter().enumerate() {
        let s = f >> i;
        worst = worst.max(prev.max(ch) * s * s);
        prev = ch;
    }
    worst * 4
}

/// Bands `[start, end)` of `h` rows, `tile` high, overlapping by `overlap`; the last band ends at `h`
/// and is always taller than the overlap.
pub fn plan_bands(h: usize, tile: usize, overlap: usize) -> Vec<(usize, usize)> {
    let stride = tile.saturating_sub(overlap).max(1);
    let mut bands = Vec::new();
    let mut s = 0;
    loop {
        let e = (s + tile).min(h);
        bands.push((s, e));
        if e >= h {
            return bands;
        }
        s += stride;
    }
}

/// `[rows, cols]` block of 2-D `t` from column `col0` → new tensor `[rows, cols]`.
fn cut(gpu: &Gpu, b: &mut Batch, t: &Tensor, col0: usize, cols: usize) -> Result<Tensor> {
    let rows = t.shape()[0];
    let out = gpu.empty(&[rows, cols], t.dtype())?;
    copy_into(gpu, b, &out, (0, 0), t, Block { row0: 0, col0, rows, cols })?;
    Ok(out)
}

/// `(tile, overlap)` in latent rows: the caller's, checked, or (automatic) the most latent rows whose
/// largest activation (`bytes_per_row` per latent row) fits one buffer (`max_buffer_size`) and whose
/// largest GroupNorm group (a `1/groups` share of it) fits one storage binding; the kernels split
/// everything else over bindings. A result ≥ the latent height means one band: the whole canvas.
fn band_rows(gpu: &Gpu, opts: &TileOptions, bytes_per_row: usize, groups: usize, what: &str) -> Result<(usize, usize)> {
    let info = gpu.info();
    let room = info.max_storage_binding.saturating_sub(info.storage_offset_alignment as u64) as usize;
    let bpr = bytes_per_row.max(1);
    let fit = (info.max_buffer_size as usize / bpr).min(room.saturating_mul(groups.max(1)) / bpr);
    match opts.tile_rows {
        // A middle band cross-fades at both ends; the two fades must not intersect.
        Some(t) if t >= 2 * opts.overlap && t > 0 => Ok((t, opts.overlap)),
        Some(t) => Err(Error::InvalidArgument(format!(
            "VAE tiling: bands of {t} latent rows must be at least twice the overlap ({}) and non-empty",
            opts.overlap
        ))),
        None if fit == 0 => Err(Error::LimitExceeded {
            what: format!("VAE {what}: one latent row of the pixel stage in one buffer (bytes)"),
            needed: bytes_per_row as u64,
            available: info.max_buffer_size.min(room as u64 * groups.max(1) as u64),
        }),
        None => Ok((fit, opts.overlap.min(fit / 2))),
    }
}

/// Runs `stage` on horizontal bands of `x` `[C, a·h, W]` and cross-fades the results into one
/// `[C', b·h, W']`: band `[s, e)` (in units of `h`, planned by [`plan_bands`]) is input rows
/// `[a·s, a·e)` and output rows `[b·s, b·e)`; neighbours share `b·overlap` output rows, weighted
/// linearly. Decoder: a = 1 (latent rows in), b = f (pixel rows out); encoder the reverse. Every band
/// is its own batch, submitted before the next, so its activations go back to the pool.
fn banded(
    gpu: &Gpu,
    x: &Tensor,
    (a, b_rows): (usize, usize),
    (tile, overlap): (usize, usize),
    stage: &dyn Fn(&Gpu, &mut Batch, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (c, hin, w) = dims(x)?;
    let h = hin / a.max(1);
    let x2 = x.reshape(&[c, hin * w])?;
    let o = b_rows * overlap;
    let bands = plan_bands(h, tile, overlap);
    let mut out: Option<(Tensor, usize, usize)> = None; // (output [C', b·h·W'], C', W')
    let mut fades: Option<(Tensor, Tensor)> = None; // weights of the upper and lower band over o rows
    let mut carry: Option<Tensor> = None;
    for (i, &(s, e)) in bands.iter().enumerate() {
        let last = i + 1 == bands.len();
        let mut bt = gpu.batch();
        let band = cut(gpu, &mut bt, &x2, a * s * w, a * (e - s) * w)?.reshape(&[c, a * (e - s), w])?;
        let t = stage(gpu, &mut bt, &band)?;
        let (oc, hb, wp) = dims(&t)?;
        if hb != b_rows * (e - s) {
            return Err(Error::InvalidArgument(format!(
                "VAE tiling: a band of {} rows gave {hb}, not {}",
                a * (e - s),
                b_rows * (e - s)
            )));
        }
        let (out_t, _, _) = match &out {
            Some(o) => o,
            None => out.insert((gpu.empty(&[oc, b_rows * h * wp], t.dtype())?, oc, wp)),
        };
        if fades.is_none() && o > 0 {
            // The lower band's weight ramps (j + ½)/o over the shared rows; the upper's is 1 − that.
            let ramp: Vec<f32> = (0..o * wp).map(|k| ((k / wp) as f32 + 0.5) / o as f32).collect();
            let inv: Vec<f32> = ramp.iter().map(|r| 1.0 - r).collect();
            fades = Some((gpu.upload_f32(&[o * wp], &inv)?, gpu.upload_f32(&[o * wp], &ramp)?));
        }
        let t = t.reshape(&[oc, hb * wp])?;
        let top = if i > 0 { o } else { 0 };
        let bottom = if last { 0 } else { o };
        if let (Some(prev), Some((_, w_in))) = (carry.take(), &fades) {
            let head = cut(gpu, &mut bt, &t, 0, o * wp)?;
            let mine = mul(gpu, &mut bt, &head, w_in)?;
            let blended = add(gpu, &mut bt, &prev, &mine)?;
            copy_into(gpu, &mut bt, out_t, (0, b_rows * s * wp), &blended, Block::all(&blended)?)?;
        }
        // tile ≥ 2·overlap and the last band is taller than the overlap: no underflow.
        let own = Block { row0: 0, col0: top * wp, rows: oc, cols: hb.saturating_sub(top + bottom) * wp };
        copy_into(gpu, &mut bt, out_t, (0, (b_rows * s + top) * wp), &t, own)?;
        if let (false, Some((w_out, _))) = (last, &fades) {
            let tail = cut(gpu, &mut bt, &t, (hb - o) * wp, o * wp)?;
            carry = Some(mul(gpu, &mut bt, &tail, w_out)?);
        }
        gpu.submit(bt)?;
    }
    let (t, oc, wp) = out.ok_or_else(|| Error::InvalidArgument("VAE tiling: nothing to tile".into()))?;
    t.reshape(&[oc, b_rows * h, wp])
}

impl Vae {
    /// Like [`decode`](Vae::decode) for canvases of any size: the latent stage runs whole, the pixel
    /// stage in horizontal bands of `opts.tile_rows` latent rows overlapping by `opts.overlap`, blended
    /// linearly (see the module docs for memory and seams). Submits its own batches (one for the
    /// latent stage, one per band) so that each band's memory is released before the next; the result
    /// is ready for readback. With one band (the canvas fits) it equals the untiled decode.
    pub fn decode_tiled(&self, gpu: &Gpu, z: &Tensor, opts: &TileOptions) -> Result<Tensor> {
        let mut b = gpu.batch();
        let m = self.decode_latent_stage(gpu, &mut b, z)?;
        gpu.submit(b)?;
        let (_, h, w) = dims(&m)?;
        let (tile, overlap) =
            band_rows(gpu, opts, pixel_stage_bytes_per_latent_pixel(self) * w, self.config.norm_num_groups, "decode")?;
        let stage = |g: &Gpu, b: &mut Batch, x: &Tensor| self.decode_pixel_stage(g, b, x);
        if tile >= h {
            let mut b = gpu.batch();
            let y = stage(gpu, &mut b, &m)?;
            gpu.submit(b)?;
            return Ok(y);
        }
        banded(gpu, &m, (1, self.config.downsampling()), (tile, overlap), &stage)
    }

    /// Like [`encode`](Vae::encode) for images of any size (sides multiples of the downsampling
    /// factor, 8): the pixel stage (`conv_in`, down-blocks) runs in bands of `opts.tile_rows` latent
    /// rows (8× as many image rows) whose outputs are cross-faded over `opts.overlap` latent rows,
    /// then the latent stage (mid-block with its global attention, `conv_out`) on the whole latent.
    /// Returns the normalised latent; the same caveats as for decoding apply (module docs).
    pub fn encode_tiled(&self, gpu: &Gpu, image: &Tensor, opts: &TileOptions) -> Result<Tensor> {
        let f = self.config.downsampling();
        let (_, hi, wi) = dims(image)?;
        if !hi.is_multiple_of(f) || !wi.is_multiple_of(f) {
            return Err(Error::InvalidArgument(format!(
                "VAE tiled encode: image {hi}×{wi} must have sides that are multiples of {f}"
            )));
        }
        let (h, w) = (hi / f, wi / f);
        let (tile, overlap) =
            band_rows(gpu, opts, encoder_bytes_per_latent_pixel(self) * w, self.config.norm_num_groups, "encode")?;
        let stage = |g: &Gpu, b: &mut Batch, x: &Tensor| self.encode_pixel_stage(g, b, x);
        let features = if tile >= h {
            let mut b = gpu.batch();
            let y = stage(gpu, &mut b, image)?;
            gpu.submit(b)?;
            y
        } else {
            banded(gpu, image, (f, 1), (tile, overlap), &stage)?
        };
        let mut b = gpu.batch();
        let m = self.encode_latent_stage(gpu, &mut b, &features)?;
        let mean = self.moments_mean(gpu, &mut b, &m)?;
        let z = self.normalize(gpu, &mut b, &mean)?;
        gpu.submit(b)?;
        Ok(z)
    }
}
