//! Double- and single-stream blocks (BFL `DoubleStreamBlock`, `SingleStreamBlock`,
//! src/flux/modules/layers.py @ 802fb47) on the kernels, batch 1, f32.
//!
//! Layout: a stream is `[tokens, hidden]`; the fused projections keep q | k | v as column ranges
//! of one tensor, and QK-norm + RoPE (one fused pass) and attention work on those ranges in place
//! (no split copies).
//! Modulation vectors `silu(vec)·W_modᵀ + b` stay `[1, n·hidden]` and are read at offsets.

use super::config::FluxConfig;
use super::tree::{DoubleBlock, SingleBlock};
use crate::error::Result;
use crate::gpu::{Batch, DType, Gpu, Tensor};
use crate::kernels::attention::{attention, AttnInput, AttnOptions};
use crate::kernels::copy::{concat_rows, copy_into, copy_into_with, slice_rows, Block};
use crate::kernels::elementwise::Activation;
use crate::kernels::matmul::{matmul, Epilogue, Gate};
use crate::kernels::norm::{layer_norm_modulated, Columns, Modulation, EPS_FLUX};
use crate::kernels::rope::{qk_norm_rope_inplace, QkNormRope, RopeTables};
use crate::model::layers::Linear;

/// `x·Wᵀ + b`, then `act` if given, in the Linear's tile precision.
pub fn linear(gpu: &Gpu, b: &mut Batch, x: &Tensor, l: &Linear, act: Option<Activation>) -> Result<Tensor> {
    l.forward(gpu, b, x, act)
}

/// `residual + m[gate_at..] ⊙ (x·Wᵀ + b)` in one matmul (the gated residual `x + gate·f(x)` of BFL's blocks,
/// src/flux/modules/layers.py @ 802fb47).
fn gated_linear(
    gpu: &Gpu,
    b: &mut Batch,
    x: &Tensor,
    l: &Linear,
    residual: &Tensor,
    m: &Tensor,
    gate_at: usize,
) -> Result<Tensor> {
    let gate = Some(Gate { residual, gate: m, offset: gate_at });
    matmul(
        gpu,
        b,
        x,
        &l.w,
        &Epilogue { bias: l.b.as_ref(), lora: l.lora.as_ref(), gate, precision: l.precision, ..Default::default() },
    )
}

/// `LN(x) · (1 + m[scale_at..]) + m[shift_at..]`.
fn adaln(gpu: &Gpu, b: &mut Batch, x: &Tensor, m: &Tensor, shift_at: usize, scale_at: usize) -> Result<Tensor> {
    layer_norm_modulated(gpu, b, x, &Modulation { tensor: m, shift: shift_at, scale: scale_at }, EPS_FLUX)
}

/// QK RMSNorm per head, then RoPE, on the q and k column ranges of a fused `[L, 3·hidden (+ mlp)]`
/// tensor, in one pass (`qk_norm_rope`); its rows take RoPE table rows `pos_offset..`.
#[allow(clippy::too_many_arguments)]
fn qk_norm_rope(
    gpu: &Gpu,
    b: &mut Batch,
    qkv: &Tensor,
    h: usize,
    norm_q: &Tensor,
    norm_k: &Tensor,
    rope: &RopeTables,
    pos_offset: usize,
) -> Result<()> {
    let (q, k) = (Columns { offset: 0, width: h }, Columns { offset: h, width: h });
    qk_norm_rope_inplace(gpu, b, qkv, &QkNormRope { q, k, norm_q, norm_k, eps: EPS_FLUX }, rope, pos_offset)
}

/// Attention over the joint sequence (text first, no mask, scale 1/sqrt(head_dim)) on q, k, v
/// already normalized and rotated; returns `[L, hidden]`.
fn joint_attention(gpu: &Gpu, b: &mut Batch, qkv: &Tensor, c: &FluxConfig) -> Result<Tensor> {
    let h = c.hidden();
    let (q, k, v) = (AttnInput::new(qkv, 0), AttnInput::new(qkv, h), AttnInput::new(qkv, 2 * h));
    attention(gpu, b, q, k, v, c.heads, c.head_dim, &AttnOptions::for_head_dim(c.head_dim))
}

/// The MLP half of a double-block stream: `x + gate2 ⊙ mlp(AdaLN2(x))`.
fn stream_mlp(gpu: &Gpu, b: &mut Batch, x: &Tensor, m: &Tensor, h: usize, l0: &Linear, l2: &Linear) -> Result<Tensor> {
    let n = adaln(gpu, b, x, m, 3 * h, 4 * h)?;
    let u = linear(gpu, b, &n, l0, Some(Activation::GeluTanh))?;
    gated_linear(gpu, b, &u, l2, x, m, 5 * h)
}

impl DoubleBlock {
    /// One double-stream block (BFL `DoubleStreamBlock.forward`, src/flux/modules/layers.py @ 802fb47):
    /// `(txt, img)` `[L_txt, hidden]`, `[L_img, hidden]` → updated `(txt, img)`. `svec` is `silu(vec)`
    /// `[1, hidden]`; `rope` covers `L_txt + L_img`
    /// positions, text first.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        gpu: &Gpu,
        b: &mut Batch,
        c: &FluxConfig,
        txt: &Tensor,
        img: &Tensor,
        svec: &Tensor,
        rope: &RopeTables,
    ) -> Result<(Tensor, Tensor)> {
        let h = c.hidden();
        let lt = txt.rows();
        let m_img = linear(gpu, b, svec, &self.img_mod, None)?; // shift1 scale1 gate1 shift2 scale2 gate2
        let m_txt = linear(gpu, b, svec, &self.txt_mod, None)?;
        let x_img = adaln(gpu, b, img, &m_img, 0, h)?;
        let x_txt = adaln(gpu, b, txt, &m_txt, 0, h)?;
        let qkv_img = linear(gpu, b, &x_img, &self.img_attn.qkv, None)?;
        let qkv_txt = linear(gpu, b, &x_txt, &self.txt_attn.qkv, None)?;
        // Each stream with its own norms; RoPE positions are those of the joint sequence (text first).
        qk_norm_rope(gpu, b, &qkv_img, h, &self.img_attn.query_norm, &self.img_attn.key_norm, rope, lt)?;
        qk_norm_rope(gpu, b, &qkv_txt, h, &self.txt_attn.query_norm, &self.txt_attn.key_norm, rope, 0)?;
        let qkv = concat_rows(gpu, b, &qkv_txt, &qkv_img)?;
        let a = joint_attention(gpu, b, &qkv, c)?;
        let a_txt = slice_rows(gpu, b, &a, 0, lt)?;
        let a_img = slice_rows(gpu, b, &a, lt, img.rows())?;
        let img = gated_linear(gpu, b, &a_img, &self.img_attn.proj, img, &m_img, 2 * h)?;
        let txt = gated_linear(gpu, b, &a_txt, &self.txt_attn.proj, txt, &m_txt, 2 * h)?;
        let img = stream_mlp(gpu, b, &img, &m_img, h, &self.img_mlp_0, &self.img_mlp_2)?;
        let txt = stream_mlp(gpu, b, &txt, &m_txt, h, &self.txt_mlp_0, &self.txt_mlp_2)?;
        Ok((txt, img))
    }
}

impl SingleBlock {
    /// One single-stream block (BFL `SingleStreamBlock.forward`, src/flux/modules/layers.py @ 802fb47) on the
    /// joint sequence `x` `[L_txt + L_img, hidden]`.
    pub fn forward(
        &self,
        gpu: &Gpu,
        b: &mut Batch,
        c: &FluxConfig,
        x: &Tensor,
        svec: &Tensor,
        rope: &RopeTables,
    ) -> Result<Tensor> {
        let h = c.hidden();
        let m = linear(gpu, b, svec, &self.modulation, None)?; // shift scale gate
        let n = adaln(gpu, b, x, &m, 0, h)?;
        let u = linear(gpu, b, &n, &self.linear1, None)?; // q | k | v | mlp
        qk_norm_rope(gpu, b, &u, h, &self.query_norm, &self.key_norm, rope, 0)?;
        let a = joint_attention(gpu, b, &u, c)?;
        // concat(attention, gelu(mlp)): the attention first, then the MLP columns of `u` through
        // GELU in the same pass that moves them.
        let rows = x.rows();
        let o = gpu.empty(&[rows, h + c.mlp_hidden], DType::F32)?;
        copy_into(gpu, b, &o, (0, 0), &a, Block::all(&a)?)?;
        let mlp = Block { row0: 0, col0: 3 * h, rows, cols: c.mlp_hidden };
        copy_into_with(gpu, b, &o, (0, h), &u, mlp, Activation::GeluTanh)?;
        gated_linear(gpu, b, &o, &self.linear2, x, &m, 2 * h)
    }
}
