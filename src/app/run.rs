//! One generation in the worker: download (into the OPFS cache, or streamed when the cache is
//! unavailable), the pipeline run with progress and previews posted to the page, and the finished
//! set (canvas + panels) kept for exports.

use std::cell::RefCell;
use std::rc::Rc;

use super::protocol::{FromWorker, GenerateRequest};
use super::worker::post;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::matmul::Precision;
use crate::pipeline::conditioning::{RefMode, Reference};
use crate::pipeline::generate::{Event, GenerateOptions, Observer, RgbImage, Session};
use crate::pipeline::panels::Layout;
use crate::pipeline::store::{is_url, ModelStore, PlannedFile};
use crate::recipe::png::encode_image;
use crate::recipe::Recipe;
use crate::weights::browser::{CacheStatus, Cancel, DownloadProgress};

/// A finished set, kept in the worker for exports.
pub struct Finished {
    pub image: RgbImage,
    pub rows: usize,
    pub cols: usize,
    pub recipe: Option<Recipe>,
}

/// Files downloaded at the same time (each is one streamed request at a time).
const PARALLEL_FILES: usize = 3;
/// The studio's matmul tiles: f32 on every GPU, so that a share link gives the same set on a GPU
/// with `shader-f16` as on one without (f16 products round differently).
pub(crate) const PRECISION: Precision = Precision::F32;

/// Fetches every planned file into the store's cache (skipping complete entries), a few at a
/// time, each then open for synchronous reads; progress per file and overall goes to the page.
pub async fn download(store: &Rc<ModelStore>, job: u32, files: &[PlannedFile], cancel: &Cancel) -> Result<()> {
    // Dropped files (`file:`) are in memory already.
    let files: Vec<PlannedFile> = files.iter().filter(|f| is_url(&f.location)).cloned().collect();
    let overall_total: u64 = files.iter().map(|f| f.bytes).sum();
    let bytes = Rc::new(RefCell::new(vec![0u64; files.len()]));
    for (c, chunk) in files.chunks(PARALLEL_FILES).enumerate() {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let results: Rc<RefCell<Vec<Result<()>>>> = Rc::default();
        let promises = js_sys::Array::new();
        for (k, f) in chunk.iter().enumerate() {
            let (f, bytes, results, cancel) = (f.clone(), bytes.clone(), results.clone(), cancel.clone());
            let store = store.clone();
            let index = c * PARALLEL_FILES + k;
            promises.push(&wasm_bindgen_futures::future_to_promise(async move {
                let r = download_one(&store, job, &f, index, &bytes, overall_total, &cancel).await;
                results.borrow_mut().push(r);
                Ok(wasm_bindgen::JsValue::NULL)
            }));
        }
        // Every promise resolves (errors are kept in `results`), so `all` waits for the chunk.
        let _ = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::all(&promises)).await;
        let done = std::mem::take(&mut *results.borrow_mut());
        done.into_iter().collect::<Result<Vec<()>>>()?;
    }
    Ok(())
}

async fn download_one(
    store: &ModelStore,
    job: u32,
    f: &PlannedFile,
    index: usize,
    bytes: &RefCell<Vec<u64>>,
    overall_total: u64,
    cancel: &Cancel,
) -> Result<()> {
    let what = format!("{} ({})", f.component, short(&f.location));
    post(&FromWorker::Stage { job, stage: "download".into(), what }, vec![]);
    let mut restarts = 0;
    let mut on_progress = |p: &DownloadProgress| {
        if p.restarts > restarts {
            restarts = p.restarts;
            let message = format!(
                "{}: the file changed on the server during the download; downloading it again from the start",
                short(&f.location)
            );
            post(&FromWorker::Warning { job, message }, vec![]);
        }
        let overall_bytes = {
            let mut b = bytes.borrow_mut();
            if let Some(slot) = b.get_mut(index) {
                *slot = p.bytes;
            }
            b.iter().sum()
        };
        post(
            &FromWorker::Download {
                job,
                file: f.location.clone(),
                bytes: p.bytes,
                total: p.total,
                rate: p.rate,
                eta: p.eta_s.unwrap_or(f64::NAN),
                overall_bytes,
                overall_total,
            },
            vec![],
        )
    };
    if let CacheStatus::NotCached { reason } = store.cache_file(&f.location, &mut on_progress, cancel).await? {
        post(
            &FromWorker::Warning {
                job,
                message: format!(
                    "{}: not cached ({reason}); it is read from the network while loading",
                    short(&f.location)
                ),
            },
            vec![],
        );
    }
    if let Some(slot) = bytes.borrow_mut().get_mut(index) {
        *slot = f.bytes;
    }
    Ok(())
}

/// The last path segment of a URL, for progress lines.
fn short(location: &str) -> &str {
    location.rsplit('/').next().unwrap_or(location)
}

struct Progress<'a> {
    job: u32,
    cancel: &'a Cancel,
    preview_every: usize,
}

impl Observer for Progress<'_> {
    fn event(&mut self, e: Event<'_>) {
        let job = self.job;
        let msg = match e {
            Event::Line(l) => FromWorker::Line { job, line: l.into() },
            Event::Warning(w) => FromWorker::Warning { job, message: w.into() },
            Event::Adapter(a) => FromWorker::Adapter { job, summary: a.into() },
            Event::Stage { stage, what } => {
                FromWorker::Stage { job, stage: format!("{stage:?}").to_lowercase(), what: what.into() }
            }
            Event::Step { index, steps, seconds, computed } => {
                FromWorker::Step { job, index, steps, seconds, computed }
            }
            Event::Preview { index, image } => {
                post(
                    &FromWorker::Preview { job, step: index, width: image.width, height: image.height },
                    vec![rgba(image)],
                );
                return;
            }
        };
        post(&msg, vec![]);
    }
    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
    fn preview_every(&self) -> usize {
        self.preview_every
    }
}

/// RGB → RGBA (what `ImageData` takes).
pub fn rgba(img: &RgbImage) -> Vec<u8> {
    img.pixels.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect()
}

/// Runs the pipeline for `req` in the worker's `session` (models stay loaded for the next set) and posts the canvas (RGBA for display, PNG with the recipe).
pub async fn run_job(
    gpu: &Gpu,
    store: &ModelStore,
    session: &mut Session,
    job: u32,
    req: &GenerateRequest,
    pixels: Vec<Vec<u8>>,
    cancel: &Cancel,
) -> Result<Finished> {
    let t = crate::clock::Stopwatch::start();
    if pixels.len() != req.references.len() {
        return Err(Error::InvalidArgument(format!(
            "{} reference panels but {} images came with them",
            req.references.len(),
            pixels.len()
        )));
    }
    let references = req
        .references
        .iter()
        .zip(pixels)
        .map(|(r, rgb)| Reference {
            panel: r.panel,
            image: RgbImage { width: r.width, height: r.height, pixels: rgb },
            mode: match r.strength {
                Some(strength) => RefMode::Guide { strength },
                None => RefMode::Keep,
            },
        })
        .collect();
    // The run is the recipe's (`iclora generate --recipe` derives it the same way), plus what only
    // this browser has: reference images, dropped LoRA files, the load conversion.
    let opts = GenerateOptions {
        references,
        convert: req.convert,
        f16: PRECISION == Precision::F16,
        ..req.recipe.generate_options(req.loras.clone())
    };
    let image = session
        .run(gpu, store, &req.model, &opts, &mut Progress { job, cancel, preview_every: req.preview_every })
        .await?;
    let recipe = Some(req.recipe.clone());
    let png = encode_image(&image, recipe.as_ref())?;
    post(
        &FromWorker::Done { job, width: image.width, height: image.height, seconds: t.secs() },
        vec![rgba(&image), png],
    );
    let layout = req.recipe.layout;
    Ok(Finished { image, rows: layout.rows as usize, cols: layout.cols as usize, recipe })
}

/// PNGs of the canvas and each panel (named `set-<job>-canvas.png`, `set-<job>-panel-<k>.png`),
/// or one zip of them.
pub fn export(f: &Finished, job: u32, zip: bool) -> Result<(Vec<String>, Vec<Vec<u8>>)> {
    let layout = Layout::new(f.rows, f.cols);
    let mut names = vec![format!("set-{job}-canvas.png")];
    let mut files = vec![encode_image(&f.image, f.recipe.as_ref())?];
    for (k, rect) in layout.panels(f.image.width, f.image.height)?.iter().enumerate() {
        let p = crate::pipeline::panels::cut(&f.image, rect)?;
        names.push(format!("set-{job}-panel-{}.png", k + 1));
        files.push(encode_image(&p, f.recipe.as_ref())?);
    }
    if !zip {
        return Ok((names, files));
    }
    let entries: Vec<(&str, &[u8])> =
        names.iter().map(|n| n.as_str()).zip(files.iter().map(|f| f.as_slice())).collect();
    Ok((vec![format!("set-{job}.zip")], vec![crate::recipe::zip::zip(&entries)?]))
}
