//! CPU reference for `shaders/activations.wgsl` and `shaders/elementwise.wgsl`.

use crate::kernels::elementwise::Activation;

/// GELU, tanh approximation (FLUX, T5 `gelu_new`), computed in f64.
pub fn gelu_tanh(x: f32) -> f32 {
    let x = x as f64;
    let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    (0.5 * x * (1.0 + u.tanh())) as f32
}

/// CLIP's quick GELU: `x · sigmoid(1.702 x)`.
pub fn quick_gelu(x: f32) -> f32 {
    let x = x as f64;
    (x / (1.0 + (-1.702 * x).exp())) as f32
}

pub fn silu(x: f32) -> f32 {
    let x = x as f64;
    (x / (1.0 + (-x).exp())) as f32
}

pub fn activate(x: f32, act: Activation) -> f32 {
    match act {
        Activation::GeluTanh => gelu_tanh(x),
        Activation::QuickGelu => quick_gelu(x),
        Activation::Silu => silu(x),
        Activation::None => x,
        Activation::Tanh => (x as f64).tanh() as f32,
    }
}

pub fn activation(x: &[f32], act: Activation) -> Vec<f32> {
    x.iter().map(|&v| activate(v, act)).collect()
}

/// `a + b` with `b` repeated every `b.len()` elements.
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().enumerate().map(|(i, &v)| v + b[i % b.len()]).collect()
}

pub fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().enumerate().map(|(i, &v)| v * b[i % b.len()]).collect()
}

pub fn sub(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().enumerate().map(|(i, &v)| v - b[i % b.len()]).collect()
}

/// `a + gate ⊙ b`, gate repeated every `gate.len()` elements.
pub fn gated_add(a: &[f32], gate: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).enumerate().map(|(i, (&x, &y))| x + gate[i % gate.len()] * y).collect()
}

/// RePaint re-imposition: row `r` (of `cols` values) of `x` becomes `(1 − σ)·target + σ·noise`
/// when `thresholds[r] ≤ σ`, else stays (the kernel's f32 formula, so results match to rounding).
pub fn masked_blend(x: &[f32], thresholds: &[f32], target: &[f32], noise: &[f32], sigma: f32, cols: usize) -> Vec<f32> {
    (0..x.len())
        .map(|i| if sigma >= thresholds[i / cols] { (1.0 - sigma) * target[i] + sigma * noise[i] } else { x[i] })
        .collect()
}
