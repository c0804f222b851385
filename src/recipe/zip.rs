//! A minimal ZIP writer for "download all panels": store-only (PNGs are compressed already),
//! UTF-8 names, one fixed DOS timestamp so the same files always give the same bytes.
//! Layout per PKWARE APPNOTE 6.3.x §4.3: local file header + data for each entry, then the
//! central directory, then the end-of-central-directory record. No ZIP64: totals stay below
//! 4 GiB and 65535 entries (wasm32 memory could not hold more anyway).

use crate::error::{Error, Result};

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const END_SIG: u32 = 0x0605_4b50;
/// 2.0: the version that introduced deflate/folders; every unzip reads it.
const VERSION: u16 = 20;
/// General purpose flag bit 11: names are UTF-8.
const FLAG_UTF8: u16 = 1 << 11;
/// 1980-01-01 00:00:00, the DOS epoch: `date = (year-1980)<<9 | month<<5 | day`, time 0.
pub const DOS_DATE: u16 = (1 << 5) | 1;
pub const DOS_TIME: u16 = 0;

fn u16le(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn u32le(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn too_big(what: &str, needed: u64, available: u64) -> Error {
    Error::LimitExceeded { what: format!("a ZIP archive's {what}"), needed, available }
}

/// Fields shared by the local and central headers, from "version needed" to "extra length".
fn common_fields(out: &mut Vec<u8>, crc: u32, size: u32, name_len: u16) {
    u16le(out, VERSION); // version needed to extract
    u16le(out, FLAG_UTF8);
    u16le(out, 0); // method: stored
    u16le(out, DOS_TIME);
    u16le(out, DOS_DATE);
    u32le(out, crc);
    u32le(out, size); // compressed size
    u32le(out, size); // uncompressed size
    u16le(out, name_len);
    u16le(out, 0); // extra field length
}

/// A store-only ZIP of `(name, bytes)` entries, in order. Names use `/` for folders.
pub fn zip(entries: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    if entries.len() > u16::MAX as usize {
        return Err(too_big("entry count", entries.len() as u64, u16::MAX as u64));
    }
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let name_len = u16::try_from(name.len()).map_err(|_| too_big("file name length", name.len() as u64, u16::MAX as u64))?;
        let size = u32::try_from(data.len()).map_err(|_| too_big("entry size", data.len() as u64, u32::MAX as u64))?;
        let offset = u32::try_from(out.len()).map_err(|_| too_big("size", out.len() as u64, u32::MAX as u64))?;
        let crc = crc32fast::hash(data);

        u32le(&mut out, LOCAL_SIG);
        common_fields(&mut out, crc, size, name_len);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);

        u32le(&mut central, CENTRAL_SIG);
        u16le(&mut central, VERSION); // version made by: MS-DOS (0) / 2.0
        common_fields(&mut central, crc, size, name_len);
        u16le(&mut central, 0); // comment length
        u16le(&mut central, 0); // disk number start
        u16le(&mut central, 0); // internal attributes
        u32le(&mut central, 0); // external attributes
        u32le(&mut central, offset);
        central.extend_from_slice(name.as_bytes());
    }
    let total = out.len() as u64 + central.len() as u64 + 22;
    if total > u32::MAX as u64 {
        return Err(too_big("size", total, u32::MAX as u64));
    }
    let cd_offset = out.len() as u32;
    let cd_size = central.len() as u32;
    out.extend_from_slice(&central);
    u32le(&mut out, END_SIG);
    u16le(&mut out, 0); // this disk
    u16le(&mut out, 0); // disk with the central directory
    u16le(&mut out, entries.len() as u16);
    u16le(&mut out, entries.len() as u16);
    u32le(&mut out, cd_size);
    u32le(&mut out, cd_offset);
    u16le(&mut out, 0); // comment length
    Ok(out)
}
