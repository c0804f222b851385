//! The kernel self-test registry, shared by the browser page (`app::selftest`)
//! and the native test `tests/selftest_cases.rs`: one entry per kernel (or per mode of a
//! kernel). Adding a kernel is one line in [`all`]: its name, the runs to try,
//! the tolerance, and a function that uploads random inputs, records the
//! kernel into the batch and returns its output together with the CPU result
//! from `crate::reference`.
//!
//! A run is described by `dims`: a tensor shape for most kernels, or the
//! numbers named by `names` (e.g. `m, n, k` for a matmul). Runs follow the
//! house rule: ordinary, awkward (1, 7, odd, not a multiple of the tile) and
//! real FLUX widths with few tokens. Tolerances are those of tests/kernels_*.rs.

mod compute;
mod layout;
mod rowwise;

use crate::gpu::{Batch, DType, Gpu, Tensor};
use crate::kernels::elementwise::Activation;
pub use crate::reference::random::Rng;
use crate::{Error, Result};

/// Records one run into `batch`; returns (GPU output, CPU reference output).
pub type CaseFn = fn(&Gpu, &mut Batch, &[usize], &mut Rng) -> Result<(Tensor, Vec<f32>)>;

pub struct Case {
    pub kernel: &'static str,
    /// Names of the numbers in `dims`; empty when `dims` is a tensor shape.
    pub names: &'static [&'static str],
    pub dims: &'static [&'static [usize]],
    /// Maximum relative error (see `selftest::compare`); 0 for exact copies.
    pub rtol: f32,
    pub run: CaseFn,
    /// The kernel reduces through `kernels::Reducing` (workgroup memory or subgroups): runners
    /// run it on both paths where the device has subgroups, and say "not offered" where not.
    pub reduces: bool,
}

impl Case {
    /// `[33, 257]` for shapes, `m 3 · n 3072 · k 3072` for named numbers.
    pub fn describe(&self, dims: &[usize]) -> String {
        if self.names.is_empty() {
            return format!("{dims:?}");
        }
        let parts: Vec<String> = self.names.iter().zip(dims).map(|(n, d)| format!("{n} {d}")).collect();
        parts.join(" · ")
    }
}

fn case(kernel: &'static str, names: &'static [&'static str], dims: Dims, rtol: f32, run: CaseFn) -> Case {
    Case { kernel, names, dims, rtol, run, reduces: false }
}

/// A case whose kernel reduces through `kernels::Reducing` (see [`Case::reduces`]).
fn reducing(kernel: &'static str, names: &'static [&'static str], dims: Dims, rtol: f32, run: CaseFn) -> Case {
    Case { reduces: true, ..case(kernel, names, dims, rtol, run) }
}

/// f32 kernels against f64 references: 1e-5 relative (with the output-RMS floor).
const F32: f32 = 1e-5;
/// Copies, gathers and layout changes must be bit-exact.
const EXACT: f32 = 0.0;

type Dims = &'static [&'static [usize]];
const NONE: &[&str] = &[];

/// 1, 7, odd rows × an odd width, FLUX hidden (3072) and MLP (12288) widths.
const ELEMENTWISE: Dims = &[&[1], &[7], &[33, 257], &[4, 3072], &[2, 12288]];
/// Rows of a row-wise op: one element, awkward widths, CLIP (768), FLUX (3072), T5 (4096).
const ROWS: Dims = &[&[1, 1], &[7, 33], &[3, 257], &[2, 768], &[3, 3072], &[2, 4096]];
const ROW_NAMES: &[&str] = &["rows", "C", "offset", "width", "D"];
const IMAGE: Dims = &[&[1, 1, 1], &[3, 5, 7], &[16, 32, 48], &[512, 8, 8]];
const MATMUL: Dims = &[&[1, 1, 256], &[7, 33, 512], &[65, 130, 256], &[3, 3072, 3072]];
const MNK: &[&str] = &["m", "n", "k"];

#[rustfmt::skip]
pub fn all() -> Vec<Case> {
    use compute as c;
    use layout as l;
    use rowwise as r;
    vec![
        case("gelu_tanh", NONE, ELEMENTWISE, F32, |g, b, d, x| r::act(g, b, d, x, Activation::GeluTanh)),
        case("quick_gelu", NONE, ELEMENTWISE, F32, |g, b, d, x| r::act(g, b, d, x, Activation::QuickGelu)),
        case("silu", NONE, ELEMENTWISE, F32, |g, b, d, x| r::act(g, b, d, x, Activation::Silu)),
        case("add", NONE, ELEMENTWISE, F32, |g, b, d, x| r::binary(g, b, d, x, false, r::ADD)),
        case("add (row broadcast)", NONE, ELEMENTWISE, F32, |g, b, d, x| r::binary(g, b, d, x, true, r::ADD)),
        case("mul (row broadcast)", NONE, ELEMENTWISE, F32, |g, b, d, x| r::binary(g, b, d, x, true, r::MUL)),
        case("gated_add", NONE, ELEMENTWISE, F32, r::gated_add),
        reducing("softmax", NONE, &[&[1, 1], &[7, 33], &[3, 257], &[2, 4096], &[1, 12288]], F32, r::softmax),
        reducing("layer_norm", NONE, ROWS, F32, |g, b, d, x| r::layer_norm(g, b, d, x, false)),
        reducing("layer_norm (affine)", NONE, ROWS, F32, |g, b, d, x| r::layer_norm(g, b, d, x, true)),
        reducing("adaLN (modulated)", NONE, &[&[1, 7], &[5, 33], &[3, 3072]], F32, r::ada_ln),
        reducing("rms_norm", &["rows", "C", "D"], &[&[1, 1, 1], &[7, 96, 32], &[3, 3072, 128], &[2, 4096, 4096]], F32, r::rms_norm),
        reducing("rms_norm (q|k slice, in place)", ROW_NAMES, &[&[5, 24, 8, 8, 8], &[3, 9216, 3072, 3072, 128]], F32, r::qk_norm),
        reducing("group_norm + silu", &["C", "H", "W", "groups"], &[&[4, 1, 1, 2], &[64, 5, 7, 32], &[512, 4, 4, 32]], F32, r::group_norm),
        case("rope (in place)", ROW_NAMES, &[&[1, 8, 0, 8, 8], &[5, 40, 8, 16, 8], &[3, 9216, 0, 6144, 128]], F32, |g, b, d, x| r::rope(g, b, d, x, true)),
        reducing("qk_norm + rope (fused, in place)", ROW_NAMES, &[&[1, 24, 0, 8, 8], &[7, 40, 16, 8, 8], &[3, 9216, 0, 3072, 128]], F32, r::qk_norm_rope),
        case("rope (to new tensor)", ROW_NAMES, &[&[7, 24, 8, 16, 8], &[4, 9216, 3072, 3072, 128]], F32, |g, b, d, x| r::rope(g, b, d, x, false)),
        case("slice_cols", &["rows", "cols", "start", "width"], &[&[1, 1, 0, 1], &[7, 33, 5, 17], &[3, 9216, 3072, 3072]], EXACT, l::slice_cols),
        case("concat_rows", &["rows a", "rows b", "cols"], &[&[1, 1, 1], &[7, 5, 33], &[4, 6, 3072]], EXACT, l::concat_rows),
        case("concat_cols", &["rows", "cols a", "cols b"], &[&[1, 1, 1], &[7, 5, 33], &[3, 3072, 12288]], EXACT, l::concat_cols),
        case("pack (latent → tokens)", NONE, &[&[1, 2, 2], &[3, 6, 10], &[16, 32, 48]], EXACT, |g, b, d, x| l::pack(g, b, d, x, false)),
        case("unpack (tokens → latent)", NONE, &[&[1, 2, 2], &[3, 6, 10], &[16, 32, 48]], EXACT, |g, b, d, x| l::pack(g, b, d, x, true)),
        case("upsample nearest ×2", NONE, IMAGE, EXACT, l::upsample),
        case("embedding F32", &["vocab", "K", "ids"], &[&[1, 1, 1], &[33, 7, 9], &[1000, 4096, 7]], EXACT, |g, b, d, x| l::embedding(g, b, d, x, DType::F32)),
        case("embedding Q8_0", &["vocab", "K", "ids"], &[&[1, 32, 1], &[33, 256, 9], &[1000, 4096, 7]], EXACT, |g, b, d, x| l::embedding(g, b, d, x, DType::Q8_0)),
        case("matmul F32", MNK, MATMUL, F32, |g, b, d, x| c::matmul(g, b, d, x, DType::F32)),
        case("matmul F16", MNK, MATMUL, F32, |g, b, d, x| c::matmul(g, b, d, x, DType::F16)),
        case("matmul BF16", MNK, MATMUL, F32, |g, b, d, x| c::matmul(g, b, d, x, DType::BF16)),
        case("matmul Q8_0", MNK, MATMUL, F32, |g, b, d, x| c::matmul(g, b, d, x, DType::Q8_0)),
        case("matmul Q4_0", MNK, MATMUL, F32, |g, b, d, x| c::matmul(g, b, d, x, DType::Q4_0)),
        case("matmul Q4_K", MNK, MATMUL, F32, |g, b, d, x| c::matmul(g, b, d, x, DType::Q4K)),
        case("matmul Q6_K", MNK, MATMUL, F32, |g, b, d, x| c::matmul(g, b, d, x, DType::Q6K)),
        case("matmul Q8_0 + bias, gelu, LoRA, gate", MNK, &[&[7, 33, 256], &[2, 3072, 3072]], F32, c::matmul_epilogue),
        case("attention", &["heads", "D", "Lq", "Lk"], &[&[1, 1, 1, 1], &[3, 64, 7, 13], &[2, 128, 33, 70], &[24, 128, 8, 8]], F32, |g, b, d, x| c::attention(g, b, d, x, false, false)),
        case("attention (causal)", &["heads", "D", "Lq", "Lk"], &[&[2, 64, 7, 7], &[12, 64, 77, 77]], F32, |g, b, d, x| c::attention(g, b, d, x, true, false)),
        case("attention (score bias)", &["heads", "D", "Lq", "Lk"], &[&[2, 64, 9, 9], &[4, 64, 33, 33]], F32, |g, b, d, x| c::attention(g, b, d, x, false, true)),
        case("conv2d 3×3", &["C", "H", "W", "O"], &[&[1, 1, 1, 1], &[16, 9, 7, 32], &[512, 4, 4, 512]], F32, |g, b, d, x| c::conv2d(g, b, d, x, c::ConvKind::Same3)),
        case("conv2d 1×1 + residual", &["C", "H", "W", "O"], &[&[24, 5, 6, 16], &[512, 8, 8, 256]], F32, |g, b, d, x| c::conv2d(g, b, d, x, c::ConvKind::Shortcut)),
        case("conv2d downsample (stride 2)", &["C", "H", "W", "O"], &[&[8, 9, 10, 12], &[128, 16, 16, 128]], F32, |g, b, d, x| c::conv2d(g, b, d, x, c::ConvKind::Down)),
        case("conv2d upsample ×2 (fused)", &["C", "H", "W", "O"], &[&[5, 3, 4, 7], &[128, 8, 8, 128]], F32, |g, b, d, x| c::conv2d(g, b, d, x, c::ConvKind::Up)),
        case("conv2d 3×3 + residual + ReLU", &["C", "H", "W", "O"], &[&[16, 5, 7, 16], &[64, 16, 16, 64]], F32, |g, b, d, x| c::conv2d(g, b, d, x, c::ConvKind::ResidualRelu)),
    ]
}

/// A random f32 tensor, uniform in [lo, hi), and its values.
fn random(g: &Gpu, shape: &[usize], rng: &mut Rng, lo: f32, hi: f32) -> Result<(Tensor, Vec<f32>)> {
    let v = rng.vec(shape.iter().product(), lo, hi);
    Ok((g.upload_f32(shape, &v)?, v))
}

/// `dims[i]`, or 1 when a registry line gives fewer numbers than its kernel reads.
fn dim(dims: &[usize], i: usize) -> usize {
    dims.get(i).copied().unwrap_or(1)
}

/// How far the GPU output is from the reference.
pub struct Comparison {
    /// max over i of |got − expected| / max(|expected|, rms(expected)), the
    /// metric of tests/common `assert_close`: relative error, with the output's
    /// RMS as the floor so values that cancel to ~0 are judged at the output's scale.
    pub max_err: f32,
    /// The first index over the tolerance: (index, got, expected).
    pub first_bad: Option<(usize, f32, f32)>,
}

pub fn compare(got: &[f32], expected: &[f32], rtol: f32) -> Result<Comparison> {
    if got.len() != expected.len() {
        return Err(Error::ShapeMismatch {
            op: "selftest",
            expected: format!("{} output values", expected.len()),
            got: format!("{}", got.len()),
        });
    }
    let n = expected.len().max(1) as f64;
    let rms = (expected.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / n).sqrt() as f32;
    let floor = rms.max(f32::MIN_POSITIVE);
    let mut c = Comparison { max_err: 0.0, first_bad: None };
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let err = (g - e).abs() / e.abs().max(floor);
        // NaN compares false: count it as an infinite error.
        let err = if err.is_nan() { f32::INFINITY } else { err };
        if err > c.max_err {
            c.max_err = err;
        }
        if err > rtol && c.first_bad.is_none() {
            c.first_bad = Some((i, g, e));
        }
    }
    Ok(c)
}
