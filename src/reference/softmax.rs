//! CPU reference for `shaders/softmax.wgsl`: row softmax over the last dim, in f64.

/// Softmax of every length-`n` row of `x` (`x.len()` a multiple of `n`).
pub fn softmax(x: &[f32], n: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(n.max(1)) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        y.extend(e.iter().map(|&v| (v / sum) as f32));
    }
    y
}
