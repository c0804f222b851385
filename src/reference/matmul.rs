//! CPU reference for `shaders/matmul.wgsl`: `y = epi(x·Wᵀ + b + Σ sᵢ (x·Aᵢᵀ)·Bᵢᵀ)` in f64.

use crate::kernels::elementwise::Activation;
use crate::reference::elementwise::activate;

/// One LoRA adapter on the output columns `[n0, n0 + len)`: `a` is `[rank, K]`, `b` is `[len, rank]`.
pub struct LoraRef<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub rank: usize,
    pub n0: usize,
    pub len: usize,
    pub scale: f32,
}

pub struct EpilogueRef<'a> {
    pub bias: Option<&'a [f32]>,
    pub loras: &'a [LoraRef<'a>],
    pub act: Activation,
    /// `(residual [M, N], gate [N])`: `y = residual + gate ⊙ y`.
    pub gated: Option<(&'a [f32], &'a [f32])>,
}

impl Default for EpilogueRef<'_> {
    fn default() -> Self {
        EpilogueRef { bias: None, loras: &[], act: Activation::None, gated: None }
    }
}

/// `x` is `[m, k]`, `w` is `[n, k]` (PyTorch Linear weight), result `[m, n]`.
pub fn matmul(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, epi: &EpilogueRef) -> Vec<f32> {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64).sum::<f64>();
    // Down projections first: t[l][row][r] = x[row] · a_l[r]
    let downs: Vec<Vec<f64>> = epi
        .loras
        .iter()
        .map(|l| {
            (0..m)
                .flat_map(|i| (0..l.rank).map(move |r| (i, r)))
                .map(|(i, r)| dot(&x[i * k..(i + 1) * k], &l.a[r * k..(r + 1) * k]))
                .collect()
        })
        .collect();
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut v = dot(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
            if let Some(b) = epi.bias {
                v += b[j] as f64;
            }
            for (l, t) in epi.loras.iter().zip(&downs) {
                if j >= l.n0 && j < l.n0 + l.len {
                    let jj = j - l.n0;
                    let s: f64 = (0..l.rank).map(|r| t[i * l.rank + r] * l.b[jj * l.rank + r] as f64).sum();
                    v += l.scale as f64 * s;
                }
            }
            let mut v = activate(v as f32, epi.act);
            if let Some((r, g)) = epi.gated {
                v = (r[i * n + j] as f64 + g[j] as f64 * v as f64) as f32;
            }
            y[i * n + j] = v;
        }
    }
    y
}
