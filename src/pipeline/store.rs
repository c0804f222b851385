//! Where a run's files come from: one [`ModelStore`], passed like `Gpu` to everything that reads
//! a model (component resolution, the session, the worker, the CLI). It
//! - opens a location for random access: a local path, an http(s) URL, or a file handed to the
//!   app (`file:<name>`, a dropped LoRA: a browser gives no path to it);
//! - plans a run ([`plan`](ModelStore::plan)): every file it will read, with its size and whether
//!   this machine holds it already;
//! - in the browser, downloads files into the OPFS cache ([`cache_file`](ModelStore::cache_file))
//!   and reads them from there through sync access handles it owns, else by synchronous Range
//!   requests (a dedicated worker may block). Natively files are read in place, URLs by Range
//!   requests (`weights::http`), and nothing is downloaded first.
//!
//! It holds no global state: two stores (two tests, two workers) never see each other's files.

use std::cell::RefCell;
use std::collections::HashMap;

use super::components::resolve;
use super::generate::{sub, ModelPaths};
use crate::error::Result;
use crate::limits::Cap;
use crate::model::taef1;
use crate::weights::load::{ByteSource, MemSource};

/// A path or an http(s) URL.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// One file a run reads, as a plan lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannedFile {
    /// The component it belongs to ("transformer", "VAE", "LoRA", ...).
    pub component: String,
    pub location: String,
    pub bytes: u64,
    /// Already here: a local or handed-in file, or (browser) complete in the cache.
    pub cached: bool,
}

/// Opens, plans, downloads and caches the files of runs (see the module doc).
#[derive(Default)]
pub struct ModelStore {
    /// Files handed to the app, by their `file:<name>` location.
    added: RefCell<HashMap<String, Vec<u8>>>,
    /// Sync handles of cached files (browser worker).
    #[cfg(target_arch = "wasm32")]
    handles: crate::weights::browser::Handles,
}

impl ModelStore {
    pub fn new() -> ModelStore {
        ModelStore::default()
    }

    /// Keeps `bytes` (a file the user gave the app: small files, adapters not models) under the
    /// location it returns, `file:<name>`.
    pub fn add_file(&self, name: &str, bytes: Vec<u8>) -> String {
        let location = format!("file:{name}");
        self.added.borrow_mut().insert(location.clone(), bytes);
        location
    }

    fn added(&self, location: &str) -> Option<Vec<u8>> {
        self.added.borrow().get(location).cloned()
    }

    /// Random access to `location`'s bytes.
    pub fn open(&self, location: &str) -> Result<Box<dyn ByteSource>> {
        if let Some(bytes) = self.added(location) {
            return Ok(Box::new(MemSource { name: location.into(), bytes }));
        }
        #[cfg(not(target_arch = "wasm32"))]
        return Ok(if is_url(location) {
            Box::new(crate::weights::http::HttpSource::open(location)?)
        } else {
            Box::new(crate::weights::load::FileSource::open(location)?)
        });
        #[cfg(target_arch = "wasm32")]
        return self.handles.open(location);
    }

    /// `location`'s size in bytes (a handed-in file's without copying it).
    pub fn size(&self, location: &str) -> Result<u64> {
        match self.added.borrow().get(location) {
            Some(bytes) => Ok(bytes.len() as u64),
            None => Ok(self.open(location)?.len()),
        }
    }

    /// Whether `location` exists: a local path is checked, a URL is asked for (404/410 is absence).
    pub fn exists(&self, location: &str) -> Result<bool> {
        if self.added.borrow().contains_key(location) {
            return Ok(true);
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            if !is_url(location) {
                return Ok(std::path::Path::new(location).is_file());
            }
            match crate::weights::http::HttpSource::open(location) {
                Ok(_) => Ok(true),
                Err(crate::error::Error::Http { status: 404 | 410, .. }) => Ok(false),
                Err(e) => Err(e),
            }
        }
        #[cfg(target_arch = "wasm32")]
        return crate::weights::browser::xhr::exists(location);
    }

    /// Whether `location` is a local directory (never for URLs, nor in browsers).
    pub fn is_dir(&self, location: &str) -> bool {
        #[cfg(not(target_arch = "wasm32"))]
        return !is_url(location) && std::path::Path::new(location).is_dir();
        #[cfg(target_arch = "wasm32")]
        return {
            let _ = location;
            false
        };
    }

    /// A small file (config, tokenizer, index) whole, refused (`Error::FileLimit`) when it is
    /// larger than `cap` allows: natively before any byte is read, from its length.
    pub fn read_all(&self, location: &str, cap: &Cap) -> Result<Vec<u8>> {
        if let Some(bytes) = self.added(location) {
            cap.check(location, bytes.len() as u64)?;
            return Ok(bytes);
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let mut s = self.open(location)?;
            cap.check(location, s.len())?;
            let len = usize::try_from(s.len()).map_err(|_| crate::error::Error::Io {
                file: location.into(),
                message: "too large to read whole".into(),
            })?;
            s.read_range(0, len)
        }
        // A plain GET learns the length with the body; the cap still keeps an oversized answer
        // from being parsed (JSON parsing multiplies its memory several times).
        #[cfg(target_arch = "wasm32")]
        {
            let bytes = crate::weights::browser::xhr::read_all(location)?;
            cap.check(location, bytes.len() as u64)?;
            Ok(bytes)
        }
    }

    /// Every weights file a run with `paths` and `loras` will read (shards included), found by
    /// resolving the components as the session does, reading only headers, configs and indexes:
    /// what a browser downloads (and caches) first, and what the page shows before a download
    /// starts. In the browser, files complete in the cache are read from there (their headers are
    /// not fetched again: every Generate plans first) and marked `cached`.
    pub async fn plan(&self, paths: &ModelPaths, loras: &[(String, f32)]) -> Result<Vec<PlannedFile>> {
        #[cfg(target_arch = "wasm32")]
        let cached = {
            let cached = crate::weights::browser::cache::list().await.unwrap_or_default();
            let roots: Vec<&str> =
                [&paths.root, &paths.transformer, &paths.vae, &paths.t5, &paths.clip, &paths.preview_decoder]
                    .into_iter()
                    .flatten()
                    .map(String::as_str)
                    .chain(loras.iter().map(|(u, _)| u.as_str()))
                    .collect();
            for c in cached.iter().filter(|c| c.complete && roots.iter().any(|r| c.url.starts_with(r))) {
                let _ = self.handles.prepare(&c.url).await;
            }
            cached
        };
        let here = |location: &str, bytes: u64| {
            #[cfg(target_arch = "wasm32")]
            return self.added.borrow().contains_key(location)
                || cached.iter().any(|c| c.url == location && c.complete && c.bytes == bytes);
            #[cfg(not(target_arch = "wasm32"))]
            return {
                let _ = bytes;
                !is_url(location)
            };
        };
        let mut out = Vec::new();
        let mut add = |component: &str, files: Vec<(String, u64)>| {
            for (location, bytes) in files {
                let cached = here(&location, bytes);
                out.push(PlannedFile { component: component.into(), location, bytes, cached });
            }
        };
        let components = [
            ("transformer", "transformer", paths.transformer.as_deref(), "diffusion_pytorch_model"),
            ("T5 text encoder", "text_encoder_2", paths.t5.as_deref(), "model"),
            ("CLIP text encoder", "text_encoder", paths.clip.as_deref(), "model"),
            ("VAE", "vae", paths.vae.as_deref(), "diffusion_pytorch_model"),
        ];
        for (component, folder, file, stem) in components {
            add(component, resolve(self, component, sub(paths, folder).as_deref(), file, stem)?.weights.files);
        }
        if let Some(file) = &paths.preview_decoder {
            add(taef1::MODEL, resolve(self, taef1::MODEL, None, Some(file), "diffusion_pytorch_model")?.weights.files);
        }
        for (file, _) in loras {
            let bytes = self.size(file).map_err(|e| super::components::in_component("LoRA", file, e))?;
            add("LoRA", vec![(file.clone(), bytes)]);
        }
        Ok(out)
    }

    /// Closes the cache's read handles (they lock their files); the next plan opens them again.
    pub fn release(&self) {
        #[cfg(target_arch = "wasm32")]
        self.handles.release_all();
    }
}

/// The browser's cache, behind the store (its sync handles are the store's).
#[cfg(target_arch = "wasm32")]
impl ModelStore {
    /// Makes sure `url` is complete in the cache (downloading or resuming it, `on_progress` told
    /// as bytes arrive) and opens it for reading; `NotCached` when the browser offers no cache
    /// here (the file is then streamed while loading).
    pub async fn cache_file(
        &self,
        url: &str,
        on_progress: &mut dyn FnMut(&crate::weights::browser::DownloadProgress),
        cancel: &crate::weights::browser::Cancel,
    ) -> Result<crate::weights::browser::CacheStatus> {
        let status = crate::weights::browser::cache::ensure_cached(url, &self.handles, on_progress, cancel).await?;
        if !matches!(status, crate::weights::browser::CacheStatus::NotCached { .. }) {
            self.handles.prepare(url).await?;
        }
        Ok(status)
    }

    /// Deletes `url` from the cache; `Ok(false)` when it was not there.
    pub async fn delete_cached(&self, url: &str) -> Result<bool> {
        crate::weights::browser::cache::delete(url, &self.handles).await
    }
}
