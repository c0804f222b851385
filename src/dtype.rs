//! Element formats of tensors (in files and on the GPU) and their on-GPU layouts. Plain data: the CPU
//! references and the file parsers use it without the GPU module.
//!
//! Float formats are stored densely (f16/bf16 two per `u32` word, element `e`
//! in word `e / 2`, low half first). Quantized formats keep GGUF's block
//! contents but each block is padded to a whole number of 32-bit words with
//! the scale(s) first, so WGSL can read them as `array<u32>` (GGUF blocks are
//! not 4-byte aligned: Q8_0 is 34 bytes, Q6_K 210). See `weights::repack`.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
    U32,
}

impl DType {
    pub const WEIGHT_FORMATS: [DType; 11] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4K,
        DType::Q5K,
        DType::Q6K,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q8_0 => "Q8_0",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q4K => "Q4_K",
            DType::Q5K => "Q5_K",
            DType::Q6K => "Q6_K",
            DType::U32 => "U32",
        }
    }

    pub fn parse(s: &str) -> Option<DType> {
        let up = s.to_ascii_uppercase();
        DType::WEIGHT_FORMATS.into_iter().chain([DType::U32]).find(|d| d.name() == up)
    }

    /// The id the WGSL kernels switch on (`override FORMAT`), see `shaders/quant.wgsl`.
    pub fn shader_id(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::BF16 => 2,
            DType::Q8_0 => 3,
            DType::Q4_0 => 4,
            DType::Q4_1 => 5,
            DType::Q5_0 => 6,
            DType::Q5_1 => 7,
            DType::Q4K => 8,
            DType::Q5K => 9,
            DType::Q6K => 10,
            DType::U32 => 11,
        }
    }

    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Elements per quantization block along the innermost dimension (1 for plain formats).
    pub fn block_elems(self) -> usize {
        match self {
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 => 32,
            DType::Q4K | DType::Q5K | DType::Q6K => 256,
            _ => 1,
        }
    }

    /// Bytes of one block in a GGUF file (ggml's `block_*` structs, src/ggml-common.h @ d99724f).
    pub fn gguf_block_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q4K => 144,
            DType::Q5K => 176,
            DType::Q6K => 210,
        }
    }

    /// 32-bit words of one block on the GPU (quantized formats only).
    pub fn gpu_block_words(self) -> usize {
        match self {
            DType::Q8_0 => 9,
            DType::Q4_0 => 5,
            DType::Q4_1 => 5,
            DType::Q5_0 => 6,
            DType::Q5_1 => 6,
            DType::Q4K => 36,
            DType::Q5K => 44,
            DType::Q6K => 53,
            _ => 0,
        }
    }

    /// Bytes this many elements occupy on the GPU, rounded up to whole words.
    /// For quantized formats `numel` must be a multiple of the block size.
    pub fn gpu_bytes(self, numel: usize) -> usize {
        match self {
            DType::F32 | DType::U32 => numel * 4,
            DType::F16 | DType::BF16 => numel.div_ceil(2) * 4,
            q => numel / q.block_elems() * q.gpu_block_words() * 4,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
