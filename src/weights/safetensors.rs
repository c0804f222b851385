//! safetensors headers (the "Format" section of huggingface/safetensors README.md @ 24b0b28): `u64 N`
//! little-endian, N bytes of JSON, then the byte buffer. Parsed from a prefix of the file so a
//! remote file's tensors are known after one Range request; and a writer for
//! fixtures.

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::tensor_info::{
    check_layout, check_unique, malformed, FileDType, FileFormat, MetaValue, Parsed, TensorData, TensorInfo,
    WeightsHeader, MAX_HEADER_BYTES, MAX_TENSORS,
};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Every dtype string the format defines: (name, elements per block, bytes per block).
/// F4 packs two elements per byte, F6 four per three bytes.
const DTYPES: [(&str, u32, u32); 20] = [
    ("F32", 1, 4),
    ("F16", 1, 2),
    ("BF16", 1, 2),
    ("F8_E4M3", 1, 1),
    ("F8_E5M2", 1, 1),
    ("BOOL", 1, 1),
    ("U8", 1, 1),
    ("I8", 1, 1),
    ("I16", 1, 2),
    ("U16", 1, 2),
    ("I32", 1, 4),
    ("U32", 1, 4),
    ("F64", 1, 8),
    ("I64", 1, 8),
    ("U64", 1, 8),
    ("F8_E8M0", 1, 1),
    ("F4", 2, 1),
    ("F6_E2M3", 4, 3),
    ("F6_E3M2", 4, 3),
    ("C64", 1, 8),
];

/// The `FileDType` of a safetensors dtype string; `None` if the format does not define it.
pub fn file_dtype(s: &str) -> Option<FileDType> {
    Some(match s {
        "F32" => FileDType::Gpu(DType::F32),
        "F16" => FileDType::Gpu(DType::F16),
        "BF16" => FileDType::Gpu(DType::BF16),
        "F8_E4M3" => FileDType::F8E4M3,
        "F8_E5M2" => FileDType::F8E5M2,
        _ => {
            let &(name, block_elems, block_bytes) = DTYPES.iter().find(|d| d.0 == s)?;
            FileDType::Other { name, block_elems, block_bytes }
        }
    })
}

/// Parses the header from `prefix`, the first bytes of a file of `file_len`
/// bytes called `name` (used in errors). Returns `NeedMore(8 + N)` when the
/// prefix ends inside the JSON. Never panics; allocates at most a bounded
/// multiple of the header (≤ `MAX_HEADER_BYTES`).
pub fn parse_safetensors_header(prefix: &[u8], file_len: u64, name: &str) -> Result<Parsed> {
    if file_len < 8 {
        return Err(malformed(name, format!("the file is {file_len} bytes, shorter than the 8-byte header length")));
    }
    let Some(len_bytes) = prefix.get(..8) else { return Ok(Parsed::NeedMore(8)) };
    let mut n = [0u8; 8];
    n.copy_from_slice(len_bytes);
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_BYTES || n > file_len - 8 {
        return Err(malformed(
            name,
            format!("the header claims {n} bytes of JSON but the file is {file_len} bytes (limit {MAX_HEADER_BYTES})"),
        ));
    }
    let data_start = 8 + n;
    let Some(json) = prefix.get(8..data_start as usize) else { return Ok(Parsed::NeedMore(data_start)) };
    if json.first() != Some(&b'{') {
        return Err(malformed(name, "the JSON header does not start with `{`"));
    }
    let entries: Entries = serde_json::from_slice(json).map_err(|e| malformed(name, format!("header JSON: {e}")))?;
    let mut metadata = Vec::new();
    let mut tensors = Vec::with_capacity(entries.0.len());
    for (key, value) in entries.0 {
        if key == "__metadata__" {
            metadata = parse_metadata(name, value)?;
        } else {
            tensors.push(parse_tensor(name, key, &value, data_start)?);
        }
    }
    check_unique(name, &tensors)?;
    check_layout(name, &tensors, data_start, file_len)?;
    Ok(Parsed::Header(WeightsHeader {
        format: FileFormat::Safetensors,
        file: name.into(),
        file_len,
        data_start,
        metadata,
        tensors,
    }))
}

fn parse_metadata(file: &str, value: Value) -> Result<Vec<(String, MetaValue)>> {
    let Value::Object(map) = value else { return Err(malformed(file, "`__metadata__` is not a JSON object")) };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, MetaValue::Str(s))),
            other => Err(malformed(file, format!("`__metadata__.{k}` is {other}, not a string"))),
        })
        .collect()
}

fn parse_tensor(file: &str, name: String, v: &Value, data_start: u64) -> Result<TensorInfo> {
    let bad = |what: &str| malformed(file, format!("tensor `{name}`: {what}"));
    let dtype_str = v.get("dtype").and_then(Value::as_str).ok_or_else(|| bad("no string `dtype`"))?;
    let dtype = file_dtype(dtype_str).ok_or_else(|| bad(&format!("unknown dtype {dtype_str:?}")))?;
    let shape = u64_array(v.get("shape")).ok_or_else(|| bad("`shape` is not an array of non-negative integers"))?;
    let offsets = u64_array(v.get("data_offsets"))
        .filter(|o| o.len() == 2)
        .ok_or_else(|| bad("`data_offsets` is not [begin, end]"))?;
    let (begin, end) = (offsets[0], offsets[1]);
    if begin > end {
        return Err(bad(&format!("data_offsets [{begin}, {end}] end before they begin")));
    }
    let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    let size = numel.and_then(|n| dtype.byte_size(n));
    if size != Some(end - begin) {
        return Err(bad(&format!(
            "shape {shape:?} of {dtype} needs {} bytes but data_offsets [{begin}, {end}] hold {}",
            size.map_or("an impossible number of".to_string(), |s| s.to_string()),
            end - begin
        )));
    }
    let offset = data_start.checked_add(begin).ok_or_else(|| bad("offset overflows"))?;
    Ok(TensorInfo { name, shape, dtype, offset, size: end - begin })
}

fn u64_array(v: Option<&Value>) -> Option<Vec<u64>> {
    v?.as_array()?.iter().map(Value::as_u64).collect()
}

/// The top-level JSON object in document order, rejecting duplicate keys
/// (`serde_json::Value` would silently keep the last one).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Entries, A::Error> {
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    // Checked while parsing, before the tensor list is allocated.
                    if out.len() as u64 > MAX_TENSORS {
                        return Err(serde::de::Error::custom(format!("more than {MAX_TENSORS} tensors")));
                    }
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!("the key `{k}` appears twice")));
                    }
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Writes a spec-conformant safetensors file: tensors contiguous in the given
/// order, the JSON padded with spaces to a multiple of 8 bytes (as the
/// reference writer does, so the buffer starts 8-aligned).
pub fn write_safetensors(metadata: &[(String, String)], tensors: &[TensorData]) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let m = metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        header.insert("__metadata__".into(), Value::Object(m));
    }
    let mut offset = 0u64;
    for t in tensors {
        t.check("write_safetensors")?;
        let name = t.dtype.name();
        if file_dtype(name) != Some(t.dtype) {
            return Err(Error::UnsupportedFormat {
                op: "write_safetensors",
                format: name.into(),
                why: "not a safetensors dtype".into(),
            });
        }
        let end = offset + t.data.len() as u64;
        let entry = serde_json::json!({ "dtype": name, "shape": t.shape, "data_offsets": [offset, end] });
        if header.insert(t.name.clone(), entry).is_some() {
            return Err(Error::InvalidArgument(format!("write_safetensors: tensor `{}` given twice", t.name)));
        }
        offset = end;
    }
    let mut json = serde_json::to_vec(&Value::Object(header)).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset as usize);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for t in tensors {
        out.extend_from_slice(&t.data);
    }
    Ok(out)
}
