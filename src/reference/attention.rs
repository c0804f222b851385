//! CPU reference for `shaders/attention.wgsl`: textbook softmax attention in f64, score row
//! materialized (fine on the CPU for test sizes). Layout as in the kernel: heads side by side
//! in the columns, head h = columns `off + h*D .. off + h*D + D-1` (BFL `SelfAttention`,
//! src/flux/modules/layers.py @ 802fb47).

/// A row-major `[rows, cols]` matrix whose heads start at column `col_offset`.
#[derive(Debug, Clone, Copy)]
pub struct RefInput<'a> {
    pub data: &'a [f32],
    pub cols: usize,
    pub col_offset: usize,
}

impl RefInput<'_> {
    fn rows(&self) -> usize {
        self.data.len() / self.cols.max(1)
    }
    fn at(&self, row: usize, col: usize) -> f64 {
        self.data[row * self.cols + self.col_offset + col] as f64
    }
}

/// `softmax(scale · q·kᵀ + bias, causal mask) · v` per head, output `[Lq, heads*head_dim]`.
/// `bias` is `[heads, Lq, Lk]`; with `causal`, query i sees key j iff j <= i.
// The kernel's options spelled out one by one: a reference reads plainer without an options struct.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: RefInput,
    k: RefInput,
    v: RefInput,
    heads: usize,
    head_dim: usize,
    scale: f32,
    causal: bool,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (lq, lk) = (q.rows(), k.rows());
    let width = heads * head_dim;
    let mut out = vec![0f32; lq * width];
    let mut scores = vec![0f64; lk];
    for h in 0..heads {
        let c0 = h * head_dim;
        for i in 0..lq {
            let visible = |j: usize| !causal || j <= i;
            let mut max = f64::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                let dot: f64 = (0..head_dim).map(|d| q.at(i, c0 + d) * k.at(j, c0 + d)).sum();
                *s = dot * scale as f64 + bias.map_or(0.0, |b| b[(h * lq + i) * lk + j] as f64);
                if visible(j) {
                    max = max.max(*s);
                }
            }
            let mut denom = 0.0;
            for (j, s) in scores.iter_mut().enumerate() {
                *s = if visible(j) { (*s - max).exp() } else { 0.0 };
                denom += *s;
            }
            for d in 0..head_dim {
                let acc: f64 = scores.iter().enumerate().map(|(j, &p)| p * v.at(j, c0 + d)).sum();
                out[i * width + c0 + d] = (acc / denom) as f32;
            }
        }
    }
    out
}
