//! CPU reference for `shaders/pack.wgsl` (FLUX_REFERENCE.md §2), written straight from the formula.

/// `[C, h, w]` → `[(h/2)(w/2), 4C]`: `packed[r·(w/2) + c, ch·4 + dy·2 + dx] = latent[ch, 2r+dy, 2c+dx]`.
pub fn pack(latent: &[f32], channels: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; channels * h * w];
    for ch in 0..channels {
        for r in 0..h / 2 {
            for c in 0..w / 2 {
                for dy in 0..2 {
                    for dx in 0..2 {
                        let n = r * (w / 2) + c;
                        let f = ch * 4 + dy * 2 + dx;
                        out[n * 4 * channels + f] = latent[(ch * h + 2 * r + dy) * w + 2 * c + dx];
                    }
                }
            }
        }
    }
    out
}

/// The exact inverse of [`pack`].
pub fn unpack(packed: &[f32], channels: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; channels * h * w];
    for ch in 0..channels {
        for r in 0..h / 2 {
            for c in 0..w / 2 {
                for dy in 0..2 {
                    for dx in 0..2 {
                        let n = r * (w / 2) + c;
                        let f = ch * 4 + dy * 2 + dx;
                        out[(ch * h + 2 * r + dy) * w + 2 * c + dx] = packed[n * 4 * channels + f];
                    }
                }
            }
        }
    }
    out
}
