//! Random access to a weights file's bytes: a local file, bytes in memory, and (elsewhere) HTTP
//! Range requests and the browser's OPFS cache, all behind one [`ByteSource`] trait.

use std::io::{Read, Seek, SeekFrom};

use crate::error::{Error, Result};

/// What [`ByteSource::read_range_async`] returns.
pub type ReadFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>>> + 'a>>;

/// Random access to a file's bytes (local file, memory, HTTP Range, the browser's cache).
pub trait ByteSource {
    /// The path or URL, for errors.
    fn name(&self) -> &str;
    /// Total bytes.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Exactly `len` bytes at `offset`, or an error (never a short read).
    fn read_range(&mut self, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// [`read_range`](Self::read_range) for callers that await (the browser's paced uploads): a
    /// source read over the network then lets the event loop run while the bytes come, instead of
    /// blocking it. By default the synchronous read.
    fn read_range_async(&mut self, offset: u64, len: usize) -> ReadFuture<'_> {
        let read = self.read_range(offset, len);
        Box::pin(std::future::ready(read))
    }
}

fn check_range(name: &str, total: u64, offset: u64, len: usize) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= total => Ok(()),
        _ => Err(Error::Io {
            file: name.into(),
            message: format!("read of {len} bytes at {offset} is past the end ({total} bytes)"),
        }),
    }
}

/// A local file.
pub struct FileSource {
    file: std::fs::File,
    len: u64,
    name: String,
}

impl FileSource {
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<FileSource> {
        let name = path.as_ref().display().to_string();
        let io = |e: std::io::Error| Error::Io { file: name.clone(), message: e.to_string() };
        let file = std::fs::File::open(path.as_ref()).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(FileSource { file, len, name })
    }
}

impl ByteSource for FileSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_range(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        check_range(&self.name, self.len, offset, len)?;
        let io =
            |e: std::io::Error| Error::Io { file: self.name.clone(), message: format!("{len} bytes at {offset}: {e}") };
        self.file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut buf = vec![0u8; len];
        self.file.read_exact(&mut buf).map_err(io)?;
        Ok(buf)
    }
}

/// Bytes in memory (tests, fuzzing, small downloaded files).
pub struct MemSource {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl ByteSource for MemSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_range(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        check_range(&self.name, self.len(), offset, len)?;
        Ok(self.bytes[offset as usize..offset as usize + len].to_vec())
    }
}
