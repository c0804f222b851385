//! The format-neutral result of parsing a weights file's header: what tensors
//! it holds, where their bytes are, and its metadata. Produced by
//! `weights::safetensors` and `weights::gguf` from a prefix of the file, so a
//! loader can list a remote file's tensors before any weight moves.

use crate::dtype::DType;
use crate::error::{Error, Result};

/// The largest header either parser accepts (safetensors JSON, or GGUF
/// metadata + tensor infos). Real headers of the files this app loads are
/// ~100 KB (FLUX safetensors, ~780 tensors) to ~1 MB (a T5-XXL GGUF with its
/// 32k-token vocabulary in the metadata): 16 MiB is 16× the largest. The whole
/// header sits in wasm memory and its parsed JSON takes several times more, so
/// a larger claim is treated as a corrupt file rather than allocated.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

/// The most tensors either parser accepts: FLUX.1 has ~780 (diffusers names
/// ~1000), T5-XXL ~220, a LoRA on every FLUX and CLIP Linear with alphas ~3000.
pub const MAX_TENSORS: u64 = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Safetensors,
    Gguf,
}

impl std::fmt::Display for FileFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileFormat::Safetensors => "safetensors",
            FileFormat::Gguf => "GGUF",
        })
    }
}

/// A tensor's element format as stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileDType {
    /// Bytes that `weights::repack` turns into this GPU format (F32, F16,
    /// BF16 and the GGUF block formats).
    Gpu(DType),
    /// safetensors `F8_E4M3` (PyTorch `float8_e4m3fn`), `Dtype::F8_E4M3` in
    /// safetensors/src/tensor.rs @ 24b0b28.
    F8E4M3,
    /// safetensors `F8_E5M2`, the top byte of an IEEE half.
    F8E5M2,
    /// A format the file format defines but this engine does not load (F64,
    /// I32, Q3_K, ...). Its size is known, so the header still validates and
    /// `inspect` lists it; loading it is an `UnsupportedFormat` error.
    Other { name: &'static str, block_elems: u32, block_bytes: u32 },
}

impl FileDType {
    pub fn name(self) -> &'static str {
        match self {
            FileDType::Gpu(d) => d.name(),
            FileDType::F8E4M3 => "F8_E4M3",
            FileDType::F8E5M2 => "F8_E5M2",
            FileDType::Other { name, .. } => name,
        }
    }

    /// Elements per block along the innermost dimension (1 for plain formats).
    pub fn block_elems(self) -> u64 {
        match self {
            FileDType::Gpu(d) => d.block_elems() as u64,
            FileDType::F8E4M3 | FileDType::F8E5M2 => 1,
            FileDType::Other { block_elems, .. } => block_elems as u64,
        }
    }

    /// Bytes of one block in the file.
    pub fn block_bytes(self) -> u64 {
        match self {
            FileDType::Gpu(d) => d.gguf_block_bytes() as u64,
            FileDType::F8E4M3 | FileDType::F8E5M2 => 1,
            FileDType::Other { block_bytes, .. } => block_bytes as u64,
        }
    }

    /// File bytes of `numel` elements; `None` when `numel` is not a whole
    /// number of blocks or the size overflows.
    pub fn byte_size(self, numel: u64) -> Option<u64> {
        let be = self.block_elems();
        if !numel.is_multiple_of(be) {
            return None;
        }
        (numel / be).checked_mul(self.block_bytes())
    }

    pub fn is_supported(self) -> bool {
        !matches!(self, FileDType::Other { .. })
    }
}

impl std::fmt::Display for FileDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a weights file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// PyTorch dimension order (outermost first); `[]` is a scalar. GGUF's
    /// innermost-first `ne` (ggml include/ggml.h @ d99724f) is reversed here, as ComfyUI-GGUF's
    /// `gguf_sd_loader` does (loader.py @ 795e451).
    pub shape: Vec<u64>,
    pub dtype: FileDType,
    /// Absolute byte offset of the tensor's first byte in the file.
    pub offset: u64,
    /// Bytes in the file (validated against shape and dtype).
    pub size: u64,
}

impl TensorInfo {
    /// Elements. A zero dimension makes 0 whatever the others: GGUF checks the product innermost
    /// first, so `[huge, huge, 0]` (outermost first) is a valid empty tensor whose plain product
    /// overflows before it reaches the 0 (found by the `tensor_data` fuzz target). Otherwise the
    /// parsers have checked that the product fits.
    pub fn numel(&self) -> u64 {
        if self.shape.contains(&0) {
            return 0;
        }
        self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).unwrap_or(u64::MAX)
    }
}

/// GGUF metadata value types (ggml `enum gguf_type`, include/gguf.h @ d99724f), ids as in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    Str = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl MetaType {
    pub fn from_id(id: u32) -> Option<MetaType> {
        use MetaType::*;
        [U8, I8, U16, I16, U32, I32, F32, Bool, Str, Array, U64, I64, F64].into_iter().find(|t| *t as u32 == id)
    }
}

/// A metadata value. safetensors `__metadata__` values are all `Str`.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    /// Element type, elements (all of that type; nested arrays allowed).
    Array(MetaType, Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    pub fn meta_type(&self) -> MetaType {
        match self {
            MetaValue::U8(_) => MetaType::U8,
            MetaValue::I8(_) => MetaType::I8,
            MetaValue::U16(_) => MetaType::U16,
            MetaValue::I16(_) => MetaType::I16,
            MetaValue::U32(_) => MetaType::U32,
            MetaValue::I32(_) => MetaType::I32,
            MetaValue::F32(_) => MetaType::F32,
            MetaValue::Bool(_) => MetaType::Bool,
            MetaValue::Str(_) => MetaType::Str,
            MetaValue::Array(..) => MetaType::Array,
            MetaValue::U64(_) => MetaType::U64,
            MetaValue::I64(_) => MetaType::I64,
            MetaValue::F64(_) => MetaType::F64,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Human-readable form with arrays cut after `max_items` elements and
    /// strings after 80 characters (for `iclora inspect`).
    pub fn display_short(&self, max_items: usize) -> String {
        match self {
            MetaValue::Str(s) if s.chars().count() > 80 => format!("{:?}…", s.chars().take(80).collect::<String>()),
            MetaValue::Str(s) => format!("{s:?}"),
            MetaValue::Array(t, items) => {
                let shown: Vec<String> = items.iter().take(max_items).map(|v| v.display_short(max_items)).collect();
                let more =
                    if items.len() > max_items { format!(", … ({} items)", items.len()) } else { String::new() };
                format!("{t:?}[{}{more}]", shown.join(", "))
            }
            MetaValue::U8(v) => v.to_string(),
            MetaValue::I8(v) => v.to_string(),
            MetaValue::U16(v) => v.to_string(),
            MetaValue::I16(v) => v.to_string(),
            MetaValue::U32(v) => v.to_string(),
            MetaValue::I32(v) => v.to_string(),
            MetaValue::F32(v) => v.to_string(),
            MetaValue::Bool(v) => v.to_string(),
            MetaValue::U64(v) => v.to_string(),
            MetaValue::I64(v) => v.to_string(),
            MetaValue::F64(v) => v.to_string(),
        }
    }
}

/// A parsed header: everything needed to fetch any tensor's bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsHeader {
    pub format: FileFormat,
    /// The name the file was opened under (path or URL), used in errors.
    pub file: String,
    pub file_len: u64,
    /// Absolute offset of the data section (safetensors 8 + N; GGUF aligned).
    pub data_start: u64,
    /// In file order (safetensors: `__metadata__` in JSON order).
    pub metadata: Vec<(String, MetaValue)>,
    /// In file order (safetensors: JSON order, which need not follow offsets).
    pub tensors: Vec<TensorInfo>,
}

impl WeightsHeader {
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The first tensor whose format this engine cannot load, as a typed error.
    pub fn require_supported(&self) -> Result<()> {
        match self.tensors.iter().find(|t| !t.dtype.is_supported()) {
            Some(t) => Err(unsupported(&self.file, t)),
            None => Ok(()),
        }
    }
}

/// Outcome of parsing a prefix of a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Header(WeightsHeader),
    /// The prefix ends inside the header: fetch the first `n` bytes of the
    /// file (n > the prefix's length, n ≤ the file's length) and parse again.
    NeedMore(u64),
}

pub(crate) fn malformed(file: &str, what: impl Into<String>) -> Error {
    Error::Malformed { file: file.to_string(), what: what.into() }
}

pub(crate) fn unsupported(file: &str, t: &TensorInfo) -> Error {
    Error::UnsupportedFormat {
        op: "load weights",
        format: t.dtype.name().to_string(),
        why: format!(
            "tensor `{}` in `{file}`; supported: F32, F16, BF16, F8_E4M3, F8_E5M2 and the GGUF types Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K",
            t.name
        ),
    }
}

/// Checks that tensors lie inside `[data_start, file_len)` and do not
/// overlap; shared by both parsers. Zero-byte tensors may sit anywhere in range.
pub(crate) fn check_layout(file: &str, tensors: &[TensorInfo], data_start: u64, file_len: u64) -> Result<()> {
    let mut spans: Vec<(u64, u64, &str)> = Vec::with_capacity(tensors.len());
    for t in tensors {
        let end = t.offset.checked_add(t.size).filter(|&e| t.offset >= data_start && e <= file_len);
        let Some(end) = end else {
            return Err(malformed(
                file,
                format!(
                    "tensor `{}` spans bytes {}..{}+{} but the data section is {data_start}..{file_len}",
                    t.name, t.offset, t.offset, t.size
                ),
            ));
        };
        if end > t.offset {
            spans.push((t.offset, end, &t.name));
        }
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        let ((_, a_end, a), (b_start, _, b)) = (w[0], w[1]);
        if b_start < a_end {
            return Err(malformed(
                file,
                format!("tensors `{a}` and `{b}` overlap (`{b}` starts at {b_start}, `{a}` ends at {a_end})"),
            ));
        }
    }
    Ok(())
}

/// Rejects a second tensor with the same name.
pub(crate) fn check_unique(file: &str, tensors: &[TensorInfo]) -> Result<()> {
    let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    match names.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(malformed(file, format!("tensor name `{}` appears twice", w[0]))),
        None => Ok(()),
    }
}

/// A tensor to write (`safetensors::write_safetensors`, `gguf::write_gguf`):
/// test fixtures and fixture tools.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    pub name: String,
    /// PyTorch order.
    pub shape: Vec<u64>,
    pub dtype: FileDType,
    /// The file bytes (GGUF blocks, little-endian values).
    pub data: Vec<u8>,
}

impl TensorData {
    pub(crate) fn check(&self, op: &'static str) -> Result<()> {
        let numel = self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let innermost = self.shape.last().copied().unwrap_or(1);
        let want =
            numel.filter(|_| innermost.is_multiple_of(self.dtype.block_elems())).and_then(|n| self.dtype.byte_size(n));
        if want != Some(self.data.len() as u64) {
            return Err(Error::ShapeMismatch {
                op,
                expected: format!("{want:?} bytes for `{}` {} {:?}", self.name, self.dtype, self.shape),
                got: format!("{} bytes", self.data.len()),
            });
        }
        Ok(())
    }
}
