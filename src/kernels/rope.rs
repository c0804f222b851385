//! Wrapper for `shaders/rope.wgsl`: FLUX's 3-axis rotary embedding with interleaved pairs
//! (BFL `rope` / `apply_rope`, src/flux/math.py @ 802fb47), applied to every head of a column slice (q|k of a
//! fused qkv tensor), in place or into a new tensor; and [`qk_norm_rope_inplace`], FLUX's per-head QK RMSNorm
//! fused
//! with the rotation (one pass over q and k). Also the host-side table builder and FLUX position
//! ids (diffusers `FluxPipeline._prepare_latent_image_ids`,
//! src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c). Reference: `reference::rope`.

use bytemuck::{Pod, Zeroable};

use super::norm::Columns;
use super::{expect_f32, launch_1d, shape_err, Variant};
use crate::error::{Error, Result};
use crate::gpu::{grid_1d, Batch, Binding, Gpu, Tensor};

/// The kernel after the workgroup-reduction prelude of this device (qk_norm_rope's sum of squares).
pub static SHADERS: super::Reducing = super::reducing!("rope", [include_str!("../../shaders/rope.wgsl")]);

/// FLUX's rotary axes: 16 + 56 + 56 = 128 = head dim (BFL `configs["flux-dev"].params.axes_dim`,
/// src/flux/util.py @ 802fb47).
pub const FLUX_AXES: [usize; 3] = [16, 56, 56];
/// FLUX's rotary base θ (BFL `configs["flux-dev"].params.theta`, src/flux/util.py @ 802fb47).
pub const FLUX_THETA: f64 = 10000.0;

const WG: u32 = 256;
/// Workgroup sizes `qk_norm_rope` may use (powers of two: its tree reduction needs one).
const NORM_WGS: [u32; 4] = [32, 64, 128, 256];

pub fn variants() -> Vec<Variant> {
    let mut v = vec![
        Variant::new("rope", &[("WG", WG as f64), ("INPLACE", 1.0)]),
        Variant::new("rope", &[("WG", WG as f64), ("INPLACE", 0.0)]),
    ];
    v.extend(NORM_WGS.iter().map(|&wg| Variant::new("qk_norm_rope", &[("WG", wg as f64), ("INPLACE", 1.0)])));
    v
}

/// FLUX position ids (BFL `prepare`, src/flux/sampling.py @ 802fb47; diffusers `_prepare_latent_image_ids`,
/// src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c): `txt_len` text tokens at (0, 0, 0) first, then
/// the image tokens of a `rows × cols` packed-patch grid (H/16 × W/16) at (0, r, c), row-major.
pub fn flux_position_ids(txt_len: usize, rows: usize, cols: usize) -> Vec<[f32; 3]> {
    let text = std::iter::repeat_n([0.0; 3], txt_len);
    let image = (0..rows).flat_map(|r| (0..cols).map(move |c| [0.0, r as f32, c as f32]));
    text.chain(image).collect()
}

/// cos and sin tables `[L, D/2]` (row-major, `D = Σ axes_dim`) for positions `ids`: table column
/// `p` is pair `p` of a head; pairs are split among the axes by concatenation in axis order, and
/// axis `a` with dim `d` contributes `d/2` pairs of frequency `ω_j = theta^(−2j/d)` at angle
/// `ids[t][a] · ω_j` (BFL `rope`, src/flux/math.py @ 802fb47). Computed in f64 like diffusers
/// (`FluxPosEmbed`, src/diffusers/models/transformers/transformer_flux.py @ 58eb52c), stored as f32. Axes
/// past the third have no position (angle 0); an odd axis dim contributes `floor(d/2)` pairs, as in
/// diffusers.
pub fn rope_tables(ids: &[[f32; 3]], axes_dim: &[usize], theta: f64) -> (Vec<f32>, Vec<f32>) {
    let freqs: Vec<(usize, f64)> = axes_dim
        .iter()
        .enumerate()
        .flat_map(|(a, &d)| (0..d / 2).map(move |j| (a, theta.powf(-2.0 * j as f64 / d as f64))))
        .collect();
    let mut cos = Vec::with_capacity(ids.len() * freqs.len());
    let mut sin = Vec::with_capacity(ids.len() * freqs.len());
    for pos in ids {
        for &(a, w) in &freqs {
            let phi = pos.get(a).map_or(0.0, |&p| p as f64) * w;
            cos.push(phi.cos() as f32);
            sin.push(phi.sin() as f32);
        }
    }
    (cos, sin)
}

/// The cos/sin tables on the GPU, `[L, head_dim/2]` each.
#[derive(Debug, Clone)]
pub struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl RopeTables {
    /// Builds the tables with [`rope_tables`] and uploads them.
    pub fn new(gpu: &Gpu, ids: &[[f32; 3]], axes_dim: &[usize], theta: f64) -> Result<RopeTables> {
        let half: usize = axes_dim.iter().map(|d| d / 2).sum();
        if half == 0 || ids.is_empty() {
            return Err(shape_err("rope_tables", "at least one position and one pair", (ids.len(), axes_dim)));
        }
        let (cos, sin) = rope_tables(ids, axes_dim, theta);
        Ok(RopeTables {
            cos: gpu.upload_f32(&[ids.len(), half], &cos)?,
            sin: gpu.upload_f32(&[ids.len(), half], &sin)?,
        })
    }

    /// Head dimension the tables rotate (2 × pairs).
    pub fn head_dim(&self) -> usize {
        2 * self.cos.dim_rev(0)
    }

    /// Number of positions (table rows).
    pub fn positions(&self) -> usize {
        self.cos.rows()
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    pairs: u32,
    half_width: u32,
    half_dim: u32,
    pos_off: u32,
    in_off: u32,
    in_stride: u32,
    out_off: u32,
    out_stride: u32,
    // qk_norm_rope only (zero for rope).
    groups: u32,
    heads: u32,
    q_off: u32,
    k_off: u32,
    eps: f32,
    _pad: [u32; 3],
}

/// Checks shapes; returns (rows, C, params without the output placement).
fn params(x: &Tensor, cols: Columns, t: &RopeTables, pos_offset: usize) -> Result<(usize, Params)> {
    const OP: &str = "rope";
    for v in [x, &t.cos, &t.sin] {
        expect_f32(OP, v)?;
    }
    let half = t.cos.dim_rev(0);
    if t.cos.shape().len() != 2 || t.sin.shape() != t.cos.shape() || half == 0 {
        return Err(shape_err(OP, "cos and sin tables of the same shape [L, D/2]", (t.cos.shape(), t.sin.shape())));
    }
    if x.shape().len() < 2 {
        return Err(shape_err(OP, "a matrix [rows, C]", x.shape()));
    }
    cols.check(OP, x, 2 * half)?;
    let (rows, c) = (x.rows(), x.dim_rev(0));
    if pos_offset + rows > t.positions() {
        return Err(shape_err(
            OP,
            format!("tables with at least {} positions ({rows} rows from position {pos_offset})", pos_offset + rows),
            t.cos.shape(),
        ));
    }
    let u = |what: &str, v: usize| {
        u32::try_from(v).map_err(|_| Error::LimitExceeded {
            what: format!("rope: {what} (32-bit shader indices)"),
            needed: v as u64,
            available: u32::MAX as u64,
        })
    };
    u("elements", x.numel())?;
    u("table elements", t.cos.numel())?;
    let p = Params {
        pairs: u("pairs", rows * cols.width / 2)?,
        half_width: (cols.width / 2) as u32,
        half_dim: half as u32,
        pos_off: pos_offset as u32,
        in_off: cols.offset as u32,
        in_stride: c as u32,
        out_off: cols.offset as u32,
        out_stride: c as u32,
        ..Params::zeroed()
    };
    Ok((rows, p))
}

fn dispatch(gpu: &Gpu, batch: &mut Batch, p: Params, inplace: bool, tensors: [&Tensor; 4]) -> Result<()> {
    let (wg, grid) = launch_1d(gpu, p.pairs as usize, WG);
    let mut bindings = vec![Binding::Uniform(bytemuck::bytes_of(&p))];
    bindings.extend(tensors.iter().map(|t| Binding::Tensor(t)));
    batch.dispatch(
        gpu,
        SHADERS.pick(gpu),
        "rope",
        &[("WG", wg as f64), ("INPLACE", inplace as u32 as f64)],
        &bindings,
        grid,
    )
}

/// Rotates every `head_dim`-wide head of the column slice `cols` of `x` `[rows, C]` in place
/// (x is bound once, read_write). Row `r` of `x` takes table row `pos_offset + r`: in a double
/// block the text stream uses `pos_offset = 0` and the image stream `pos_offset = L_txt`; a
/// single block's joint `[L_txt + L_img, 21504]` uses 0. q and k are adjacent in a fused qkv or
/// linear1 output, so `Columns { offset: 0, width: 6144 }` rotates both in one dispatch.
pub fn rope_inplace(
    gpu: &Gpu,
    batch: &mut Batch,
    x: &Tensor,
    cols: Columns,
    tables: &RopeTables,
    pos_offset: usize,
) -> Result<()> {
    let (_, p) = params(x, cols, tables, pos_offset)?;
    // The read-only input slot gets the cos table as a placeholder.
    dispatch(gpu, batch, p, true, [&tables.cos, x, &tables.cos, &tables.sin])
}

/// Like [`rope_inplace`], but writes the rotated slice to a new contiguous `[rows, cols.width]` tensor.
pub fn rope(
    gpu: &Gpu,
    batch: &mut Batch,
    x: &Tensor,
    cols: Columns,
    tables: &RopeTables,
    pos_offset: usize,
) -> Result<Tensor> {
    let (rows, mut p) = params(x, cols, tables, pos_offset)?;
    p.out_off = 0;
    p.out_stride = cols.width as u32;
    let y = gpu.empty(&[rows, cols.width], x.dtype())?;
    dispatch(gpu, batch, p, false, [x, &y, &tables.cos, &tables.sin])?;
    Ok(y)
}

/// FLUX's QK norm and RoPE on a fused qkv (or linear1 output) `x` `[rows, C]`, in place: every
/// `D = norm_q.numel()`-wide head of `q` is RMS-normalized with `norm_q`'s weight, every head of `k`
/// with `norm_k`'s (eps `eps`), then rotated with table row `pos_offset + r` (BFL `QKNorm`, then `apply_rope`
/// in `attention`, src/flux/modules/layers.py @ 802fb47 and src/flux/math.py @ 802fb47). One pass over q and
/// k instead of three ([`rms_norm_columns_inplace`] on q, on k, then
/// [`rope_inplace`]); same result up to the order of the sum of squares.
///
/// [`rms_norm_columns_inplace`]: super::norm::rms_norm_columns_inplace
#[derive(Debug, Clone, Copy)]
pub struct QkNormRope<'a> {
    /// Column slices of q and k (same width, a multiple of D, not overlapping).
    pub q: Columns,
    pub k: Columns,
    /// Per-head RMSNorm weights `[D]` of q and k.
    pub norm_q: &'a Tensor,
    pub norm_k: &'a Tensor,
    pub eps: f32,
}

/// See [`QkNormRope`]. In a double block each stream is done on its own rows (text with
/// `pos_offset = 0`, image with `pos_offset = L_txt`) before they are joined; a single block's
/// joint `[L_txt + L_img, 21504]` uses 0.
pub fn qk_norm_rope_inplace(
    gpu: &Gpu,
    batch: &mut Batch,
    x: &Tensor,
    spec: &QkNormRope,
    tables: &RopeTables,
    pos_offset: usize,
) -> Result<()> {
    const OP: &str = "qk_norm_rope";
    let (q, k) = (spec.q, spec.k);
    let d = spec.norm_q.numel();
    for w in [spec.norm_q, spec.norm_k] {
        expect_f32(OP, w)?;
        if w.numel() != 2 * tables.cos.dim_rev(0) {
            return Err(shape_err(
                OP,
                format!("norm weights of head dim {} (the tables')", tables.head_dim()),
                w.shape(),
            ));
        }
    }
    if q.width != k.width || q.offset.max(k.offset) < (q.offset + q.width).min(k.offset + k.width) {
        return Err(shape_err(OP, "q and k column slices of one width that do not overlap", (q, k)));
    }
    if !spec.eps.is_finite() || spec.eps < 0.0 {
        return Err(Error::InvalidArgument(format!("{OP}: eps must be finite and >= 0, got {}", spec.eps)));
    }
    // Checks x, the tables, the positions and k's slice; q's slice is checked by the same rules.
    params(x, k, tables, pos_offset).map_err(|e| rename(e, OP))?;
    let (rows, p0) = params(x, q, tables, pos_offset).map_err(|e| rename(e, OP))?;
    let heads = q.width / d;
    let groups = u32::try_from(rows * 2 * heads).map_err(|_| Error::LimitExceeded {
        what: format!("{OP}: heads to normalize (32-bit shader indices)"),
        needed: (rows * 2 * heads) as u64,
        available: u32::MAX as u64,
    })?;
    let p = Params { groups, heads: heads as u32, q_off: q.offset as u32, k_off: k.offset as u32, eps: spec.eps, ..p0 };
    let cap = gpu.workgroup_size(256);
    let cap = 1u32 << (31 - cap.leading_zeros());
    let wg = ((d / 2).clamp(32, 256) as u32).next_power_of_two().min(cap);
    // x is bound once, read_write; the read-only input slot gets the cos table as a placeholder.
    let bindings = [&tables.cos, x, &tables.cos, &tables.sin, spec.norm_q, spec.norm_k];
    let mut b = vec![Binding::Uniform(bytemuck::bytes_of(&p))];
    b.extend(bindings.iter().map(|t| Binding::Tensor(t)));
    let grid = grid_1d(groups, gpu.info().max_workgroups_per_dim);
    batch.dispatch(gpu, SHADERS.pick(gpu), "qk_norm_rope", &[("WG", wg as f64), ("INPLACE", 1.0)], &b, grid)
}

/// The shared shape checks report as "rope"; name the fused op instead.
fn rename(e: Error, op: &'static str) -> Error {
    match e {
        Error::ShapeMismatch { expected, got, .. } => Error::ShapeMismatch { op, expected, got },
        other => other,
    }
}
