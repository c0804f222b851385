//! GGUF v2/v3 headers (ggml docs/gguf.md @ d99724f; type ids in include/ggml.h @ d99724f), parsed from a
//! prefix of the file, and a writer for fixtures. Every count and length is checked
//! against the file before anything is allocated: a corrupt file is a typed
//! `Error::Malformed` naming the file, never a panic or a huge allocation.

use std::collections::HashSet;

use super::tensor_info::{
    check_layout, check_unique, malformed, FileDType, FileFormat, MetaType, MetaValue, Parsed, TensorData, TensorInfo,
    WeightsHeader, MAX_HEADER_BYTES, MAX_TENSORS,
};
use crate::dtype::DType;
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// Metadata values kept in memory, over all arrays: a 256k-token tokenizer
/// (tokens, scores, types, merges) needs under 1.1M.
const MAX_META_VALUES: usize = 1 << 21;
const MAX_ARRAY_DEPTH: usize = 4;
const MAX_KVS: u64 = 1 << 16;
/// First fetch size suggested when the prefix is short; then doubled.
const MIN_FETCH: u64 = 64 * 1024;

/// ggml type ids (ggml.h `enum ggml_type`): (id, name, elements per block, bytes per block).
const GGML_TYPES: [(u32, &str, u32, u32); 32] = [
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

/// The `FileDType` of a ggml type id (`Gpu` for the formats our kernels read);
/// `None` for ids ggml does not define.
pub fn ggml_type(id: u32) -> Option<FileDType> {
    let &(_, name, block_elems, block_bytes) = GGML_TYPES.iter().find(|t| t.0 == id)?;
    Some(match DType::parse(name).filter(|d| DType::WEIGHT_FORMATS.contains(d)) {
        Some(d) => FileDType::Gpu(d),
        None => FileDType::Other { name, block_elems, block_bytes },
    })
}

/// The ggml type id of a file format, if GGUF can store it.
pub fn ggml_type_id(dtype: FileDType) -> Option<u32> {
    GGML_TYPES.iter().find(|t| ggml_type(t.0) == Some(dtype)).map(|t| t.0)
}

/// Why reading stopped: the prefix ends early (bytes needed), or the file is bad.
enum Stop {
    Short(u64),
    Bad(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Bad(e)
    }
}

type R<T> = std::result::Result<T, Stop>;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    file_len: u64,
    file: &'a str,
    values: usize,
}

impl<'a> Reader<'a> {
    fn bad(&self, what: String) -> Stop {
        Stop::Bad(malformed(self.file, what))
    }

    fn take(&mut self, n: u64, what: &str) -> R<&'a [u8]> {
        let end = (self.pos as u64).checked_add(n).filter(|&e| e <= self.file_len);
        let Some(end) = end else {
            return Err(self.bad(format!(
                "{what} ({n} bytes at byte {}) runs past the end of the file ({} bytes)",
                self.pos, self.file_len
            )));
        };
        if end > self.buf.len() as u64 {
            return Err(Stop::Short(end));
        }
        let s = &self.buf[self.pos..end as usize];
        self.pos = end as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> R<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> R<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> R<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn bytes_str(&mut self, what: &str) -> R<&'a [u8]> {
        let n = self.u64(what)?;
        self.take(n, what)
    }

    /// A string that must be UTF-8 (keys, tensor names).
    fn name(&mut self, what: &str) -> R<String> {
        let b = self.bytes_str(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.bad(format!("{what} is not UTF-8")))
    }

    /// A count of `min_size`-byte items that must fit in the rest of the file.
    fn count(&mut self, what: &str, min_size: u64, max: u64) -> R<u64> {
        let n = self.u64(what)?;
        let room = (self.file_len - self.pos as u64) / min_size.max(1);
        if n > room || n > max {
            return Err(
                self.bad(format!("{what} {n} cannot be right: the rest of the file has room for {room} (limit {max})"))
            );
        }
        Ok(n)
    }

    fn value(&mut self, t: MetaType, key: &str, depth: usize) -> R<MetaValue> {
        self.values += 1;
        if self.values > MAX_META_VALUES {
            return Err(self.bad(format!("more than {MAX_META_VALUES} metadata values (at `{key}`)")));
        }
        Ok(match t {
            MetaType::U8 => MetaValue::U8(self.array::<1>(key)?[0]),
            MetaType::I8 => MetaValue::I8(self.array::<1>(key)?[0] as i8),
            MetaType::Bool => MetaValue::Bool(self.array::<1>(key)?[0] != 0),
            MetaType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(key)?)),
            MetaType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(key)?)),
            MetaType::U32 => MetaValue::U32(self.u32(key)?),
            MetaType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(key)?)),
            MetaType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(key)?)),
            MetaType::U64 => MetaValue::U64(self.u64(key)?),
            MetaType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(key)?)),
            MetaType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(key)?)),
            // Values (unlike keys) may hold byte-level tokenizer pieces: keep them lossily.
            MetaType::Str => MetaValue::Str(String::from_utf8_lossy(self.bytes_str(key)?).into_owned()),
            MetaType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.bad(format!("`{key}`: arrays nested deeper than {MAX_ARRAY_DEPTH}")));
                }
                let id = self.u32(key)?;
                let et = MetaType::from_id(id)
                    .ok_or_else(|| self.bad(format!("`{key}`: unknown array element type {id}")))?;
                let min = match et {
                    MetaType::U8 | MetaType::I8 | MetaType::Bool => 1,
                    MetaType::U16 | MetaType::I16 => 2,
                    MetaType::U32 | MetaType::I32 | MetaType::F32 => 4,
                    MetaType::Str | MetaType::U64 | MetaType::I64 | MetaType::F64 => 8,
                    MetaType::Array => 12,
                };
                let n = self.count(&format!("`{key}`: array length"), min, (MAX_META_VALUES - self.values) as u64)?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(et, key, depth + 1)?);
                }
                MetaValue::Array(et, items)
            }
        })
    }
}

/// Parses the header from `prefix`, the first bytes of a file of `file_len`
/// bytes called `name` (used in errors). When the prefix ends inside the
/// header, returns `NeedMore(n)` with `n` at least double the prefix (at most
/// the file, and at most `MAX_HEADER_BYTES`). Tensors of types our kernels do
/// not read parse as `FileDType::Other`; ids ggml does not define are errors.
pub fn parse_gguf_header(prefix: &[u8], file_len: u64, name: &str) -> Result<Parsed> {
    let prefix = &prefix[..prefix.len().min(usize::try_from(file_len).unwrap_or(usize::MAX))];
    let mut r = Reader { buf: prefix, pos: 0, file_len, file: name, values: 0 };
    match parse(&mut r) {
        Ok(h) => Ok(Parsed::Header(h)),
        Err(Stop::Bad(e)) => Err(e),
        Err(Stop::Short(end)) if end > MAX_HEADER_BYTES => {
            Err(malformed(name, format!("the GGUF header would be over {MAX_HEADER_BYTES} bytes (needs {end})")))
        }
        Err(Stop::Short(end)) => {
            let grown = end.max(prefix.len() as u64 * 2).max(MIN_FETCH);
            Ok(Parsed::NeedMore(grown.min(file_len).min(MAX_HEADER_BYTES)))
        }
    }
}

fn parse(r: &mut Reader) -> R<WeightsHeader> {
    if r.array::<4>("the magic")? != *MAGIC {
        return Err(r.bad("it does not start with the GGUF magic".into()));
    }
    let version = r.u32("the version")?;
    if version != 2 && version != 3 {
        let why = if matches!(version.swap_bytes(), 2 | 3) {
            "big-endian GGUF is not supported"
        } else {
            "only versions 2 and 3 are"
        };
        return Err(Stop::Bad(Error::UnsupportedFormat {
            op: "GGUF",
            format: format!("GGUF version {version}"),
            why: format!("`{}`: {why}", r.file),
        }));
    }
    let n_tensors = r.count("tensor_count", 24, MAX_TENSORS)?;
    let n_kv = r.count("metadata_kv_count", 13, MAX_KVS)?;
    let mut metadata: Vec<(String, MetaValue)> = Vec::with_capacity(n_kv as usize);
    let mut keys = HashSet::new();
    for _ in 0..n_kv {
        let key = r.name("a metadata key")?;
        let id = r.u32(&key)?;
        let t = MetaType::from_id(id).ok_or_else(|| r.bad(format!("`{key}`: unknown metadata value type {id}")))?;
        let v = r.value(t, &key, 0)?;
        if !keys.insert(key.clone()) {
            return Err(r.bad(format!("metadata key `{key}` appears twice")));
        }
        metadata.push((key, v));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment").map(|(_, v)| v) {
        None => 32,
        Some(MetaValue::U32(a)) if a.is_power_of_two() => *a as u64,
        Some(v) => return Err(r.bad(format!("general.alignment must be a UINT32 power of two, got {v:?}"))),
    };
    let mut raw = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = r.name("a tensor name")?;
        let n_dims = r.u32(&name)?;
        if n_dims > MAX_DIMS {
            return Err(r.bad(format!("tensor `{name}` has {n_dims} dimensions (at most {MAX_DIMS})")));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(r.u64(&name)?);
        }
        let id = r.u32(&name)?;
        let offset = r.u64(&name)?;
        let dtype = ggml_type(id).ok_or_else(|| {
            Stop::Bad(Error::UnsupportedFormat {
                op: "GGUF",
                format: format!("ggml type {id} (unknown)"),
                why: format!("tensor `{name}` in `{}`", r.file),
            })
        })?;
        raw.push((name, ne, dtype, offset));
    }
    let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, ne, dtype, rel) in raw {
        let bad = |what: String| r.bad(format!("tensor `{name}`: {what}"));
        let numel = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).filter(|&n| n <= i64::MAX as u64);
        let Some(numel) = numel else { return Err(bad(format!("dimensions {ne:?} overflow"))) };
        let row = ne.first().copied().unwrap_or(1);
        if !row.is_multiple_of(dtype.block_elems()) {
            return Err(bad(format!(
                "row length ne[0] = {row} is not a multiple of the {dtype} block ({})",
                dtype.block_elems()
            )));
        }
        if !rel.is_multiple_of(alignment) {
            return Err(bad(format!("offset {rel} is not a multiple of the alignment {alignment}")));
        }
        let size = dtype.byte_size(numel).ok_or_else(|| bad(format!("{dtype} size of {ne:?} overflows")))?;
        let offset = data_start.checked_add(rel).ok_or_else(|| bad(format!("offset {rel} overflows")))?;
        tensors.push(TensorInfo { name, shape: ne.into_iter().rev().collect(), dtype, offset, size });
    }
    check_unique(r.file, &tensors)?;
    check_layout(r.file, &tensors, data_start, r.file_len)?;
    apply_orig_shapes(r, &metadata, &mut tensors)?;
    Ok(WeightsHeader {
        format: FileFormat::Gguf,
        file: r.file.into(),
        file_len: r.file_len,
        data_start,
        metadata,
        tensors,
    })
}

/// Metadata key prefix of ComfyUI-GGUF's original shapes (`get_orig_shape`, loader.py @ 795e451).
pub const ORIG_SHAPE_PREFIX: &str = "comfy.gguf.orig_shape.";

/// Restores the shapes recorded as `comfy.gguf.orig_shape.<name>` (ARRAY of INT32, PyTorch order)
/// as ComfyUI-GGUF does: the bytes are the original's row-major elements, so only `shape` changes.
/// Same element count; a block format's innermost dimension must stay whole blocks (the GPU layout
/// `[rows, innermost]` keeps blocks inside rows). A key naming no tensor is ignored (as ComfyUI).
fn apply_orig_shapes(r: &Reader, metadata: &[(String, MetaValue)], tensors: &mut [TensorInfo]) -> R<()> {
    for (key, v) in metadata {
        let Some(name) = key.strip_prefix(ORIG_SHAPE_PREFIX) else { continue };
        let Some(t) = tensors.iter_mut().find(|t| t.name == name) else { continue };
        let bad = |what: String| r.bad(format!("`{key}`: {what}"));
        let MetaValue::Array(MetaType::I32, items) = v else {
            return Err(bad(format!("expected an ARRAY of INT32, got {}", v.display_short(4))));
        };
        if items.len() > MAX_DIMS as usize {
            return Err(bad(format!("{} dimensions (at most {MAX_DIMS})", items.len())));
        }
        let dims = items.iter().map(|d| if let MetaValue::I32(d @ 0..) = d { Some(*d as u64) } else { None });
        let shape = dims
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| bad(format!("a negative dimension in {}", v.display_short(8))))?;
        let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        if numel != Some(t.numel()) {
            return Err(bad(format!(
                "shape {shape:?} does not hold the {} elements of `{}` {:?}",
                t.numel(),
                t.name,
                t.shape
            )));
        }
        let be = t.dtype.block_elems();
        if !shape.last().copied().unwrap_or(1).is_multiple_of(be) {
            return Err(bad(format!(
                "the innermost dimension of {shape:?} is not whole {}-element {} blocks",
                be, t.dtype
            )));
        }
        t.shape = shape;
    }
    Ok(())
}

/// Writes a GGUF v3 file: metadata in the given order, tensors in the given
/// order at aligned offsets (`general.alignment` if given as UINT32, else 32).
pub fn write_gguf(metadata: &[(String, MetaValue)], tensors: &[TensorData]) -> Result<Vec<u8>> {
    tensors.iter().try_for_each(|t| t.check("write_gguf"))?;
    let infos: Vec<_> = tensors.iter().map(|t| (t.name.clone(), t.shape.clone(), t.dtype)).collect();
    let (mut out, alignment) = write_gguf_header(metadata, &infos)?;
    for t in tensors {
        out.resize(out.len().div_ceil(alignment) * alignment, 0);
        out.extend_from_slice(&t.data);
    }
    Ok(out)
}

/// The header of the file [`write_gguf`] writes for tensors `(name, PyTorch shape, format)`, up to
/// the start of the data section (padded to the alignment, also returned); the data follows with
/// each tensor padded to the alignment. For files too large to build in memory (benchmarks).
pub fn write_gguf_header(
    metadata: &[(String, MetaValue)],
    tensors: &[(String, Vec<u64>, FileDType)],
) -> Result<(Vec<u8>, usize)> {
    let invalid = |what: String| Error::InvalidArgument(format!("write_gguf: {what}"));
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment").map(|(_, v)| v) {
        None => 32,
        Some(MetaValue::U32(a)) if a.is_power_of_two() => *a as u64,
        Some(v) => return Err(invalid(format!("general.alignment {v:?} is not a UINT32 power of two"))),
    };
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        out.extend_from_slice(&(v.meta_type() as u32).to_le_bytes());
        put_value(&mut out, v).map_err(|e| invalid(format!("`{k}`: {e}")))?;
    }
    let mut offset = 0u64;
    for (name, shape, dtype) in tensors {
        let id = ggml_type_id(*dtype).ok_or_else(|| invalid(format!("{dtype} is not a ggml type")))?;
        if shape.len() > MAX_DIMS as usize {
            return Err(invalid(format!("`{name}` has more than {MAX_DIMS} dimensions")));
        }
        let size = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).and_then(|n| dtype.byte_size(n));
        let size = size.ok_or_else(|| invalid(format!("`{name}` {shape:?} is not whole {dtype} blocks")))?;
        put_str(&mut out, name);
        // A scalar is stored as one dimension of 1.
        let ne: Vec<u64> = if shape.is_empty() { vec![1] } else { shape.iter().rev().copied().collect() };
        out.extend_from_slice(&(ne.len() as u32).to_le_bytes());
        ne.iter().for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset = (offset + size).div_ceil(alignment) * alignment;
    }
    out.resize(out.len().div_ceil(alignment as usize) * alignment as usize, 0);
    Ok((out, alignment as usize))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) -> std::result::Result<(), String> {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.push(*x as u8),
        MetaValue::Bool(x) => out.push(*x as u8),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Str(s) => put_str(out, s),
        MetaValue::Array(t, items) => {
            out.extend_from_slice(&(*t as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                if item.meta_type() != *t {
                    return Err(format!("an array of {t:?} holds a {:?}", item.meta_type()));
                }
                put_value(out, item)?;
            }
        }
    }
    Ok(())
}
