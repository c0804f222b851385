//! Wrapper for `shaders/attention.wgsl`: multi-head scaled dot-product attention with an online
//! softmax (score matrix never materialized). Reference: `reference::attention`.
//!
//! q, k and v are read in place from 2-D `[L, cols]` tensors at a column offset (head h = columns
//! `off + h*D .. off + h*D + D-1`, BFL `SelfAttention`'s `B L (K H D)` split,
//! src/flux/modules/layers.py @ 802fb47), so a fused qkv `[L, 9216]` or linear1 `[L, 21504]` output feeds the
//! kernel without copies. The only allocation is the output.

use bytemuck::{Pod, Zeroable};

use super::{expect_f32, shape_err, Variant};
use crate::error::{Error, Result};
use crate::gpu::{grid_1d, Batch, Binding, DType, Gpu, ShaderSpec, Tensor};

pub static SHADER: ShaderSpec = ShaderSpec {
    name: "attention",
    sources: &[include_str!("../../shaders/attention.wgsl")],
    needs_f16: false,
    needs_subgroups: false,
};

/// Head dims the models use: CLIP-L and T5-XXL 64, FLUX 128, VAE mid-block 512 (one head).
pub const MODEL_HEAD_DIMS: [usize; 3] = [64, 128, 512];

/// Outputs one invocation may own (`ACC` in the shader).
const ACC: usize = 8;
/// WebGPU's default `maxComputeWorkgroupStorageSize`; the kernel stays within it everywhere.
pub const MAX_WORKGROUP_BYTES: u64 = 16 * 1024;
const WG: u32 = 256;

/// One of q, k, v: a 2-D F32 tensor `[L, cols]` whose heads start at column `col_offset`.
#[derive(Debug, Clone, Copy)]
pub struct AttnInput<'a> {
    pub t: &'a Tensor,
    pub col_offset: usize,
}

impl<'a> AttnInput<'a> {
    pub fn new(t: &'a Tensor, col_offset: usize) -> AttnInput<'a> {
        AttnInput { t, col_offset }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AttnOptions<'a> {
    /// Multiplies q·kᵀ: 1/sqrt(128) FLUX (BFL `attention`, src/flux/math.py @ 802fb47), 1/8 CLIP
    /// (`CLIPAttention.scale`, src/transformers/models/clip/modeling_clip.py @ 679021a), 1.0 T5
    /// (`T5Attention`, src/transformers/models/t5/modeling_t5.py @ 6b8b757), 1/sqrt(512) VAE (BFL
    /// `AttnBlock`, src/flux/modules/autoencoder.py @ 802fb47).
    pub scale: f32,
    /// Query i sees key j iff j <= i (CLIP's causal mask, `CLIPTextTransformer`,
    /// src/transformers/models/clip/modeling_clip.py @ 679021a).
    pub causal: bool,
    /// Added to the scaled scores, F32 `[heads, Lq, Lk]` (T5 relative position bias,
    /// `T5Attention.compute_bias`, src/transformers/models/t5/modeling_t5.py @ 6b8b757).
    pub bias: Option<&'a Tensor>,
}

impl AttnOptions<'static> {
    /// Plain attention scaled by `1/sqrt(head_dim)`, no mask, no bias.
    pub fn for_head_dim(head_dim: usize) -> AttnOptions<'static> {
        AttnOptions { scale: 1.0 / (head_dim.max(1) as f32).sqrt(), causal: false, bias: None }
    }
}

/// Tile shape chosen for a head dim and workgroup size (all values become shader overrides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnConfig {
    pub head_dim: u32,
    pub wg: u32,
    /// Queries per workgroup.
    pub bq: u32,
    /// Keys per tile.
    pub bk: u32,
    /// Slices each score's dot product is split into.
    pub parts: u32,
}

impl AttnConfig {
    /// Largest query block whose outputs fit the invocations' registers (`BQ*D <= ACC*WG`), then
    /// the largest key tile that keeps workgroup memory within `max_bytes`.
    pub fn choose(head_dim: usize, wg: u32, max_bytes: u64) -> Result<AttnConfig> {
        let limit = |needed: u64, available: u64| Error::LimitExceeded {
            what: format!("attention workgroup memory for head dim {head_dim} (bytes)"),
            needed,
            available,
        };
        let d = u32::try_from(head_dim).map_err(|_| limit(u64::MAX, max_bytes))?;
        let wg = wg.max(1);
        let bq = [32u32, 16, 8, 4, 2, 1]
            .into_iter()
            .find(|&bq| (bq as u64) * (d as u64) <= (ACC as u64) * wg as u64)
            .ok_or_else(|| limit(4 * (2 * d as u64 + 2), max_bytes))?;
        let mut smallest = u64::MAX;
        for bk in [32u32, 16, 8, 4, 2, 1] {
            let parts = (wg / (bq * bk)).max(1);
            let c = AttnConfig { head_dim: d, wg, bq, bk, parts };
            let bytes = c.workgroup_bytes();
            smallest = smallest.min(bytes);
            if bytes <= max_bytes {
                return Ok(c);
            }
        }
        Err(limit(smallest, max_bytes))
    }

    /// Workgroup memory the shader declares for this configuration.
    pub fn workgroup_bytes(&self) -> u64 {
        let (ds, bq, bk) = (self.head_dim as u64 + 1, self.bq as u64, self.bk as u64);
        4 * (bq * ds + bk * ds + bq * bk * self.parts as u64 + 3 * bq)
    }

    fn overrides(&self, bias: bool, causal: bool) -> Vec<(&'static str, f64)> {
        vec![
            ("D", self.head_dim as f64),
            ("BQ", self.bq as f64),
            ("BK", self.bk as f64),
            ("WG", self.wg as f64),
            ("P", self.parts as f64),
            ("HAS_BIAS", bias as u32 as f64),
            ("CAUSAL", causal as u32 as f64),
        ]
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    lq: u32,
    lk: u32,
    heads: u32,
    qblocks: u32,
    q_stride: u32,
    q_off: u32,
    k_stride: u32,
    k_off: u32,
    v_stride: u32,
    v_off: u32,
    scale: f32,
    _pad: u32,
}

/// Head dims of the register-tiled entry `attention_tiled` (FLUX 128, CLIP/T5 64).
pub const TILED_HEAD_DIMS: [usize; 2] = [64, 128];
/// Workgroup memory of `attention_tiled`: xs, (64 + 32) rows × 9 vec4s.
pub const TILED_WORKGROUP_BYTES: u64 = (64 + 32) * 9 * 16;
const TILED_WG: u32 = 256;
/// Queries per workgroup of `attention_tiled` (`TQ` in the shader).
const TILED_BQ: usize = 64;

/// Which kernel runs: `Auto` takes `attention_tiled` where it applies (head dim 64/128, no bias,
/// no mask, 256 invocations and its workgroup memory available) and the general kernel
/// otherwise; `General` forces the general kernel (A/B benchmarks, tests of the fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttnPath {
    #[default]
    Auto,
    General,
}

/// Whether `attention` runs the register-tiled kernel for this head dim and these options on `gpu`.
pub fn tiled_applies(gpu: &Gpu, head_dim: usize, opts: &AttnOptions) -> bool {
    let info = gpu.info();
    TILED_HEAD_DIMS.contains(&head_dim)
        && opts.bias.is_none()
        && !opts.causal
        && gpu.workgroup_size(TILED_WG) == TILED_WG
        && TILED_WORKGROUP_BYTES <= MAX_WORKGROUP_BYTES.min(info.max_workgroup_storage as u64)
}

/// The model head dims × {bias, causal}, at the default workgroup size, plus the tiled entry.
pub fn variants() -> Vec<Variant> {
    let mut v: Vec<Variant> = TILED_HEAD_DIMS
        .iter()
        .map(|&d| Variant { entry: "attention_tiled", overrides: vec![("D", d as f64)] })
        .collect();
    for d in MODEL_HEAD_DIMS {
        if let Ok(c) = AttnConfig::choose(d, WG, MAX_WORKGROUP_BYTES) {
            for (bias, causal) in [(false, false), (true, false), (false, true), (true, true)] {
                v.push(Variant { entry: "attention", overrides: c.overrides(bias, causal) });
            }
        }
    }
    v
}

/// GPU bytes the wrapper allocates for these shapes: the `[Lq, heads*head_dim]` output and
/// nothing else (no score matrix, no scratch), i.e. linear in the token count.
pub fn attention_bytes(lq: usize, heads: usize, head_dim: usize) -> u64 {
    DType::F32.gpu_bytes(lq * heads * head_dim) as u64
}

/// Rows, checked: 2-D F32 with `col_offset + heads*head_dim <= cols`.
fn check_input(op: &'static str, name: &str, x: &AttnInput, width: usize) -> Result<usize> {
    expect_f32(op, x.t)?;
    let shape = x.t.shape();
    if shape.len() != 2 {
        return Err(shape_err(op, format!("{name} as a 2-D [tokens, columns] tensor"), shape));
    }
    if x.col_offset + width > shape[1] {
        return Err(shape_err(
            op,
            format!("{name}: column offset {} + heads*head_dim {width} <= columns", x.col_offset),
            shape,
        ));
    }
    Ok(shape[0])
}

fn to_u32(what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::LimitExceeded {
        what: format!("attention: {what}"),
        needed: n as u64,
        available: u32::MAX as u64,
    })
}

/// `softmax(scale · q·kᵀ + bias, masked) · v` per head; returns `[Lq, heads*head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    gpu: &Gpu,
    batch: &mut Batch,
    q: AttnInput,
    k: AttnInput,
    v: AttnInput,
    heads: usize,
    head_dim: usize,
    opts: &AttnOptions,
) -> Result<Tensor> {
    attention_with(gpu, batch, q, k, v, heads, head_dim, opts, AttnPath::Auto)
}

/// [`attention`] with the kernel choice made explicit.
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    gpu: &Gpu,
    batch: &mut Batch,
    q: AttnInput,
    k: AttnInput,
    v: AttnInput,
    heads: usize,
    head_dim: usize,
    opts: &AttnOptions,
    path: AttnPath,
) -> Result<Tensor> {
    const OP: &str = "attention";
    if heads == 0 || head_dim == 0 {
        return Err(shape_err(OP, "heads >= 1 and head_dim >= 1", (heads, head_dim)));
    }
    let width = heads * head_dim;
    let lq = check_input(OP, "q", &q, width)?;
    let lk = check_input(OP, "k", &k, width)?;
    let lv = check_input(OP, "v", &v, width)?;
    if lv != lk {
        return Err(shape_err(OP, format!("v with as many rows as k ({lk})"), v.t.shape()));
    }
    if lk == 0 {
        return Err(shape_err(OP, "at least one key", k.t.shape()));
    }
    if let Some(b) = opts.bias {
        expect_f32(OP, b)?;
        if b.shape() != [heads, lq, lk] {
            return Err(shape_err(OP, format!("bias of shape [{heads}, {lq}, {lk}] (heads, Lq, Lk)"), b.shape()));
        }
    }
    if !opts.scale.is_finite() {
        return Err(Error::InvalidArgument(format!("attention: scale must be finite, got {}", opts.scale)));
    }
    let info = gpu.info();
    let max_bytes = MAX_WORKGROUP_BYTES.min(info.max_workgroup_storage as u64);
    let tiled = path == AttnPath::Auto && tiled_applies(gpu, head_dim, opts);
    let (entry, overrides, bq) = if tiled {
        ("attention_tiled", vec![("D", head_dim as f64)], TILED_BQ)
    } else {
        let cfg = AttnConfig::choose(head_dim, gpu.workgroup_size(WG), max_bytes)?;
        ("attention", cfg.overrides(opts.bias.is_some(), opts.causal), cfg.bq as usize)
    };

    let out = gpu.empty(&[lq, width], DType::F32)?;
    let qblocks = lq.div_ceil(bq);
    let p = Params {
        lq: to_u32("query rows", lq)?,
        lk: to_u32("key rows", lk)?,
        heads: to_u32("heads", heads)?,
        qblocks: to_u32("query blocks", qblocks)?,
        q_stride: to_u32("q columns", q.t.shape()[1])?,
        q_off: to_u32("q offset", q.col_offset)?,
        k_stride: to_u32("k columns", k.t.shape()[1])?,
        k_off: to_u32("k offset", k.col_offset)?,
        v_stride: to_u32("v columns", v.t.shape()[1])?,
        v_off: to_u32("v offset", v.col_offset)?,
        scale: opts.scale,
        _pad: 0,
    };
    // Index arithmetic in the shader is u32: every element index must fit.
    for (name, t) in [("q", q.t), ("k", k.t), ("v", v.t), ("output", &out)] {
        to_u32(&format!("{name} elements"), t.numel())?;
    }
    if let Some(b) = opts.bias {
        to_u32("bias elements", b.numel())?;
    }
    let groups = to_u32("workgroups", qblocks * heads)?;
    let grid = grid_1d(groups, info.max_workgroups_per_dim);
    // Without a bias the binding still needs a buffer; q is bound read-only a second time.
    let bias = opts.bias.unwrap_or(q.t);
    let bindings = [
        Binding::Uniform(bytemuck::bytes_of(&p)),
        Binding::Tensor(q.t),
        Binding::Tensor(k.t),
        Binding::Tensor(v.t),
        Binding::Tensor(&out),
        Binding::Tensor(bias),
    ];
    // The tiled entry never reads the bias, so its layout (derived from the shader) lacks binding 5.
    let used = if tiled { &bindings[..5] } else { &bindings[..] };
    batch.dispatch(gpu, &SHADER, entry, &overrides, used, grid)?;
    Ok(out)
}
