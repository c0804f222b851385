//! VAE building blocks on the kernels (BFL `ResnetBlock`, `AttnBlock`, `Downsample`, `Upsample`,
//! src/flux/modules/autoencoder.py @ 802fb47): resnets, the mid-block attention, encoder and decoder levels.
//! Activations are F32 `[C, H, W]`.

use super::weights::{Attention, Conv, DownBlock, GroupNorm, MidBlock, Resnet, UpBlock};
use crate::error::Result;
use crate::gpu::{Batch, Gpu, Tensor};
use crate::kernels::attention::{attention as sdpa, AttnInput, AttnOptions};
use crate::kernels::conv2d::{conv2d, Conv2d};
use crate::kernels::copy::transpose;
use crate::kernels::elementwise::add;
use crate::kernels::norm::{group_norm, EPS_FLUX};
use crate::kernels::shape_err;
use crate::model::layers::Linear;

/// `(C, H, W)` of an activation.
pub fn dims(x: &Tensor) -> Result<(usize, usize, usize)> {
    match *x.shape() {
        [c, h, w] => Ok((c, h, w)),
        _ => Err(shape_err("vae", "an activation [C, H, W]", x.shape())),
    }
}

/// `silu(GN(x))` (or `GN(x)`), eps 1e-6 (the `GroupNorm`s of BFL's `ResnetBlock` / `AttnBlock`,
/// src/flux/modules/autoencoder.py @ 802fb47).
pub fn norm(gpu: &Gpu, b: &mut Batch, x: &Tensor, n: &GroupNorm, groups: usize, silu: bool) -> Result<Tensor> {
    group_norm(gpu, b, x, groups, &n.w, &n.b, EPS_FLUX, silu)
}

pub fn conv(
    gpu: &Gpu,
    b: &mut Batch,
    x: &Tensor,
    c: &Conv,
    geometry: Conv2d,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    conv2d(gpu, b, x, &c.w, &c.b, geometry, residual)
}

/// `shortcut(x) + conv2(silu(GN2(conv1(silu(GN1(x))))))`, the residual fused into conv2 (BFL `ResnetBlock`,
/// src/flux/modules/autoencoder.py @ 802fb47).
pub fn resnet(gpu: &Gpu, b: &mut Batch, x: &Tensor, r: &Resnet, groups: usize) -> Result<Tensor> {
    let h = norm(gpu, b, x, &r.norm1, groups, true)?;
    let h = conv(gpu, b, &h, &r.conv1, Conv2d::same(1), None)?;
    let h = norm(gpu, b, &h, &r.norm2, groups, true)?;
    let shortcut = match &r.conv_shortcut {
        Some(s) => conv(gpu, b, x, s, Conv2d::same(0), None)?,
        None => x.clone(),
    };
    conv(gpu, b, &h, &r.conv2, Conv2d::same(1), Some(&shortcut))
}

/// `x + proj_out(softmax(q·kᵀ/√C)·v)` with q, k, v Linear maps of `GN(x)` over channels, one head of
/// dim C on the `H·W` pixels in row-major order (BFL `AttnBlock`, src/flux/modules/autoencoder.py @ 802fb47).
/// The tiled attention kernel never materialises
/// the `(H·W)²` scores; the activation is transposed to tokens `[H·W, C]` and back around it.
pub fn attention(gpu: &Gpu, b: &mut Batch, x: &Tensor, a: &Attention, groups: usize) -> Result<Tensor> {
    let (c, h, w) = dims(x)?;
    let hn = norm(gpu, b, x, &a.group_norm, groups, false)?;
    let tokens = transpose(gpu, b, &hn.reshape(&[c, h * w])?)?;
    let lin = |b: &mut Batch, t: &Tensor, l: &Linear| l.forward(gpu, b, t, None);
    let (q, k, v) = (lin(b, &tokens, &a.to_q)?, lin(b, &tokens, &a.to_k)?, lin(b, &tokens, &a.to_v)?);
    let o = sdpa(
        gpu,
        b,
        AttnInput::new(&q, 0),
        AttnInput::new(&k, 0),
        AttnInput::new(&v, 0),
        1,
        c,
        &AttnOptions::for_head_dim(c),
    )?;
    let o = lin(b, &o, &a.to_out)?;
    let o = transpose(gpu, b, &o)?.reshape(&[c, h, w])?;
    add(gpu, b, x, &o)
}

pub fn mid_block(gpu: &Gpu, b: &mut Batch, x: &Tensor, m: &MidBlock, groups: usize) -> Result<Tensor> {
    let mut x = resnet(gpu, b, x, &m.resnet_0, groups)?;
    if let Some(a) = &m.attention {
        x = attention(gpu, b, &x, a, groups)?;
    }
    resnet(gpu, b, &x, &m.resnet_1, groups)
}

/// An encoder level: its resnets, then pad (0, 1, 0, 1) + 3×3 stride-2 conv when it has one.
pub fn down_block(gpu: &Gpu, b: &mut Batch, x: &Tensor, d: &DownBlock, groups: usize) -> Result<Tensor> {
    let mut x = x.clone();
    for r in &d.resnets {
        x = resnet(gpu, b, &x, r, groups)?;
    }
    match &d.downsampler {
        Some(c) => conv(gpu, b, &x, c, Conv2d::DOWNSAMPLE, None),
        None => Ok(x),
    }
}

/// A decoder level: its resnets, then nearest ×2 fused into a 3×3 conv when it has one.
pub fn up_block(gpu: &Gpu, b: &mut Batch, x: &Tensor, u: &UpBlock, groups: usize) -> Result<Tensor> {
    let mut x = x.clone();
    for r in &u.resnets {
        x = resnet(gpu, b, &x, r, groups)?;
    }
    match &u.upsampler {
        Some(c) => conv(gpu, b, &x, c, Conv2d::UPSAMPLE, None),
        None => Ok(x),
    }
}
