//! IC-LoRA panel layouts: a canvas is one image cut into an equal grid of panels, numbered row by row from 0.
//! Panels must be whole multiples of 16 px so that each
//! panel owns whole packed latent tokens (2×2 patches of the 1/8-resolution latent, diffusers
//! `FluxPipeline._pack_latents`, src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c) — the conditioning
//! replaces latents token by token.
//!
//! Fitting a user image into a panel ([`fit`]): center-crop to the panel's aspect ratio, then resize
//! by *area averaging* (each output pixel is the coverage-weighted mean of the source pixels under
//! it, like OpenCV's `INTER_AREA`). Reference images are usually larger than panels, and area
//! averaging is the downscale that does not alias; when enlarging it reproduces the source pixels
//! with blended edges (no ringing, slightly blocky).

use super::image::RgbImage;
use crate::error::{Error, Result};

/// Side of one packed latent token in pixels (VAE factor 8 × 2×2 patch).
pub const PANEL_ALIGN: usize = 16;

/// An equal grid of `rows × cols` panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub rows: usize,
    pub cols: usize,
}

/// A rectangle in pixels: top-left `(x, y)`, size `w × h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

impl Rect {
    /// The same rectangle in packed latent tokens (`PANEL_ALIGN` px each); exact for panels.
    pub fn tokens(&self) -> Rect {
        Rect { x: self.x / PANEL_ALIGN, y: self.y / PANEL_ALIGN, w: self.w / PANEL_ALIGN, h: self.h / PANEL_ALIGN }
    }
}

impl Layout {
    pub fn new(rows: usize, cols: usize) -> Layout {
        Layout { rows, cols }
    }

    /// Number of panels.
    pub fn count(&self) -> usize {
        self.rows * self.cols
    }

    /// The panels of a `width × height` canvas, row by row. Errors (`PanelGrid`) when the grid is
    /// empty or its panels are not whole multiples of 16 px (e.g. 3 columns on 1024 px).
    pub fn panels(&self, width: usize, height: usize) -> Result<Vec<Rect>> {
        let err = |why: String| Error::PanelGrid { rows: self.rows, cols: self.cols, width, height, why };
        if self.rows == 0 || self.cols == 0 {
            return Err(err("the grid needs at least one row and one column".into()));
        }
        if !width.is_multiple_of(self.cols) || !height.is_multiple_of(self.rows) {
            return Err(err(format!("the canvas does not split evenly; use a width that is a multiple of {} and a height that is a multiple of {}", self.cols * PANEL_ALIGN, self.rows * PANEL_ALIGN)));
        }
        let (w, h) = (width / self.cols, height / self.rows);
        if w == 0 || h == 0 || !w.is_multiple_of(PANEL_ALIGN) || !h.is_multiple_of(PANEL_ALIGN) {
            return Err(err(format!(
                "panels would be {w}×{h} px, but must be non-empty multiples of {PANEL_ALIGN} px (whole latent tokens); use a width that is a multiple of {} and a height that is a multiple of {}",
                self.cols * PANEL_ALIGN,
                self.rows * PANEL_ALIGN
            )));
        }
        Ok((0..self.count()).map(|i| Rect { x: (i % self.cols) * w, y: (i / self.cols) * h, w, h }).collect())
    }
}

fn check_inside(op: &'static str, img: &RgbImage, r: &Rect) -> Result<()> {
    img.check(op)?;
    if r.x + r.w > img.width || r.y + r.h > img.height {
        return Err(Error::ShapeMismatch {
            op,
            expected: format!("a rectangle inside {}×{}", img.width, img.height),
            got: format!("{r:?}"),
        });
    }
    Ok(())
}

/// The pixels of `r` as their own image.
pub fn cut(img: &RgbImage, r: &Rect) -> Result<RgbImage> {
    check_inside("panels::cut", img, r)?;
    let mut pixels = Vec::with_capacity(r.w * r.h * 3);
    for y in r.y..r.y + r.h {
        let start = (y * img.width + r.x) * 3;
        pixels.extend_from_slice(&img.pixels[start..start + r.w * 3]);
    }
    Ok(RgbImage { width: r.w, height: r.h, pixels })
}

/// Writes `panel` (exactly `r.w × r.h`) into `canvas` at `r`.
pub fn paste(canvas: &mut RgbImage, r: &Rect, panel: &RgbImage) -> Result<()> {
    check_inside("panels::paste", canvas, r)?;
    panel.check("panels::paste")?;
    if (panel.width, panel.height) != (r.w, r.h) {
        return Err(Error::ShapeMismatch {
            op: "panels::paste",
            expected: format!("a {}×{} panel", r.w, r.h),
            got: format!("{}×{}", panel.width, panel.height),
        });
    }
    for row in 0..r.h {
        let dst = ((r.y + row) * canvas.width + r.x) * 3;
        canvas.pixels[dst..dst + r.w * 3].copy_from_slice(&panel.pixels[row * r.w * 3..(row + 1) * r.w * 3]);
    }
    Ok(())
}

/// Area-averaging weights along one axis: output pixel `i` covers the source interval
/// `[start + i·step, start + (i+1)·step)` of `len` source pixels; each entry is `(source index, coverage / step)`.
fn area_weights(start: f64, extent: f64, out: usize, len: usize) -> Vec<Vec<(usize, f64)>> {
    let step = extent / out as f64;
    (0..out)
        .map(|i| {
            let (a, b) = (start + i as f64 * step, start + (i + 1) as f64 * step);
            let mut w = Vec::new();
            let mut j = a.floor() as usize;
            while (j as f64) < b && j < len {
                let cover = (b.min(j as f64 + 1.0) - a.max(j as f64)).max(0.0);
                if cover > 0.0 {
                    w.push((j, cover / step));
                }
                j += 1;
            }
            w
        })
        .collect()
}

/// `img` center-cropped to the aspect ratio of `width × height`, then resized to it by area
/// averaging (module docs); rounding to the nearest 8-bit value. An image of that size already
/// comes back unchanged.
pub fn fit(img: &RgbImage, width: usize, height: usize) -> Result<RgbImage> {
    img.check("panels::fit")?;
    if width == 0 || height == 0 || img.width == 0 || img.height == 0 {
        return Err(Error::InvalidArgument(format!(
            "panels::fit: cannot fit a {}×{} image into {width}×{height}",
            img.width, img.height
        )));
    }
    if (img.width, img.height) == (width, height) {
        return Ok(img.clone());
    }
    // The largest centered window of the target's aspect ratio, in (fractional) source pixels.
    let (sw, sh) = (img.width as f64, img.height as f64);
    let aspect = width as f64 / height as f64;
    let (cw, ch) = if sw / sh > aspect { (sh * aspect, sh) } else { (sw, sw / aspect) };
    let (wx, wy) =
        (area_weights((sw - cw) / 2.0, cw, width, img.width), area_weights((sh - ch) / 2.0, ch, height, img.height));
    // Separable: rows first (into f64), then columns.
    let mut tmp = vec![0f64; img.height * width * 3];
    for y in 0..img.height {
        for (x, ws) in wx.iter().enumerate() {
            for c in 0..3 {
                tmp[(y * width + x) * 3 + c] =
                    ws.iter().map(|&(j, w)| w * img.pixels[(y * img.width + j) * 3 + c] as f64).sum();
            }
        }
    }
    let mut pixels = vec![0u8; width * height * 3];
    for (y, ws) in wy.iter().enumerate() {
        for x in 0..width {
            for c in 0..3 {
                let v: f64 = ws.iter().map(|&(j, w)| w * tmp[(j * width + x) * 3 + c]).sum();
                pixels[(y * width + x) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(RgbImage { width, height, pixels })
}
