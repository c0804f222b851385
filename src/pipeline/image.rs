//! The 8-bit RGB image the pipeline produces and consumes (canvases, panels, reference images).
//! Platform-neutral (no file or PNG I/O here) so that panels and conditioning build on wasm32.

use crate::error::{Error, Result};

/// 8-bit RGB, rows top to bottom, `[height, width, 3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// An all-black image.
    pub fn black(width: usize, height: usize) -> RgbImage {
        RgbImage { width, height, pixels: vec![0; width * height * 3] }
    }

    /// Checks that `pixels` holds `width · height · 3` bytes.
    pub fn check(&self, op: &'static str) -> Result<()> {
        if self.pixels.len() != self.width * self.height * 3 {
            return Err(Error::ShapeMismatch {
                op,
                expected: format!(
                    "{} bytes for a {}×{} RGB8 image",
                    self.width * self.height * 3,
                    self.width,
                    self.height
                ),
                got: format!("{} bytes", self.pixels.len()),
            });
        }
        Ok(())
    }

    /// Planar `[3, height, width]` f32 in [−1, 1], the VAE's input: diffusers'
    /// `VaeImageProcessor` (`pil_to_numpy`: `x / 255` in f32, then `normalize`: `2·x − 1`).
    pub fn to_chw_signed(&self) -> Result<Vec<f32>> {
        self.check("RgbImage::to_chw_signed")?;
        let plane = self.width * self.height;
        let mut out = vec![0f32; 3 * plane];
        for (i, px) in self.pixels.chunks_exact(3).enumerate() {
            for (c, &v) in px.iter().enumerate() {
                out[c * plane + i] = 2.0 * (v as f32 / 255.0) - 1.0;
            }
        }
        Ok(out)
    }
}
