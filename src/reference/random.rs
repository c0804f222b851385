//! Seeded random inputs for tests, the in-browser self-test and benchmarks:
//! a SplitMix64 generator and random weights in any file format.

use half::{bf16, f16};

use crate::dtype::DType;

/// SplitMix64: small, seeded, reproducible on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }

    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Byte offsets of the f16 scale fields (d, m/dmin) inside one GGUF block.
fn scale_fields(q: DType) -> &'static [usize] {
    match q {
        DType::Q8_0 | DType::Q4_0 | DType::Q5_0 => &[0],
        DType::Q6K => &[208],
        _ => &[0, 2],
    }
}

/// `numel` random weights in the file layout of `dtype`: values uniform in
/// [-amp, amp) for float formats; for quantized formats random quant bits with
/// f16 scales uniform in [-scale, scale) (random bytes there could be NaN/inf).
pub fn weight_bytes(rng: &mut Rng, dtype: DType, numel: usize, amp: f32, scale: f32) -> Vec<u8> {
    match dtype {
        DType::F32 | DType::U32 => rng.vec(numel, -amp, amp).iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => rng.vec(numel, -amp, amp).iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        DType::BF16 => rng.vec(numel, -amp, amp).iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
        q => {
            let bb = q.gguf_block_bytes();
            let mut bytes = rng.bytes(numel / q.block_elems() * bb);
            for block in bytes.chunks_exact_mut(bb) {
                for &o in scale_fields(q) {
                    block[o..o + 2].copy_from_slice(&f16::from_f32(rng.uniform(-scale, scale)).to_le_bytes());
                }
            }
            bytes
        }
    }
}
