//! Wrapper for `shaders/matmul.wgsl`: `y = epi(x·Wᵀ + b + LoRA)` with the
//! weight in any `DType` weight format, dequantized inside the kernel.
//! Reference: `reference::matmul`. LoRA adapters stay separate from the
//! (quantized) base weight: see [`LoraStack`].

use bytemuck::{Pod, Zeroable};

use super::elementwise::Activation;
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
};

/// The same kernel with f16 tiles and products (f32 accumulation); needs `shader-f16`.
pub static SHADER_F16: ShaderSpec = ShaderSpec {
    name: "matmul_f16",
    sources: &[include_str!("../../shaders/precision_f16.wgsl"), QUANT, ACT, MATMUL],
    needs_f16: true,
};

const TILE: usize = 64;
pub const MAX_ADAPTERS: usize = 8;

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
            return Err(Error::InvalidArgument(format!("a LoRA stack holds 1..={MAX_ADAPTERS} adapters, got {}", parts.len())));
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (pa, pb, s) in parts {
            if pa.len() != s.rank * k || pb.len() != s.len * s.rank || s.rank == 0 {
                return Err(shape_err("lora", format!("A [{}, {k}] and B [{}, {}]", s.rank, s.len, s.rank), (pa.len(), pb.len())));
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
    adapters: [AdapterParams; MAX_ADAPTERS],
}

fn overrides(format: DType, x_half: bool, bias: bool, act: Activation, gated: bool, adapters: usize) -> Vec<(&'static str, f64)> {
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

fn u32_of(what: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| shape_err("matmul", format!("{what} < 2^32"), v))
}

/// `x` `[.., K]` (F32, or F16 storage) times `w` `[N, K]` (any weight format) → `[.., N]` in x's dtype.
pub fn matmul(gpu: &Gpu, batch: &mut Batch, x: &Tensor, w: &Tensor, epi: &Epilogue) -> Result<Tensor> {
    let (k, m) = (x.dim_rev(0), x.rows());
    if w.shape().len() != 2 || w.shape()[1] != k {
        return Err(shape_err("matmul", format!("a weight [N, {k}] for x {:?}", x.shape()), w.shape()));
    }
    let n = w.shape()[0];
    if !DType::WEIGHT_FORMATS.contains(&w.dtype()) {
        return Err(Error::UnsupportedFormat { op: "matmul", format: w.dtype().to_string(), why: "not a weight format".into() });
    }
    if w.dtype().is_quantized() && k % w.dtype().block_elems() != 0 {
        return Err(shape_err("matmul", format!("K a multiple of {} for {}", w.dtype().block_elems(), w.dtype()), k));
    }
    let x_half = match x.dtype() {
        DType::F32 => false,
        DType::F16 => true,
        other => return Err(Error::UnsupportedFormat { op: "matmul", format: other.to_string(), why: "activations are F32 or F16".into() }),
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
            return Err(shape_err("matmul residual", format!("{:?} {}", y.shape(), y.dtype()), (g.residual.shape(), g.residual.dtype())));
        }
        if g.gate.dtype() != DType::F32 || g.offset + n > g.gate.numel() {
            return Err(shape_err("matmul gate", format!("F32 with {} values from offset {}", n, g.offset), g.gate.shape()));
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
        adapters: [AdapterParams::default(); MAX_ADAPTERS],
    };

    // LoRA: T = x · A_stackᵀ first (same kernel, F32 weight, no epilogue).
    let t = match epi.lora {
        Some(stack) => {
            if stack.a.shape()[1] != k {
                return Err(shape_err("matmul lora A", format!("[R, {k}]"), stack.a.shape()));
            }
            let x32 = if x_half { Err(Error::UnsupportedFormat { op: "matmul lora", format: "F16".into(), why: "LoRA needs F32 activations".into() }) } else { Ok(x) }?;
            let t = matmul(gpu, batch, x32, &stack.a, &Epilogue::default())?;
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
    let grid = [n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, 1];
    batch.dispatch(
        gpu,
        spec,
        "main",
        &ov,
        &[
            Binding::Uniform(bytemuck::bytes_of(&params)),
            Binding::Tensor(x),
            Binding::Tensor(w),
            Binding::Tensor(epi.bias.unwrap_or(&dummy)),
            Binding::Tensor(&y),
            Binding::Tensor(epi.gate.as_ref().map_or(&dummy, |g| g.residual)),
            Binding::Tensor(epi.gate.as_ref().map_or(&dummy, |g| g.gate)),
            Binding::Tensor(t.as_ref().unwrap_or(&dummy)),
            Binding::Tensor(epi.lora.map_or(&dummy, |s| &s.b)),
        ],
        grid,
    )?;
    Ok(y)
}
