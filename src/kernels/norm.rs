//! Wrapper for `shaders/norm.wgsl`: LayerNorm (optionally affine, optionally with fused AdaLN
//! modulation), RMSNorm over groups (T5, FLUX QK norm on column slices, in place or not) and
//! GroupNorm (VAE, optional fused SiLU). Reference: `reference::norm`.
//!
//! Every kernel takes one workgroup per normalized group and computes f32 statistics with a
//! corrected two-pass algorithm (see the shader), so rows of 3072-4096 with large means are fine.

use bytemuck::{Pod, Zeroable};

use super::conv2d::span;
use super::{expect_f32, shape_err, Variant};
use crate::error::{Error, Result};
use crate::gpu::{grid_1d, Batch, Binding, Gpu, Tensor};

/// The kernel after the workgroup-reduction prelude of this device (see `kernels::Reducing`).
pub static SHADERS: super::Reducing =
    super::reducing!("norm", [include_str!("../../shaders/activations.wgsl"), include_str!("../../shaders/norm.wgsl")]);

/// eps of FLUX's LayerNorms and QK RMSNorm (BFL src/flux/modules/layers.py @ 802fb47), T5's RMSNorm
/// (`T5LayerNorm`, src/transformers/models/t5/modeling_t5.py @ 6b8b757) and the VAE's GroupNorm (BFL
/// `ResnetBlock` / `AttnBlock`, src/flux/modules/autoencoder.py @ 802fb47).
pub const EPS_FLUX: f32 = 1e-6;
/// eps of CLIP's LayerNorms (`CLIPTextConfig.layer_norm_eps`,
/// src/transformers/models/clip/configuration_clip.py @ 01841b3).
pub const EPS_CLIP: f32 = 1e-5;

/// A column slice `[offset, offset + width)` of every row of a row-major `[rows, C]` tensor; the
/// row stride is `C`, the tensor's last dimension. E.g. q of a fused qkv `[L, 9216]` is
/// `Columns { offset: 0, width: 3072 }`, k is `Columns { offset: 3072, width: 3072 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    pub offset: usize,
    pub width: usize,
}

impl Columns {
    /// All columns of `x`.
    pub fn all(x: &Tensor) -> Columns {
        Columns { offset: 0, width: x.dim_rev(0) }
    }

    /// Checks that the slice is non-empty, a multiple of `unit` wide and inside `x`'s rows.
    pub(crate) fn check(self, op: &'static str, x: &Tensor, unit: usize) -> Result<()> {
        let c = x.dim_rev(0);
        if x.shape().is_empty()
            || self.width == 0
            || unit == 0
            || !self.width.is_multiple_of(unit)
            || self.offset + self.width > c
        {
            return Err(shape_err(
                op,
                format!("a column slice of a multiple of {unit} columns inside rows of {c} (tensor {:?})", x.shape()),
                self,
            ));
        }
        Ok(())
    }
}

/// AdaLN modulation `(1 + scale) · v + shift`: shift and scale are the `C`-element runs at element
/// offsets `shift` and `scale` of `tensor`, e.g. of the `[6·3072]` output of `img_mod.lin`
/// (BFL `Modulation`: shift1 at 0, scale1 at 3072; BFL `LastLayer`: shift 0, scale 3072, both in
/// src/flux/modules/layers.py @ 802fb47; diffusers `norm_out` (`AdaLayerNormContinuous`,
/// src/diffusers/models/normalization.py @ 58eb52c): scale 0, shift 3072). No slicing copy is needed.
#[derive(Debug, Clone, Copy)]
pub struct Modulation<'a> {
    pub tensor: &'a Tensor,
    pub shift: usize,
    pub scale: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Params {
    groups: u32,
    n: u32,
    eps: f32,
    per_row: u32,
    in_off: u32,
    in_stride: u32,
    out_off: u32,
    out_stride: u32,
    shift_off: u32,
    scale_off: u32,
    hw: u32,
    g0: u32, // group_norm: first group of this dispatch (indexes the affine), for split tensors
}

/// Workgroup sizes the wrappers may pick (powers of two: the shader's tree reduction needs one).
const WGS: [u32; 4] = [32, 64, 128, 256];

pub fn variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for wg in WGS {
        let wg = wg as f64;
        for (affine, modulate) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)] {
            v.push(Variant::new("layer_norm", &[("WG", wg), ("AFFINE", affine), ("MODULATE", modulate)]));
        }
        for inplace in [0.0, 1.0] {
            v.push(Variant::new("rms_norm", &[("WG", wg), ("INPLACE", inplace)]));
        }
        for silu in [0.0, 1.0] {
            v.push(Variant::new("group_norm", &[("WG", wg), ("SILU", silu)]));
        }
    }
    v
}

/// Workgroup size for groups of `n` elements: the next power of two ≥ n, between 32 and 256,
/// capped by the device (and rounded down to a power of two).
fn workgroup_for(gpu: &Gpu, n: usize) -> u32 {
    let cap = gpu.workgroup_size(256);
    let cap = 1u32 << (31 - cap.leading_zeros());
    let want = (n.clamp(32, 256) as u32).next_power_of_two();
    want.min(cap)
}

fn to_u32(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::LimitExceeded {
        what: format!("{op}: {what} (32-bit shader indices)"),
        needed: v as u64,
        available: u32::MAX as u64,
    })
}

fn expect_len(op: &'static str, what: &str, t: &Tensor, n: usize) -> Result<()> {
    expect_f32(op, t)?;
    if t.numel() != n {
        return Err(shape_err(op, format!("{what} of {n} elements"), t.shape()));
    }
    Ok(())
}

/// One workgroup per group; `tensors` are bindings 1.. in order (binding 0 is the uniform).
fn dispatch(
    gpu: &Gpu,
    batch: &mut Batch,
    entry: &'static str,
    flags: &[(&'static str, f64)],
    p: Params,
    tensors: &[&Tensor],
) -> Result<()> {
    let wg = workgroup_for(gpu, p.n as usize);
    let mut overrides = vec![("WG", wg as f64)];
    overrides.extend_from_slice(flags);
    let mut bindings = vec![Binding::Uniform(bytemuck::bytes_of(&p))];
    bindings.extend(tensors.iter().map(|t| Binding::Tensor(t)));
    let grid = grid_1d(p.groups.max(1), gpu.info().max_workgroups_per_dim);
    batch.dispatch(gpu, SHADERS.pick(gpu), entry, &overrides, &bindings, grid)
}

/// Rows `[rows, C]` of `x` for the row-wise norms (C = last dim, must be > 0).
fn matrix(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    expect_f32(op, x)?;
    let c = x.dim_rev(0);
    if x.shape().is_empty() || c == 0 {
        return Err(shape_err(op, "a tensor [.., C] with C > 0", x.shape()));
    }
    to_u32(op, "elements", x.numel())?;
    Ok((x.rows(), c))
}

fn layer_norm_impl(
    gpu: &Gpu,
    batch: &mut Batch,
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    modulation: Option<&Modulation>,
    eps: f32,
) -> Result<Tensor> {
    const OP: &str = "layer_norm";
    let (rows, c) = matrix(OP, x)?;
    if let Some((w, b)) = affine {
        expect_len(OP, "weight", w, c)?;
        expect_len(OP, "bias", b, c)?;
    }
    let mut p = Params {
        groups: to_u32(OP, "rows", rows)?,
        n: c as u32,
        eps,
        per_row: 1,
        in_stride: c as u32,
        out_stride: c as u32,
        ..Params::default()
    };
    if let Some(m) = modulation {
        expect_f32(OP, m.tensor)?;
        let len = m.tensor.numel();
        if m.shift.max(m.scale) + c > len {
            return Err(shape_err(
                OP,
                format!("shift and scale runs of {c} elements inside a modulation tensor of {len}"),
                format!("shift at {}, scale at {}", m.shift, m.scale),
            ));
        }
        p.shift_off = to_u32(OP, "modulation offset", m.shift)?;
        p.scale_off = to_u32(OP, "modulation offset", m.scale)?;
    }
    let y = gpu.empty(x.shape(), x.dtype())?;
    // Unused bindings get x as a read-only placeholder (the layout is the same for every variant).
    let (w, b) = affine.unwrap_or((x, x));
    let m = modulation.map_or(x, |m| m.tensor);
    let flags = [("AFFINE", affine.is_some() as u32 as f64), ("MODULATE", modulation.is_some() as u32 as f64)];
    dispatch(gpu, batch, "layer_norm", &flags, p, &[x, &y, w, b, m])?;
    Ok(y)
}

/// LayerNorm over the last dim of `x` (biased variance), `· w + b` when `affine` is given
/// (CLIP: affine, eps 1e-5, `CLIPEncoderLayer` in src/transformers/models/clip/modeling_clip.py @ 679021a;
/// FLUX: none, eps 1e-6, BFL src/flux/modules/layers.py @ 802fb47).
pub fn layer_norm(
    gpu: &Gpu,
    batch: &mut Batch,
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
) -> Result<Tensor> {
    layer_norm_impl(gpu, batch, x, affine, None, eps)
}

/// FLUX's AdaLN: `LN(x) · (1 + scale) + shift`, LN without affine (BFL `DoubleStreamBlock`,
/// `SingleStreamBlock`, `LastLayer`, src/flux/modules/layers.py @ 802fb47).
pub fn layer_norm_modulated(
    gpu: &Gpu,
    batch: &mut Batch,
    x: &Tensor,
    modulation: &Modulation,
    eps: f32,
) -> Result<Tensor> {
    layer_norm_impl(gpu, batch, x, None, Some(modulation), eps)
}

/// RMSNorm `v / sqrt(mean(v²) + eps) · w` over groups of `D = w.numel()` consecutive elements
/// along the last dim of `x` (C a multiple of D). T5: D = C = 4096 (`T5LayerNorm`,
/// src/transformers/models/t5/modeling_t5.py @ 6b8b757).
pub fn rms_norm(gpu: &Gpu, batch: &mut Batch, x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    matrix("rms_norm", x)?;
    let y = rms_norm_columns(gpu, batch, x, Columns::all(x), w, eps)?;
    y.reshape(x.shape())
}

/// RMSNorm per `D = w.numel()`-wide head of the column slice `cols` of `x` `[rows, C]`, into a new
/// contiguous `[rows, cols.width]` tensor.
pub fn rms_norm_columns(
    gpu: &Gpu,
    batch: &mut Batch,
    x: &Tensor,
    cols: Columns,
    w: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let (rows, c) = matrix("rms_norm", x)?;
    let y = gpu.empty(&[rows, cols.width], x.dtype())?;
    let p = rms_params(x, cols, w, eps, (rows, c), (0, cols.width))?;
    dispatch(gpu, batch, "rms_norm", &[("INPLACE", 0.0)], p, &[x, &y, w])?;
    Ok(y)
}

/// RMSNorm per `D = w.numel()`-wide head of the column slice `cols` of `x` `[rows, C]`, written
/// back into `x` (no copy). FLUX QK norm (BFL `QKNorm`, src/flux/modules/layers.py @ 802fb47): on a fused qkv
/// `[L, 9216]` or linear1 output `[L, 21504]`, q is `Columns { offset: 0, width: 3072 }` with `norm_q`'s
/// weight `[128]`,
/// k is `Columns { offset: 3072, width: 3072 }` with `norm_k`'s.
pub fn rms_norm_columns_inplace(
    gpu: &Gpu,
    batch: &mut Batch,
    x: &Tensor,
    cols: Columns,
    w: &Tensor,
    eps: f32,
) -> Result<()> {
    let (rows, c) = matrix("rms_norm", x)?;
    let p = rms_params(x, cols, w, eps, (rows, c), (cols.offset, c))?;
    // x is bound once, read_write; the read-only input slot gets the weight as a placeholder.
    dispatch(gpu, batch, "rms_norm", &[("INPLACE", 1.0)], p, &[w, x, w])
}

fn rms_params(
    x: &Tensor,
    cols: Columns,
    w: &Tensor,
    eps: f32,
    (rows, c): (usize, usize),
    out: (usize, usize),
) -> Result<Params> {
    const OP: &str = "rms_norm";
    expect_f32(OP, w)?;
    let d = w.numel();
    cols.check(OP, x, d)?;
    let per_row = cols.width / d;
    Ok(Params {
        groups: to_u32(OP, "groups", rows * per_row)?,
        n: d as u32,
        eps,
        per_row: per_row as u32,
        in_off: cols.offset as u32,
        in_stride: c as u32,
        out_off: out.0 as u32,
        out_stride: out.1 as u32,
        ..Params::default()
    })
}

/// GroupNorm of `x` `[C, H, W]` (or `[1, C, H, W]`) with `groups` groups, affine `w`, `b` `[C]`,
/// then SiLU when `silu` (the VAE's `silu(GN(x))`, BFL `ResnetBlock`'s `GroupNorm` and `swish`,
/// src/flux/modules/autoencoder.py @ 802fb47: 32 groups, eps 1e-6). `x` larger than one storage binding is
/// normalised in runs of whole groups (one dispatch each), so
/// only one group must fit a binding (`LimitExceeded` otherwise).
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    gpu: &Gpu,
    batch: &mut Batch,
    x: &Tensor,
    groups: usize,
    w: &Tensor,
    b: &Tensor,
    eps: f32,
    silu: bool,
) -> Result<Tensor> {
    const OP: &str = "group_norm";
    expect_f32(OP, x)?;
    let s = x.shape();
    let (c, hw) = match s {
        [c, h, w] | [1, c, h, w] => (*c, h * w),
        _ => return Err(shape_err(OP, "[C, H, W] or [1, C, H, W]", s)),
    };
    if groups == 0 || !c.is_multiple_of(groups) || hw == 0 {
        return Err(shape_err(OP, format!("C divisible by {groups} groups and H·W > 0"), s));
    }
    expect_len(OP, "weight", w, c)?;
    expect_len(OP, "bias", b, c)?;
    to_u32(OP, "elements", x.numel())?;
    let n = c / groups * hw;
    let p = Params {
        groups: groups as u32,
        n: n as u32,
        eps,
        per_row: 1,
        in_stride: n as u32,
        out_stride: n as u32,
        hw: hw as u32,
        ..Params::default()
    };
    let y = gpu.empty(s, x.dtype())?;
    // A tensor over one storage binding is split into runs of whole groups (each group is n
    // contiguous elements), bound as ranges: every group's statistics still cover the whole group,
    // so the result is that of one dispatch. Needs one group (+ the offset alignment) to fit a binding.
    let info = gpu.info();
    let room = (info.max_storage_binding as usize).saturating_sub(info.storage_offset_alignment as usize);
    let per = if x.numel() * 4 <= info.max_storage_binding as usize { groups } else { room / (n * 4) };
    if per == 0 {
        return Err(Error::LimitExceeded {
            what: "group_norm: one group in a storage binding".into(),
            needed: (n * 4) as u64,
            available: room as u64,
        });
    }
    let overrides = [("WG", workgroup_for(gpu, n) as f64), ("SILU", silu as u32 as f64)];
    for g0 in (0..groups).step_by(per) {
        let gc = per.min(groups - g0);
        let (xb, x_off) = span(gpu, x, g0 * n * 4, gc * n * 4);
        let (yb, y_off) = span(gpu, &y, g0 * n * 4, gc * n * 4);
        let q =
            Params { groups: gc as u32, in_off: (x_off / 4) as u32, out_off: (y_off / 4) as u32, g0: g0 as u32, ..p };
        let bindings = [Binding::Uniform(bytemuck::bytes_of(&q)), xb, yb, Binding::Tensor(w), Binding::Tensor(b)];
        batch.dispatch(
            gpu,
            SHADERS.pick(gpu),
            "group_norm",
            &overrides,
            &bindings,
            grid_1d(q.groups, info.max_workgroups_per_dim),
        )?;
    }
    Ok(y)
}
