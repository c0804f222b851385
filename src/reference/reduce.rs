//! CPU versions of `shaders/reduce.wgsl`.

/// `(Σ|a − b|, Σ|b|)` in f64.
pub fn abs_diff_sums(a: &[f32], b: &[f32]) -> (f64, f64) {
    a.iter().zip(b).fold((0.0, 0.0), |(d, s), (&x, &y)| (d + (x as f64 - y as f64).abs(), s + (y as f64).abs()))
}

/// `mean|a − b| / mean|b|`: ParaAttention's / diffusers' First-Block-Cache distance between this
/// step's first-block residual `a` and the last computed step's `b`.
pub fn relative_l1(a: &[f32], b: &[f32]) -> f64 {
    let (d, s) = abs_diff_sums(a, b);
    if d == 0.0 {
        0.0
    } else {
        d / s
    }
}
