//! Opening a weights or config location, a local path or an http(s) URL, on either platform.
//! Natively: files and [`super::http::HttpSource`]. In the browser (a dedicated worker, where
//! synchronous reads are allowed): the OPFS cache when the file was prepared there, else
//! synchronous Range requests (`super::browser`). Everything above this module (component
//! resolution, loaders) is the same code on both.

use super::load::ByteSource;
#[cfg(not(target_arch = "wasm32"))]
use crate::error::Error;
use crate::error::Result;
use crate::limits::Cap;

/// A path or an http(s) URL.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Files the user handed to the page (a dropped LoRA), kept in memory under `file:<name>`:
/// browsers give no path to them. Small files only (adapters, not models).
#[cfg(target_arch = "wasm32")]
mod dropped {
    use std::cell::RefCell;
    use std::collections::HashMap;

    thread_local! {
        static FILES: RefCell<HashMap<String, Vec<u8>>> = RefCell::new(HashMap::new());
    }

    pub fn put(location: &str, bytes: Vec<u8>) {
        FILES.with(|f| f.borrow_mut().insert(location.to_string(), bytes));
    }

    pub fn get(location: &str) -> Option<Vec<u8>> {
        FILES.with(|f| f.borrow().get(location).cloned())
    }
}

/// The `file:` location of a file the user gave the page; `bytes` stay in memory.
#[cfg(target_arch = "wasm32")]
pub fn register_dropped(name: &str, bytes: Vec<u8>) -> String {
    let location = format!("file:{name}");
    dropped::put(&location, bytes);
    location
}

/// Random access to `location`'s bytes.
pub fn open(location: &str) -> Result<Box<dyn ByteSource>> {
    #[cfg(target_arch = "wasm32")]
    if let Some(bytes) = dropped::get(location) {
        return Ok(Box::new(super::load::MemSource { name: location.into(), bytes }));
    }
    #[cfg(not(target_arch = "wasm32"))]
    return Ok(if is_url(location) {
        Box::new(super::http::HttpSource::open(location)?)
    } else {
        Box::new(super::load::FileSource::open(location)?)
    });
    #[cfg(target_arch = "wasm32")]
    return super::browser::opfs::open(location);
}

/// Whether `location` exists: a local path is checked, a URL is asked for (404/410 is absence).
pub fn exists(location: &str) -> Result<bool> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        if !is_url(location) {
            return Ok(std::path::Path::new(location).is_file());
        }
        match super::http::HttpSource::open(location) {
            Ok(_) => Ok(true),
            Err(Error::Http { status: 404 | 410, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
    #[cfg(target_arch = "wasm32")]
    return match dropped::get(location) {
        Some(_) => Ok(true),
        None => super::browser::xhr::exists(location),
    };
}

/// Whether `location` is a local directory (never for URLs, nor in browsers).
pub fn is_dir(location: &str) -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    return !is_url(location) && std::path::Path::new(location).is_dir();
    #[cfg(target_arch = "wasm32")]
    return {
        let _ = location;
        false
    };
}

/// A small file (config, tokenizer, index) whole, refused (`Error::FileLimit`) when it is larger
/// than `cap` allows: natively before any byte is read, from its length.
pub fn read_all(location: &str, cap: &Cap) -> Result<Vec<u8>> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let mut s = open(location)?;
        cap.check(location, s.len())?;
        let len = usize::try_from(s.len())
            .map_err(|_| Error::Io { file: location.into(), message: "too large to read whole".into() })?;
        s.read_range(0, len)
    }
    // A plain GET learns the length with the body; the cap still keeps an oversized answer from
    // being parsed (JSON parsing multiplies its memory several times).
    #[cfg(target_arch = "wasm32")]
    {
        let bytes = match dropped::get(location) {
            Some(bytes) => bytes,
            None => super::browser::xhr::read_all(location)?,
        };
        cap.check(location, bytes.len() as u64)?;
        Ok(bytes)
    }
}
