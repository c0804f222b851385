//! CPU reference for `shaders/pack.wgsl` (diffusers `FluxPipeline._pack_latents`,
//! src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c), written straight from the formula.

/// Calls `f(latent_index, packed_index)` for every element:
/// `packed[r·(w/2) + c, ch·4 + dy·2 + dx] = latent[ch, 2r+dy, 2c+dx]`.
fn for_each_pair(channels: usize, h: usize, w: usize, mut f: impl FnMut(usize, usize)) {
    for ch in 0..channels {
        for r in 0..h / 2 {
            for c in 0..w / 2 {
                for dy in 0..2 {
                    for dx in 0..2 {
                        let n = r * (w / 2) + c;
                        let feat = ch * 4 + dy * 2 + dx;
                        f((ch * h + 2 * r + dy) * w + 2 * c + dx, n * 4 * channels + feat);
                    }
                }
            }
        }
    }
}

/// `[C, h, w]` → `[(h/2)(w/2), 4C]`.
pub fn pack(latent: &[f32], channels: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; channels * h * w];
    for_each_pair(channels, h, w, |l, p| out[p] = latent[l]);
    out
}

/// The exact inverse of [`pack`].
pub fn unpack(packed: &[f32], channels: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; channels * h * w];
    for_each_pair(channels, h, w, |l, p| out[l] = packed[p]);
    out
}
