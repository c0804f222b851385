//! Self-test runs of the arithmetic-heavy kernels: matmul (every weight format, epilogues,
//! LoRA), attention and conv2d.

use super::{dim, random, Rng};
use crate::gpu::{Batch, DType, Gpu, Tensor};
use crate::kernels::attention::{self as ka, AttnInput, AttnOptions};
use crate::kernels::conv2d::{self as kc, Conv2d};
use crate::kernels::elementwise::Activation;
use crate::kernels::matmul::{self as km, AdapterSlice, Epilogue, Gate, LoraStack};
use crate::reference::attention::{self as attn_ref, RefInput};
use crate::reference::matmul::{self as mm_ref, EpilogueRef, LoraRef};
use crate::reference::{conv2d as conv_ref, quant, random};
use crate::weights::repack::repack;
use crate::Result;

type Out = Result<(Tensor, Vec<f32>)>;

/// A random `[n, k]` weight in `format` on the GPU (values in ±1; quantized blocks are random
/// bits with f16 scales in ±0.05, in the GGUF layout, then repacked), and its values as the
/// reference dequantizes them.
pub fn random_weight(g: &Gpu, rng: &mut Rng, format: DType, n: usize, k: usize) -> Result<(Tensor, Vec<f32>)> {
    let bytes = random::weight_bytes(rng, format, n * k, 1.0, 0.05);
    let values = quant::dequantize(format, &bytes)?;
    Ok((g.upload_raw(&[n, k], format, &repack(format, &bytes)?)?, values))
}

/// dims `[m, n, k]`: `x [m, k] · Wᵀ`, W `[n, k]` in `format`.
pub fn matmul(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng, format: DType) -> Out {
    let (m, n, k) = (dim(dims, 0), dim(dims, 1), dim(dims, 2));
    let (w, wv) = random_weight(g, rng, format, n, k)?;
    let (x, xv) = random(g, &[m, k], rng, -1.0, 1.0)?;
    let y = km::matmul(g, b, &x, &w, &Epilogue::default())?;
    Ok((y, mm_ref::matmul(&xv, &wv, m, n, k, &EpilogueRef::default())))
}

/// dims `[m, n, k]`: a Q8_0 weight with every epilogue at once: bias, GELU, two LoRA adapters
/// (one on the first half of the outputs, one on all), gated residual.
pub fn matmul_epilogue(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng) -> Out {
    let (m, n, k) = (dim(dims, 0), dim(dims, 1), dim(dims, 2));
    let (w, wv) = random_weight(g, rng, DType::Q8_0, n, k)?;
    let (x, xv) = random(g, &[m, k], rng, -1.0, 1.0)?;
    let (bias, bv) = random(g, &[n], rng, -1.0, 1.0)?;
    let (resid, rv) = random(g, &[m, n], rng, -1.0, 1.0)?;
    let (gate, gv) = random(g, &[n + 3], rng, -1.0, 1.0)?;
    let slices = [
        AdapterSlice { n0: 0, len: n.div_ceil(2), rank: 4, scale: 0.8 },
        AdapterSlice { n0: 0, len: n, rank: 16, scale: -0.5 },
    ];
    let parts: Vec<(Vec<f32>, Vec<f32>)> =
        slices.iter().map(|s| (rng.vec(s.rank * k, -0.5, 0.5), rng.vec(s.len * s.rank, -0.5, 0.5))).collect();
    let stack_parts: Vec<(&[f32], &[f32], AdapterSlice)> =
        parts.iter().zip(slices).map(|((a, bb), s)| (a.as_slice(), bb.as_slice(), s)).collect();
    let stack = LoraStack::new(g, k, &stack_parts)?;
    let epi = Epilogue {
        bias: Some(&bias),
        lora: Some(&stack),
        act: Some(Activation::GeluTanh),
        gate: Some(Gate { residual: &resid, gate: &gate, offset: 3 }),
        ..Default::default()
    };
    let y = km::matmul(g, b, &x, &w, &epi)?;
    let loras: Vec<LoraRef> = parts
        .iter()
        .zip(slices)
        .map(|((a, bb), s)| LoraRef { a, b: bb, rank: s.rank, n0: s.n0, len: s.len, scale: s.scale })
        .collect();
    let epi_ref =
        EpilogueRef { bias: Some(&bv), loras: &loras, act: Activation::GeluTanh, gated: Some((&rv, &gv[3..])) };
    Ok((y, mm_ref::matmul(&xv, &wv, m, n, k, &epi_ref)))
}

/// dims `[heads, D, Lq, Lk]`: separate q, k, v `[L, heads·D]`; with `bias`, a T5-style score bias
/// `[heads, Lq, Lk]` and scale 1, else scale 1/sqrt(D).
pub fn attention(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng, causal: bool, bias: bool) -> Out {
    let (heads, d, lq, lk) = (dim(dims, 0), dim(dims, 1), dim(dims, 2), dim(dims, 3));
    let width = heads * d;
    let (q, qv) = random(g, &[lq, width], rng, -1.0, 1.0)?;
    let (k, kv) = random(g, &[lk, width], rng, -1.0, 1.0)?;
    let (v, vv) = random(g, &[lk, width], rng, -2.0, 2.0)?;
    let scale = if bias { 1.0 } else { 1.0 / (d as f32).sqrt() };
    let bias_t = if bias { Some(random(g, &[heads, lq, lk], rng, -3.0, 3.0)?) } else { None };
    let opts = AttnOptions { scale, causal, bias: bias_t.as_ref().map(|t| &t.0) };
    let y = ka::attention(g, b, AttnInput::new(&q, 0), AttnInput::new(&k, 0), AttnInput::new(&v, 0), heads, d, &opts)?;
    let input = |data| RefInput { data, cols: width, col_offset: 0 };
    let expected = attn_ref::attention(
        input(&qv),
        input(&kv),
        input(&vv),
        heads,
        d,
        scale,
        causal,
        bias_t.as_ref().map(|t| t.1.as_slice()),
    );
    Ok((y, expected))
}

/// The VAE's convolutions (BFL `ResnetBlock`, `Downsample`, `Upsample`,
/// src/flux/modules/autoencoder.py @ 802fb47).
#[derive(Clone, Copy)]
pub enum ConvKind {
    /// 3×3, padding 1.
    Same3,
    /// 1×1 shortcut fused with the residual add.
    Shortcut,
    /// The encoder's Downsample: 3×3, stride 2, pad (0, 1, 0, 1).
    Down,
    /// The decoder's Upsample: nearest ×2 fused into a 3×3 conv.
    Up,
    /// The tiny preview decoder's block end: 3×3 + residual, then ReLU.
    ResidualRelu,
}

/// dims `[C, H, W, O]`, F32 weights scaled by 1/sqrt(fan-in).
pub fn conv2d(g: &Gpu, b: &mut Batch, dims: &[usize], rng: &mut Rng, kind: ConvKind) -> Out {
    let (c, h, w, o) = (dim(dims, 0), dim(dims, 1), dim(dims, 2), dim(dims, 3));
    let (ksize, conv, residual) = match kind {
        ConvKind::Same3 => (3, Conv2d::same(1), false),
        ConvKind::Shortcut => (1, Conv2d::same(0), true),
        ConvKind::Down => (3, Conv2d::DOWNSAMPLE, false),
        ConvKind::Up => (3, Conv2d::UPSAMPLE, false),
        ConvKind::ResidualRelu => (3, Conv2d::same(1).then_relu(), true),
    };
    let fan_in = (c * ksize * ksize) as f32;
    let (x, xv) = random(g, &[c, h, w], rng, -1.0, 1.0)?;
    let (wt, wv) = random(g, &[o, c, ksize, ksize], rng, -1.0 / fan_in.sqrt(), 1.0 / fan_in.sqrt())?;
    let (bias, bv) = random(g, &[o], rng, -0.5, 0.5)?;
    let (ho, wo) = conv.output_size(h, w, ksize, ksize).unwrap_or((0, 0));
    let res = if residual { Some(random(g, &[o, ho, wo], rng, -1.0, 1.0)?) } else { None };
    let y = kc::conv2d(g, b, &x, &wt, &bias, conv, res.as_ref().map(|r| &r.0))?;
    let (expected, _, _) =
        conv_ref::conv2d(&xv, (c, h, w), &wv, (o, ksize, ksize), &bv, conv, res.as_ref().map(|r| r.1.as_slice()));
    Ok((y, expected))
}
