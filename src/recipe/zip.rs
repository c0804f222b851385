//! "Download all panels": a store-only ZIP (PNGs are compressed already) written by the `zip`
//! crate, with UTF-8 names and one fixed timestamp (the DOS epoch, 1980-01-01 00:00) so that the
//! same files always give the same bytes. No ZIP64: wasm32 memory could not hold 4 GiB anyway.

use std::io::{Cursor, Write};

use ::zip::write::SimpleFileOptions;
use ::zip::{CompressionMethod, DateTime, ZipWriter};

use crate::error::{Error, Result};

/// A store-only ZIP of `(name, bytes)` entries, in order. Names use `/` for folders.
pub fn zip(entries: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let fail = |e: &dyn std::fmt::Display| Error::InvalidArgument(format!("could not write the ZIP archive: {e}"));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .last_modified_time(DateTime::default())
        .large_file(false);
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(*name, options).map_err(|e| fail(&e))?;
        w.write_all(data).map_err(|e| fail(&e))?;
    }
    Ok(w.finish().map_err(|e| fail(&e))?.into_inner())
}
