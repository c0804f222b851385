//! Wrapper for `shaders/matmul.wgsl`: `y = epi(x·Wᵀ + b + LoRA)` with the
//! weight in any `DType` weight format, dequantized inside the kernel.
//! Reference: `reference::matmul`. LoRA adapters stay separate from the
//! (quantized) base weight: see [`LoraStack`].
//! Kernels: matmul.wgsl's workgroup-memory tiles everywhere, except on CPU adapters with 8-lane
//! subgroups (lavapipe), where matmul_sg.wgsl (register tiles fed by subgroup broadcasts and
//! 16-byte loads) is chosen for K a multiple of 32 ([`sg_applies`], [`MatmulPath`]).

use bytemuck::{Pod, Zeroable};

use super::elementwise::Activation;
use super::matmul_chunks::{chunks, rows_binding, vec4_binding};
use super::{shape_err, Variant};
use crate::error::{Error, Result};
use crate::gpu::{Batch, Binding, DType, Gpu, ShaderSpec, Tensor};

const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
const QUANT: &str = include_str!("../../shaders/quant.wgsl");
const ACT: &str = include_str!("../../shaders/activations.wgsl");

pub static SHADER: ShaderSpec = ShaderSpec {
    name: "matmul",
    sources: &[include_str!("../../shaders/precision_f32.wgsl"), QUANT, ACT, MATMUL],
    needs_f16: false,
    needs_subgroups: false,
};

/// The same kernel with f16 tiles and products (f32 accumulation); needs `shader-f16`.
pub static SHADER_F16: ShaderSpec = ShaderSpec {
    name: "matmul_f16",
    sources: &[include_str!("../../shaders/precision_f16.wgsl"), QUANT, ACT, MATMUL],
    needs_f16: true,
    needs_subgroups: false,
};

/// The kernel for CPU adapters with 8-lane subgroups (lavapipe): `shaders/matmul_sg.wgsl`
/// appended to the same program, so bindings, params and epilogue are shared. Built only where
/// the adapter has subgroups (naga rejects `subgroupBroadcast` otherwise).
pub static SHADER_SG: ShaderSpec = ShaderSpec {
    name: "matmul_sg",
    sources: &[
        include_str!("../../shaders/precision_f32.wgsl"),
        QUANT,
        ACT,
        MATMUL,
        include_str!("../../shaders/matmul_sg.wgsl"),
    ],
    needs_f16: false,
    needs_subgroups: true,
};

const TILE: usize = 64;
/// matmul_sg.wgsl: a subgroup owns 8 rows × 32 columns; the workgroup stacks `sgs` subgroups along M.
const SG_LANES: u32 = 8;
const SG_COLS: usize = 32;
/// Subgroups per workgroup on CPU adapters: 4 (32 rows) measured best on lavapipe (BENCHMARKS.md).
const SG_PER_WORKGROUP: u32 = 4;
pub const MAX_ADAPTERS: usize = 8;

/// Which kernel runs the product ([`matmul_with`]); [`matmul`] uses `Auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatmulPath {
    /// `Subgroup` where it applies (see [`sg_applies`]), else `Tiled`.
    #[default]
    Auto,
    /// matmul.wgsl's workgroup-memory tiles (every adapter, every shape).
    Tiled,
    /// matmul_sg.wgsl where it applies, else `Tiled` (for tests and A/B timings on CPU adapters).
    Subgroup,
}

/// Subgroups per workgroup for matmul_sg.wgsl on this adapter, or None where it does not apply: it
/// needs subgroups of exactly 8 lanes (its register tile is 8 rows, one per lane), f32 tiles, K a
/// multiple of 32 (whole blocks, 16-byte aligned rows). `cpu_only`: only on CPU adapters, where
/// loads cost one per lane and this kernel wins (Auto); GPUs keep the workgroup-memory tiles.
pub fn sg_applies(gpu: &Gpu, k: usize, precision: Precision, cpu_only: bool) -> Option<u32> {
    let info = gpu.info();
    let fits = gpu.features().subgroups && info.subgroup_min_size == SG_LANES && info.subgroup_max_size == SG_LANES;
    if !fits || precision != Precision::F32 || !k.is_multiple_of(32) || (cpu_only && info.device_type != "Cpu") {
        return None;
    }
    let sgs = gpu.workgroup_size(SG_LANES * SG_PER_WORKGROUP) / SG_LANES;
    (sgs > 0).then_some(sgs)
}

/// Arithmetic inside the tiles. `F16` is faster where the adapter has `shader-f16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    F16,
}

/// Gated residual epilogue: `y = residual + gate[offset..offset+N] ⊙ y`.
pub struct Gate<'a> {
    pub residual: &'a Tensor,
    pub gate: &'a Tensor,
    pub offset: usize,
}

#[derive(Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a Tensor>,
    pub lora: Option<&'a LoraStack>,
    pub act: Option<Activation>,
    pub gate: Option<Gate<'a>>,
    pub precision: Precision,
}

/// One adapter's place in a [`LoraStack`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdapterSlice {
    /// First output feature (row of W) the adapter writes, e.g. 3072 for k of a fused qkv.
    pub n0: usize,
    pub len: usize,
    pub rank: usize,
    pub scale: f32,
}

/// The LoRA adapters applied to one weight: all `A` matrices stacked into one
/// `[R_total, K]` tensor (one down-projection dispatch for all of them) and
/// all `B` matrices (`[len_i, rank_i]` each) concatenated. Scales live on the
/// CPU side: rescaling needs no upload.
pub struct LoraStack {
    pub a: Tensor,
    pub b: Tensor,
    pub adapters: Vec<AdapterSlice>,
}

impl LoraStack {
    /// `parts`: for each adapter its `A` (`[rank, K]` row-major), `B` (`[len, rank]`) and slice.
    pub fn new(gpu: &Gpu, k: usize, parts: &[(&[f32], &[f32], AdapterSlice)]) -> Result<LoraStack> {
        if parts.is_empty() || parts.len() > MAX_ADAPTERS {
            return Err(Error::InvalidArgument(format!(
                "a LoRA stack holds 1..={MAX_ADAPTERS} adapters, got {}",
                parts.len()
            )));
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (pa, pb, s) in parts {
            if pa.len() != s.rank * k || pb.len() != s.len * s.rank || s.rank == 0 {
                return Err(shape_err(
                    "lora",
                    format!("A [{}, {k}] and B [{}, {}]", s.rank, s.len, s.rank),
                    (pa.len(), pb.len()),
                ));
            }
            a.extend_from_slice(pa);
            b.extend_from_slice(pb);
        }
        let r_total: usize = parts.iter().map(|p| p.2.rank).sum();
        Ok(LoraStack {
            a: gpu.upload_f32(&[r_total, k], &a)?,
            b: gpu.upload_f32(&[b.len()], &b)?,
            adapters: parts.iter().map(|p| p.2).collect(),
        })
    }

    pub fn rank_total(&self) -> usize {
        self.adapters.iter().map(|a| a.rank).sum()
    }

    pub fn set_scale(&mut self, i: usize, scale: f32) {
        if let Some(a) = self.adapters.get_mut(i) {
            a.scale = scale;
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct AdapterParams {
    n0: u32,
    len: u32,
    t_col: u32,
    rank: u32,
    b_off: u32,
    scale: f32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    x_stride: u32,
    y_stride: u32,
    y_col0: u32,
    t_stride: u32,
    gate_off: u32,
    m_base: u32,
    n_base: u32,
    _pad: [u32; 2],
    adapters: [AdapterParams; MAX_ADAPTERS],
}

fn overrides(
    format: DType,
    x_half: bool,
    bias: bool,
    act: Activation,
    gated: bool,
    adapters: usize,
) -> Vec<(&'static str, f64)> {
    vec![
        ("FORMAT", format.shader_id() as f64),
        ("X_HALF", x_half as u32 as f64),
        ("HAS_BIAS", bias as u32 as f64),
        ("ACT", act as u32 as f64),
        ("GATED", gated as u32 as f64),
        ("ADAPTERS", adapters as f64),
    ]
}

/// Variants for shader validation: every weight format, both activation storages, plain and full epilogue.
pub fn variants(f16_tiles: bool) -> Vec<Variant> {
    let _ = f16_tiles; // both programs use the same override sets
    let mut v = Vec::new();
    for f in DType::WEIGHT_FORMATS {
        for x_half in [false, true] {
            v.push(Variant { entry: "main", overrides: overrides(f, x_half, false, Activation::None, false, 0) });
            v.push(Variant { entry: "main", overrides: overrides(f, x_half, true, Activation::GeluTanh, true, 2) });
        }
    }
    v
}

/// Variants of [`SHADER_SG`]: its entry with the same override sets, plus the workgroup's subgroup count.
pub fn variants_sg() -> Vec<Variant> {
    let mut v = variants(false);
    for var in &mut v {
        var.entry = "main_sg";
        var.overrides.push(("SGS", SG_PER_WORKGROUP as f64));
    }
    v
}

fn u32_of(what: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| shape_err("matmul", format!("{what} < 2^32"), v))
}

/// `x` `[.., K]` (F32, or F16 storage) times `w` `[N, K]` (any weight format) → `[.., N]` in x's dtype.
pub fn matmul(gpu: &Gpu, batch: &mut Batch, x: &Tensor, w: &Tensor, epi: &Epilogue) -> Result<Tensor> {
    matmul_with(gpu, batch, x, w, epi, MatmulPath::Auto)
}

/// [`matmul`] with the kernel chosen by `path` (the cooperative-matrix path is tried first either way).
pub fn matmul_with(
    gpu: &Gpu,
    batch: &mut Batch,
    x: &Tensor,
    w: &Tensor,
    epi: &Epilogue,
    path: MatmulPath,
) -> Result<Tensor> {
    // Cooperative matrices (tensor cores) where the device has them and the call suits them;
    // everything else, and every adapter without them, runs the FMA kernel below.
    if let Some(y) = super::matmul_coop::try_matmul(gpu, batch, x, w, epi)? {
        return Ok(y);
    }
    let (k, m) = (x.dim_rev(0), x.rows());
    if w.shape().len() != 2 || w.shape()[1] != k {
        return Err(shape_err("matmul", format!("a weight [N, {k}] for x {:?}", x.shape()), w.shape()));
    }
    let n = w.shape()[0];
    if !DType::WEIGHT_FORMATS.contains(&w.dtype()) {
        return Err(Error::UnsupportedFormat {
            op: "matmul",
            format: w.dtype().to_string(),
            why: "not a weight format".into(),
        });
    }
    if w.dtype().is_quantized() && k % w.dtype().block_elems() != 0 {
        return Err(shape_err("matmul", format!("K a multiple of {} for {}", w.dtype().block_elems(), w.dtype()), k));
    }
    let x_half = match x.dtype() {
        DType::F32 => false,
        DType::F16 => true,
        other => {
            return Err(Error::UnsupportedFormat {
                op: "matmul",
                format: other.to_string(),
                why: "activations are F32 or F16".into(),
            })
        }
    };
    if x_half && n % 2 == 1 {
        return Err(shape_err("matmul", "an even N for F16 activations", n));
    }
    let spec = match epi.precision {
        Precision::F32 => &SHADER,
        Precision::F16 if gpu.features().shader_f16 => &SHADER_F16,
        Precision::F16 => return Err(Error::MissingFeature { op: "matmul (f16 tiles)", feature: "shader-f16" }),
    };
    let mut out_shape = x.shape().to_vec();
    if let Some(last) = out_shape.last_mut() {
        *last = n;
    } else {
        out_shape = vec![n];
    }
    let y = gpu.empty(&out_shape, x.dtype())?;
    let dummy = gpu.empty(&[4], DType::F32)?;

    if let Some(b) = epi.bias {
        if b.dtype() != DType::F32 || b.numel() != n {
            return Err(shape_err("matmul bias", format!("F32 [{n}]"), (b.shape(), b.dtype())));
        }
    }
    let mut gate_off = 0;
    if let Some(g) = &epi.gate {
        if g.residual.shape() != y.shape() || g.residual.dtype() != y.dtype() {
            return Err(shape_err(
                "matmul residual",
                format!("{:?} {}", y.shape(), y.dtype()),
                (g.residual.shape(), g.residual.dtype()),
            ));
        }
        if g.gate.dtype() != DType::F32 || g.offset + n > g.gate.numel() {
            return Err(shape_err(
                "matmul gate",
                format!("F32 with {} values from offset {}", n, g.offset),
                g.gate.shape(),
            ));
        }
        gate_off = u32_of("gate offset", g.offset)?;
    }

    let mut params = Params {
        m: u32_of("M", m)?,
        n: u32_of("N", n)?,
        k: u32_of("K", k)?,
        x_stride: u32_of("K", k)?,
        y_stride: u32_of("N", n)?,
        y_col0: 0,
        t_stride: 0,
        gate_off,
        m_base: 0,
        n_base: 0,
        _pad: [0; 2],
        adapters: [AdapterParams::default(); MAX_ADAPTERS],
    };

    // LoRA: T = x · A_stackᵀ first (same kernel, F32 weight, no epilogue).
    let t = match epi.lora {
        Some(stack) => {
            if stack.a.shape()[1] != k {
                return Err(shape_err("matmul lora A", format!("[R, {k}]"), stack.a.shape()));
            }
            let x32 = if x_half {
                Err(Error::UnsupportedFormat {
                    op: "matmul lora",
                    format: "F16".into(),
                    why: "LoRA needs F32 activations".into(),
                })
            } else {
                Ok(x)
            }?;
            let t = matmul_with(gpu, batch, x32, &stack.a, &Epilogue::default(), path)?;
            let (mut t_col, mut b_off) = (0, 0);
            for (i, a) in stack.adapters.iter().enumerate() {
                if a.n0 + a.len > n {
                    return Err(shape_err("matmul lora", format!("an adapter slice inside [0, {n})"), (a.n0, a.len)));
                }
                params.adapters[i] = AdapterParams {
                    n0: a.n0 as u32,
                    len: a.len as u32,
                    t_col,
                    rank: a.rank as u32,
                    b_off,
                    scale: a.scale,
                    _pad: [0; 2],
                };
                t_col += a.rank as u32;
                b_off += (a.len * a.rank) as u32;
            }
            params.t_stride = t_col;
            Some(t)
        }
        None => None,
    };

    let ov = overrides(
        w.dtype(),
        x_half,
        epi.bias.is_some(),
        epi.act.unwrap_or(Activation::None),
        epi.gate.is_some(),
        epi.lora.map_or(0, |s| s.adapters.len()),
    );
    // Tensors larger than one storage binding are processed in row blocks of x/y and of W.
    let elem = if x_half { 2 } else { 4 };
    let (m_chunk, n_chunk) = chunks(gpu, m, n, k * elem, n * elem, w.dtype().gpu_bytes(k))?;
    let whole = m_chunk == m && n_chunk == n;
    let sgs = match path {
        MatmulPath::Tiled => None,
        MatmulPath::Auto | MatmulPath::Subgroup => sg_applies(gpu, k, epi.precision, path == MatmulPath::Auto),
    };
    let mut ov_sg = ov.clone();
    ov_sg.push(("SGS", sgs.unwrap_or(1) as f64));
    for m0 in (0..m).step_by(m_chunk) {
        let mc = m_chunk.min(m - m0);
        for n0 in (0..n).step_by(n_chunk) {
            let nc = n_chunk.min(n - n0);
            let mut p = params;
            (p.m, p.n, p.m_base, p.n_base) = (mc as u32, nc as u32, m0 as u32, n0 as u32);
            let bind = |t, row0, rows, row_bytes| rows_binding(t, whole, row0, rows, row_bytes);
            let bindings = [
                Binding::Uniform(bytemuck::bytes_of(&p)),
                bind(x, m0, mc, k * elem),
                bind(w, n0, nc, w.dtype().gpu_bytes(k)),
                Binding::Tensor(epi.bias.unwrap_or(&dummy)),
                bind(&y, m0, mc, n * elem),
                match &epi.gate {
                    Some(g) => bind(g.residual, m0, mc, n * elem),
                    None => Binding::Tensor(&dummy),
                },
                Binding::Tensor(epi.gate.as_ref().map_or(&dummy, |g| g.gate)),
                Binding::Tensor(t.as_ref().unwrap_or(&dummy)),
                Binding::Tensor(epi.lora.map_or(&dummy, |s| &s.b)),
            ];
            // matmul_sg.wgsl also reads x and W as 16-byte vectors (bindings 9, 10: the same ranges).
            let vec4s = sgs.and_then(|_| {
                Some([
                    vec4_binding(x, whole, m0, mc, k * elem)?,
                    vec4_binding(w, whole, n0, nc, w.dtype().gpu_bytes(k))?,
                ])
            });
            match (sgs, vec4s) {
                (Some(sgs), Some([x4, w4])) => {
                    let rows = (SG_LANES * sgs) as usize;
                    let grid = [nc.div_ceil(SG_COLS) as u32, mc.div_ceil(rows) as u32, 1];
                    let [b0, b1, b2, b3, b4, b5, b6, b7, b8] = bindings;
                    batch.dispatch(
                        gpu,
                        &SHADER_SG,
                        "main_sg",
                        &ov_sg,
                        &[b0, b1, b2, b3, b4, b5, b6, b7, b8, w4, x4],
                        grid,
                    )?;
                }
                _ => {
                    let grid = [nc.div_ceil(TILE) as u32, mc.div_ceil(TILE) as u32, 1];
                    batch.dispatch(gpu, spec, "main", &ov, &bindings, grid)?;
                }
            }
        }
    }
    Ok(y)
}
