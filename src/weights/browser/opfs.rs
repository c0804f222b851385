//! Synchronous reads of cached files: `OpfsSource` over a
//! `FileSystemSyncAccessHandle` (worker-only), and [`Handles`], which bridges the
//! async world (creating a sync handle returns a promise) and the loaders'
//! synchronous `open`: `prepare(url).await` opens the handle of a complete
//! cache entry and keeps it; `open(url)` then returns it (or, when the URL was
//! not prepared, an `XhrSource` that streams it). The model store
//! (`pipeline::store::ModelStore`) owns the one `Handles` of a worker.
//!
//! A sync handle locks its file (no other handle, no delete, no download into
//! it) until `release`/`release_all`; `ensure_cached`, `delete` and `clear`
//! release the handles they would collide with.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use web_sys::{FileSystemReadWriteOptions, FileSystemSyncAccessHandle};

use super::cache::{cache_dir, file_handle, file_names, read_meta, sync_handle};
use super::{js, XhrSource};
use crate::error::{Error, Result};
use crate::weights::load::ByteSource;

struct Prepared {
    handle: FileSystemSyncAccessHandle,
    len: u64,
    closed: Cell<bool>,
}

impl Prepared {
    fn close(&self) {
        if !self.closed.replace(true) {
            self.handle.close();
        }
    }
}

/// The open sync handles of cached files, by URL.
#[derive(Default)]
pub struct Handles {
    prepared: RefCell<HashMap<String, Rc<Prepared>>>,
}

/// A cached file, read through its sync access handle.
pub struct OpfsSource {
    name: String,
    file: Rc<Prepared>,
}

impl OpfsSource {
    /// Wraps an open handle (its size is the file's length now).
    pub fn new(name: &str, handle: FileSystemSyncAccessHandle) -> Result<OpfsSource> {
        let len = handle.get_size().map_err(|e| Error::Io { file: name.into(), message: js::error_text(&e) })? as u64;
        Ok(OpfsSource { name: name.into(), file: Rc::new(Prepared { handle, len, closed: Cell::new(false) }) })
    }

    /// Closes the handle (also done by `release`); later reads fail.
    pub fn close(&self) {
        self.file.close();
    }
}

impl ByteSource for OpfsSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.file.len
    }
    fn read_range(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let io = |message: String| Error::Io { file: self.name.clone(), message };
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.file.len => {}
            _ => return Err(io(format!("read of {len} bytes at {offset} is past the end ({} bytes)", self.file.len))),
        }
        if self.file.closed.get() {
            return Err(io("the cached file was released (release_all) or deleted; prepare it again".into()));
        }
        let mut buf = vec![0u8; len];
        let mut got = 0usize;
        while got < len {
            let at = FileSystemReadWriteOptions::new();
            at.set_at((offset + got as u64) as f64);
            let n = self
                .file
                .handle
                .read_with_u8_array_and_options(&mut buf[got..], &at)
                .map_err(|e| io(format!("{len} bytes at {offset}: {}", js::error_text(&e))))?;
            if n <= 0.0 {
                return Err(io(format!("the cached file ended after {} of {len} bytes at {offset}; delete it from the cache and download it again", got)));
            }
            got += n as usize;
        }
        Ok(buf)
    }
}

impl Handles {
    /// Opens the sync handle of `url`'s complete cache entry for `open`. `Ok(false)`
    /// when it is not (completely) cached or there is no OPFS / sync handle here
    /// (not a worker); an error when the file is locked (in use elsewhere).
    pub async fn prepare(&self, url: &str) -> Result<bool> {
        if self.prepared.borrow().contains_key(url) {
            return Ok(true);
        }
        let Ok(dir) = cache_dir().await else { return Ok(false) };
        let Some(meta) = read_meta(&dir, url).await.filter(|m| m.complete && m.stored == m.bytes) else {
            return Ok(false);
        };
        let Ok(Some(fh)) = file_handle(&dir, &file_names(url).0, false).await else { return Ok(false) };
        let handle = match sync_handle(&fh).await {
            Ok(h) => h,
            Err(e) if js::error_name(&e) == "NoModificationAllowedError" => {
                return Err(Error::Io {
                    file: url.into(),
                    message: "the cached file is in use (being downloaded, or open in another tab)".into(),
                })
            }
            Err(_) => return Ok(false),
        };
        let src = OpfsSource::new(url, handle)?;
        if src.file.len != meta.bytes {
            src.close();
            return Ok(false);
        }
        self.prepared.borrow_mut().insert(url.to_string(), src.file);
        Ok(true)
    }

    /// A source for `url`: the prepared cache file, else an `XhrSource` (which
    /// fetches the first `FIRST_FETCH` bytes now).
    pub fn open(&self, url: &str) -> Result<Box<dyn ByteSource>> {
        if let Some(file) = self.prepared.borrow().get(url).cloned() {
            return Ok(Box::new(OpfsSource { name: url.to_string(), file }));
        }
        Ok(Box::new(XhrSource::open(url)?))
    }

    /// Whether `url` is prepared (its `open` reads the cache).
    pub fn is_prepared(&self, url: &str) -> bool {
        self.prepared.borrow().contains_key(url)
    }

    /// Closes `url`'s prepared handle (sources opened from it fail afterwards).
    pub fn release(&self, url: &str) {
        if let Some(f) = self.prepared.borrow_mut().remove(url) {
            f.close();
        }
    }

    /// Closes every prepared handle (sync handles lock their files).
    pub fn release_all(&self) {
        let all: Vec<Rc<Prepared>> = self.prepared.borrow_mut().drain().map(|(_, f)| f).collect();
        for f in all {
            f.close();
        }
    }
}

impl Drop for Handles {
    /// Sync handles lock their files until closed: none outlives its owner.
    fn drop(&mut self) {
        self.release_all();
    }
}
