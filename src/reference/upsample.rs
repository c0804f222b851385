//! CPU reference for `shaders/upsample.wgsl`.

/// Nearest-neighbour ×2 of `[C, H, W]` → `[C, 2H, 2W]`: output (y, x) takes input (y/2, x/2).
pub fn nearest2x(x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(c * 4 * h * w);
    for ch in 0..c {
        for y in 0..2 * h {
            for xo in 0..2 * w {
                out.push(x[(ch * h + y / 2) * w + xo / 2]);
            }
        }
    }
    out
}
