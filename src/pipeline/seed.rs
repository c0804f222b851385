//! Seeded initial noise that matches PyTorch's CPU generator, so a seed means
//! the same image here as in diffusers (`FluxPipeline.prepare_latents` draws the unpacked noise with
//! `randn_tensor`, then packs it, src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c).
//!
//! What `torch.randn(n, generator=torch.Generator("cpu").manual_seed(seed),
//! dtype=torch.float32)` does, as read from ATen (MT19937RNGEngine.h,
//! TransformationHelper.h, DistributionsHelper.h, native/cpu/DistributionTemplates.h,
//! native/cpu/avx_mathfun.h) and checked against torch 2.x:
//!
//! * The generator is the 32-bit Mersenne Twister MT19937, initialised with the
//!   classic Knuth recurrence from the **low 32 bits** of the seed (so seeds
//!   `s` and `s + 2^32` give the same stream). A "64-bit draw" is two 32-bit
//!   draws, the first one in the high half.
//! * float32 uniforms in [0, 1) keep the low 24 bits of one draw: `(u & 0xFFFFFF) · 2^-24`;
//!   float64 uniforms keep the low 53 bits of a 64-bit draw: `(u & (2^53 − 1)) · 2^-53`.
//! * n ≥ 16 (contiguous float32): fill all n with float32 uniforms, then
//!   Box–Muller each block of 16 in place, pairing element j with j + 8
//!   (j < 8): `r = sqrt(−2·ln(1 − a))`, `θ = 2π·b`, outputs `r·cos θ` at j and
//!   `r·sin θ` at j + 8, all in float32 (how θ and the functions are rounded
//!   depends on the kernel, below). If n is not a multiple of 16, the last 16 positions
//!   (overlapping the previous block) are refilled with 16 fresh uniforms and
//!   transformed again.
//! * n < 16: one double-precision Box–Muller per pair of outputs from two
//!   float64 uniforms a, b: `r = sqrt(−2·ln(1 − b))`, `θ = 2π·a`; the output is
//!   `r·cos θ` and `r·sin θ` is cached for the next element; each is rounded
//!   to float32.
//!
//! Two builds of torch transform the n ≥ 16 blocks differently, so both are
//! here ([`BoxMuller`]):
//! * [`BoxMuller::Vectorized`] (the default): x86-64 torch on a CPU with AVX2 or
//!   AVX-512 (torch's `get_cpu_capability()` is AVX2 or AVX512) runs 8 lanes
//!   with polynomial log/sin/cos (Cephes coefficients, via avx_mathfun) built
//!   with GCC, which fuses each multiply feeding an add into an FMA. We evaluate
//!   the same polynomials lane by lane with the same fusions: bit-exact with
//!   torch 2.15 on AVX-512 and on AVX2 (checked on 1M values and the fixtures;
//!   plain IEEE arithmetic, so the same on every platform, wasm included).
//! * [`BoxMuller::Scalar`]: torch without those kernels (`ATEN_CPU_CAPABILITY=default`,
//!   and non-x86 builds) calls the C library's float `logf`/`cosf`/`sinf`.
//!   Bit-exact against glibc-linked torch where Rust's `f32::ln/cos/sin`
//!   also reach glibc; with another libm (wasm, macOS) possibly not in the last
//!   bits (not measured). The two paths differ
//!   by up to 2.3e-6 absolute (measured over 1M values), more than the 1e-6 we
//!   promise, so pick the one the reference machine uses.

use std::f64::consts::PI;

use crate::reference::pack::pack;

const MT_N: usize = 624;
const MT_M: usize = 397;

/// The 32-bit Mersenne Twister exactly as PyTorch's CPU generator runs it.
pub struct Mt19937 {
    state: [u32; MT_N],
    /// Index of the next word of `state` to temper; `MT_N` means "regenerate first".
    next: usize,
}

impl Mt19937 {
    /// `torch.Generator("cpu").manual_seed(seed)`: only the low 32 bits are used.
    pub fn new(seed: u64) -> Mt19937 {
        let mut state = [0u32; MT_N];
        state[0] = seed as u32;
        for j in 1..MT_N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(j as u32);
        }
        // Torch regenerates the whole state before handing out the first word.
        Mt19937 { state, next: MT_N }
    }

    fn regenerate(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for k in 0..MT_N {
            let y = (self.state[k] & UPPER) | (self.state[(k + 1) % MT_N] & LOWER);
            let mag = if self.state[(k + 1) % MT_N] & 1 == 1 { MATRIX_A } else { 0 };
            self.state[k] = self.state[(k + MT_M) % MT_N] ^ (y >> 1) ^ mag;
        }
        self.next = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.next >= MT_N {
            self.regenerate();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Torch's `random64()`: the first 32-bit draw is the high half.
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        let lo = self.next_u32() as u64;
        (hi << 32) | lo
    }

    /// float32 uniform in [0, 1) from the low 24 bits of one draw (exact in f32).
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & 0x00ff_ffff) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// float64 uniform in [0, 1) from the low 53 bits of one 64-bit draw.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Which of torch's two float32 Box–Muller kernels to reproduce (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BoxMuller {
    /// x86-64 torch with AVX2/AVX-512: polynomial log/sin/cos with FMAs.
    #[default]
    Vectorized,
    /// torch's portable kernel: libm `logf`/`cosf`/`sinf`.
    Scalar,
}

/// In-place float32 Box–Muller over one block of 16 uniforms (pairs j, j + 8).
fn box_muller_16(block: &mut [f32], kind: BoxMuller) {
    for j in 0..8 {
        let u1 = 1.0f32 - block[j]; // [0, 1) → (0, 1], so the log is finite
        let u2 = block[j + 8];
        let (c, s, radius) = match kind {
            BoxMuller::Scalar => {
                // θ: a double 2π times the float uniform, rounded to float.
                let theta = ((2.0 * PI) * u2 as f64) as f32;
                (theta.cos(), theta.sin(), (-2.0f32 * u1.ln()).sqrt())
            }
            BoxMuller::Vectorized => {
                // θ: 2π rounded to float first, then a float multiply.
                let (s, c) = cephes_sincos((2.0 * PI) as f32 * u2);
                (c, s, (-2.0f32 * cephes_log(u1)).sqrt())
            }
        };
        // `· std + mean` with std = 1, mean = 0, kept so a −0 becomes +0 as in torch.
        block[j] = radius * c * 1.0 + 0.0;
        block[j + 8] = radius * s * 1.0 + 0.0;
    }
}

/// Natural log of a float in (0, 1], Cephes `logf` as vectorised by avx_mathfun:
/// split x = m·2^e with m in [√½, √2), a degree-9 polynomial in m − 1, then add
/// e·ln 2 in two parts. `mul_add` marks exactly the products GCC fuses.
fn cephes_log(x: f32) -> f32 {
    const P: [f32; 9] = [
        7.037_683_6e-2,
        -1.151_461e-1,
        1.167_699_84e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_4e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ];
    const LN2_LO: f32 = -2.121_944_4e-4;
    const LN2_HI: f32 = 0.693_359_4;
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    let m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits()); // in [0.5, 1)
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    if small {
        e -= 1.0;
    }
    let x = (m - 1.0) + if small { m } else { 0.0 };
    let z = x * x;
    let y = P[1..].iter().fold(P[0], |y, &p| y.mul_add(x, p)) * x;
    let y = y.mul_add(z, e * LN2_LO);
    let y = (-z).mul_add(0.5, y);
    e.mul_add(LN2_HI, x + y)
}

/// (sin θ, cos θ) for θ in [0, 2π), Cephes `sinf`/`cosf` as vectorised by
/// avx_mathfun: reduce by multiples of π/4 (π/4 split in three parts), evaluate
/// both the sine and the cosine polynomial, pick and sign by octant.
fn cephes_sincos(theta: f32) -> (f32, f32) {
    const FOUR_OVER_PI: f32 = 1.273_239_5;
    const DP: [f32; 3] = [-0.785_156_25, -2.418_756_5e-4, -3.774_895e-8];
    let sign_in = theta.to_bits() & 0x8000_0000;
    let a = theta.abs();
    let j = ((a * FOUR_OVER_PI) as i32 + 1) & !1; // even octant index
    let x = DP.iter().fold(a, |x, &dp| (j as f32).mul_add(dp, x));
    let z = x * x;
    let c = 2.443_315_7e-5f32.mul_add(z, -1.388_731_6e-3).mul_add(z, 4.166_664_6e-2) * z;
    let c = c.mul_add(z, -(z * 0.5)) + 1.0;
    let s = (-1.951_529_6e-4f32).mul_add(z, 8.332_161e-3).mul_add(z, -1.666_665_5e-1) * z;
    let s = s.mul_add(x, x);
    let (sin, cos) = if j & 2 == 0 { (s, c) } else { (c, s) };
    let sin_sign = sign_in ^ (((j & 4) as u32) << 29);
    let cos_sign = ((!(j - 2) & 4) as u32) << 29;
    (f32::from_bits(sin.to_bits() ^ sin_sign), f32::from_bits(cos.to_bits() ^ cos_sign))
}

/// `torch.randn(numel, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)`
/// (any shape with this many elements, contiguous: the values do not depend on the shape),
/// as x86-64 torch with AVX2/AVX-512 computes it.
pub fn torch_randn(seed: u64, numel: usize) -> Vec<f32> {
    torch_randn_with(seed, numel, BoxMuller::default())
}

/// [`torch_randn`] with an explicit choice of torch's float32 kernel (only
/// matters for `numel ≥ 16`).
pub fn torch_randn_with(seed: u64, numel: usize, kind: BoxMuller) -> Vec<f32> {
    let mut rng = Mt19937::new(seed);
    if numel < 16 {
        return randn_small(&mut rng, numel);
    }
    let mut out: Vec<f32> = (0..numel).map(|_| rng.uniform_f32()).collect();
    for block in out.chunks_exact_mut(16) {
        box_muller_16(block, kind);
    }
    if !numel.is_multiple_of(16) {
        // The ragged tail: redo the last 16 positions with fresh uniforms.
        let tail = &mut out[numel - 16..];
        for v in tail.iter_mut() {
            *v = rng.uniform_f32();
        }
        box_muller_16(tail, kind);
    }
    out
}

/// The scalar path for fewer than 16 elements: double-precision Box–Muller with
/// the sine half cached for the next element.
fn randn_small(rng: &mut Mt19937, numel: usize) -> Vec<f32> {
    let mut cached: Option<f64> = None;
    (0..numel)
        .map(|_| {
            let z = match cached.take() {
                Some(z) => z,
                None => {
                    let a = rng.uniform_f64();
                    let b = rng.uniform_f64();
                    let r = (-2.0 * (-b).ln_1p()).sqrt();
                    let theta = 2.0 * PI * a;
                    cached = Some(r * theta.sin());
                    r * theta.cos()
                }
            };
            (z * 1.0 + 0.0) as f32
        })
        .collect()
}

/// Latent height and width (in latent pixels, 1/8 of the image) for an image of
/// `height × width`, rounded down to even sizes as diffusers' FluxPipeline does:
/// `2·floor(H/16)`, `2·floor(W/16)`.
pub fn latent_hw(height: usize, width: usize) -> (usize, usize) {
    (2 * (height / 16), 2 * (width / 16))
}

/// The initial FLUX noise diffusers' FluxPipeline draws for batch 1 with a CPU
/// generator seeded with `seed` and float32 latents: `randn` of shape
/// `(1, 16, h, w)` with `(h, w) = latent_hw(height, width)`, then packed to
/// `[(h/2)·(w/2), 64]` tokens (diffusers `_pack_latents`,
/// src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c). Sides below 16 give an empty vector. A pipeline
/// run in bf16 draws the noise in bf16; with torch 2.15
/// that is this noise rounded to bf16 (tools/golden/README.md).
pub fn flux_noise(seed: u64, height: usize, width: usize) -> Vec<f32> {
    let (h, w) = latent_hw(height, width);
    let latent = torch_randn(seed, 16 * h * w);
    pack(&latent, 16, h, w)
}
