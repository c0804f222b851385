//! Wrapper for `shaders/matmul_coop.wgsl`: `y = epi(x·Wᵀ + b)` on cooperative matrices (tensor
//! cores), for every weight format (dequantized into workgroup memory once per tile, as the FMA
//! kernel does). Reference: `reference::matmul`; the FMA kernel `kernels::matmul` is the fallback.
//!
//! [`kernels::matmul::matmul`](super::matmul::matmul) calls [`try_matmul`] first: the cooperative
//! path is taken only when [`select`] finds it usable for the call, i.e. the device enabled a
//! cooperative-matrix configuration (`GpuFeatures::cooperative_matrix`, see `gpu::GpuOptions`:
//! `ICLORA_NO_COOP=1` turns it off) and
//! - the configuration has f32 operands, or f16 operands and the caller asked for
//!   `Precision::F16` (it already accepts f16 rounding of x and W; accumulation stays f32);
//! - the workgroup can be exactly one subgroup (the adapter's subgroup size is fixed), since
//!   cooperative matrices have subgroup scope and WGSL cannot name a subgroup inside a workgroup;
//! - no LoRA: the low-rank epilogue stays on the FMA kernel (it needs the T = x·Aᵀ pre-pass and a
//!   per-element epilogue of its own; LoRA's products are thin, so there is little to gain);
//! - x, W, y (and a residual) each fit one storage binding (no row-block splitting here);
//! - shapes and formats are valid: anything else falls back so the FMA kernel's checks report it.

use bytemuck::{Pod, Zeroable};

use super::elementwise::Activation;
use super::matmul::{Epilogue, Precision};
use super::Variant;
use crate::error::{Error, Result};
use crate::gpu::{Batch, Binding, CoopScalar, DType, Gpu, ShaderSpec, Tensor};

const MATMUL_COOP: &str = include_str!("../../shaders/matmul_coop.wgsl");
const QUANT: &str = include_str!("../../shaders/quant.wgsl");
const ACT: &str = include_str!("../../shaders/activations.wgsl");

/// 16×16×16 tiles, f16 operands, f32 accumulation (NVIDIA tensor cores, AMD WMMA).
pub static SHADER_F16X16: ShaderSpec = ShaderSpec {
    name: "matmul_coop_f16x16",
    sources: &[include_str!("../../shaders/coop_f16x16.wgsl"), QUANT, ACT, MATMUL_COOP],
    needs_f16: true,
    needs_subgroups: false,
};

/// 8×8×8 tiles, f32 operands and accumulation (Metal simdgroup matrices).
pub static SHADER_F32X8: ShaderSpec = ShaderSpec {
    name: "matmul_coop_f32x8",
    sources: &[include_str!("../../shaders/coop_f32x8.wgsl"), QUANT, ACT, MATMUL_COOP],
    needs_f16: false,
    needs_subgroups: false,
};

/// Why a call does not take the cooperative path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The device has no cooperative-matrix configuration the kernel can use (or it was turned off).
    NoAdapterSupport,
    /// The adapter's subgroup size is not fixed, unknown, or above the workgroup limits.
    SubgroupSize,
    /// f16 operands, but the caller asked for f32 tiles.
    Precision,
    Lora,
    /// A tensor exceeds one storage binding or the grid exceeds the dispatch limit.
    TooLarge,
    /// Shapes or formats the FMA kernel will reject with a typed error.
    InvalidInput,
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fallback::NoAdapterSupport => "adapter lacks cooperative matrix",
            Fallback::SubgroupSize => "adapter's subgroup size is not fixed",
            Fallback::Precision => "f16 operands need Precision::F16",
            Fallback::Lora => "LoRA epilogues use the FMA kernel",
            Fallback::TooLarge => "a tensor exceeds one storage binding",
            Fallback::InvalidInput => "invalid shapes or formats",
        })
    }
}

/// What [`select`] chose: the program, the workgroup (= subgroup) size and the output tile side.
#[derive(Debug, Clone, Copy)]
pub struct CoopPlan {
    pub spec: &'static ShaderSpec,
    pub wg: u32,
    pub tile: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    gate_off: u32,
}

fn overrides(
    format: DType,
    x_half: bool,
    bias: bool,
    act: Activation,
    gated: bool,
    wg: u32,
) -> Vec<(&'static str, f64)> {
    vec![
        ("FORMAT", format.shader_id() as f64),
        ("X_HALF", x_half as u32 as f64),
        ("HAS_BIAS", bias as u32 as f64),
        ("ACT", act as u32 as f64),
        ("GATED", gated as u32 as f64),
        ("WG", wg as f64),
    ]
}

/// Variants for shader validation (either program): every weight format, both activation
/// storages, plain and full epilogue, at subgroup size 32 (NVIDIA, Apple), plus 64 and 16.
pub fn variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for f in DType::WEIGHT_FORMATS {
        for x_half in [false, true] {
            v.push(Variant { entry: "main", overrides: overrides(f, x_half, false, Activation::None, false, 32) });
            v.push(Variant { entry: "main", overrides: overrides(f, x_half, true, Activation::GeluTanh, true, 32) });
        }
    }
    for wg in [16, 64] {
        v.push(Variant { entry: "main", overrides: overrides(DType::Q4_0, false, true, Activation::Silu, false, wg) });
    }
    v
}

/// Whether `matmul(x, w, epi)` would run on cooperative matrices on this device, and if not, why.
pub fn select(gpu: &Gpu, x: &Tensor, w: &Tensor, epi: &Epilogue) -> std::result::Result<CoopPlan, Fallback> {
    // Destructured without `..`: an epilogue field added to `Epilogue` fails to compile here
    // until this path either implements it or falls back for it.
    let Epilogue { bias, lora, act: _, gate, precision } = epi;
    let cfg = gpu.features().cooperative_matrix.ok_or(Fallback::NoAdapterSupport)?;
    let spec = match (cfg.ab, cfg.m) {
        (CoopScalar::F16, 16) => &SHADER_F16X16,
        (CoopScalar::F32, 8) => &SHADER_F32X8,
        _ => return Err(Fallback::NoAdapterSupport),
    };
    if cfg.ab == CoopScalar::F16 && *precision != Precision::F16 {
        return Err(Fallback::Precision);
    }
    let info = gpu.info();
    let wg = info.subgroup_max_size;
    if wg == 0 || info.subgroup_min_size != wg || wg > info.max_invocations || wg > info.max_workgroup_size_x {
        return Err(Fallback::SubgroupSize);
    }
    if lora.is_some() {
        return Err(Fallback::Lora);
    }
    let k = x.dim_rev(0);
    let m = x.rows();
    let elem = match x.dtype() {
        DType::F32 => 4,
        DType::F16 => 2,
        _ => return Err(Fallback::InvalidInput),
    };
    if w.shape().len() != 2 || w.shape()[1] != k || !DType::WEIGHT_FORMATS.contains(&w.dtype()) {
        return Err(Fallback::InvalidInput);
    }
    let n = w.shape()[0];
    let quant_k_bad = w.dtype().is_quantized() && !k.is_multiple_of(w.dtype().block_elems());
    let bias_bad = bias.is_some_and(|b| b.dtype() != DType::F32 || b.numel() != n);
    let mut y_shape = x.shape().to_vec();
    if let Some(last) = y_shape.last_mut() {
        *last = n;
    }
    let gate_bad = gate.as_ref().is_some_and(|g| {
        g.residual.dtype() != x.dtype()
            || g.residual.shape() != y_shape
            || g.gate.dtype() != DType::F32
            || g.offset + n > g.gate.numel()
    });
    if m == 0 || n == 0 || k == 0 || quant_k_bad || bias_bad || gate_bad || (elem == 2 && n % 2 == 1) {
        return Err(Fallback::InvalidInput);
    }
    let tile = 2 * cfg.m as usize;
    let limit = info.max_storage_binding as usize;
    let max_dim = info.max_workgroups_per_dim as usize;
    let too_big = [m * k * elem, m * n * elem, w.dtype().gpu_bytes(n * k)].iter().any(|&b| b > limit)
        || n.div_ceil(tile) > max_dim
        || m.div_ceil(tile) > max_dim
        || u32::try_from(m.max(n).max(k)).is_err();
    if too_big {
        return Err(Fallback::TooLarge);
    }
    Ok(CoopPlan { spec, wg, tile })
}

/// The hook at the top of `kernels::matmul::matmul`: `Some(y)` when the cooperative path ran,
/// `None` when the FMA kernel should (see [`select`]).
pub fn try_matmul(gpu: &Gpu, batch: &mut Batch, x: &Tensor, w: &Tensor, epi: &Epilogue) -> Result<Option<Tensor>> {
    match select(gpu, x, w, epi) {
        Ok(plan) => dispatch(gpu, batch, x, w, epi, plan).map(Some),
        Err(_) => Ok(None),
    }
}

/// The cooperative path only (benchmarks, tests): an error where [`select`] would fall back.
pub fn matmul_coop(gpu: &Gpu, batch: &mut Batch, x: &Tensor, w: &Tensor, epi: &Epilogue) -> Result<Tensor> {
    match select(gpu, x, w, epi) {
        Ok(plan) => dispatch(gpu, batch, x, w, epi, plan),
        Err(Fallback::NoAdapterSupport) => {
            Err(Error::MissingFeature { op: "matmul_coop", feature: "wgpu-cooperative-matrix" })
        }
        Err(why) => {
            Err(Error::UnsupportedFormat { op: "matmul_coop", format: x.dtype().to_string(), why: why.to_string() })
        }
    }
}

fn dispatch(gpu: &Gpu, batch: &mut Batch, x: &Tensor, w: &Tensor, epi: &Epilogue, plan: CoopPlan) -> Result<Tensor> {
    let (k, m, n) = (x.dim_rev(0), x.rows(), w.shape()[0]);
    let mut out_shape = x.shape().to_vec();
    if let Some(last) = out_shape.last_mut() {
        *last = n;
    }
    let y = gpu.empty(&out_shape, x.dtype())?;
    let dummy = gpu.empty(&[4], DType::F32)?;
    // `select` checked that every extent fits u32.
    let params =
        Params { m: m as u32, n: n as u32, k: k as u32, gate_off: epi.gate.as_ref().map_or(0, |g| g.offset as u32) };
    let ov = overrides(
        w.dtype(),
        x.dtype() == DType::F16,
        epi.bias.is_some(),
        epi.act.unwrap_or(Activation::None),
        epi.gate.is_some(),
        plan.wg,
    );
    let bindings = [
        Binding::Uniform(bytemuck::bytes_of(&params)),
        Binding::Tensor(x),
        Binding::Tensor(w),
        Binding::Tensor(epi.bias.unwrap_or(&dummy)),
        Binding::Tensor(&y),
        Binding::Tensor(epi.gate.as_ref().map_or(&dummy, |g| g.residual)),
        Binding::Tensor(epi.gate.as_ref().map_or(&dummy, |g| g.gate)),
    ];
    let grid = [n.div_ceil(plan.tile) as u32, m.div_ceil(plan.tile) as u32, 1];
    batch.dispatch(gpu, plan.spec, "main", &ov, &bindings, grid)?;
    Ok(y)
}
