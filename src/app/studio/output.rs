//! Progress, previews, the result (canvas and panels), the gallery of this visit's sets,
//! downloads, the download plan and the cache table.

use wasm_bindgen::{Clamped, JsCast};
use web_sys::{CanvasRenderingContext2d, Event, HtmlCanvasElement, HtmlProgressElement, ImageData};

use super::{share, App, SetEntry};
use crate::app::dom::{
    add, by_id, clear, document, enable, human_bytes, human_secs, now_ms, on, set_marker, set_text, show, AppError,
    AppResult,
};
use crate::app::protocol::{CachedFile, FromWorker, PlannedFile, ToWorker};
use crate::recipe::Recipe;

/// The page's status line.
pub fn status(text: &str, class: &str) -> AppResult<()> {
    let s = by_id("status")?;
    s.set_class_name(&format!("status {class}"));
    s.set_text_content(Some(text));
    Ok(())
}

/// What the user can do about an error of `kind` (the worker's `error_kind`).
fn hint(kind: &str) -> &'static str {
    match kind {
        "cors" => " Tip: the host must allow cross-origin reads; Hugging Face `resolve/main` URLs do. Or download the file and use a host that does.",
        "not-found" => " Tip: check the URL; Hugging Face file links look like https://huggingface.co/ORG/REPO/resolve/main/FILE.",
        "quota" => " Tip: free browser storage under “Downloaded files”, or allow this site more storage.",
        "out-of-memory" => " Tip: pick a smaller quantization (Q4_0) or a smaller canvas, then generate again — the page keeps working.",
        "device-lost" => " The GPU was reset; the next Generate opens it again (models are reloaded from the browser's storage).",
        "lora" => " The other settings and models are unchanged: remove or replace this LoRA and generate again.",
        "no-gpu" => " Use Chrome or Edge 113+, Safari 26+ or Firefox 141+ with WebGPU.",
        _ => "",
    }
}

/// Shows an error (the form and earlier results stay as they are).
pub fn show_error(message: &str, kind: &str) {
    // The last preview is of a run that will not finish.
    let _ = show("preview", false);
    if kind == "cancelled" {
        let _ = set_text("progress-text", "Cancelled.");
        let _ = set_marker("state", "cancelled");
        return;
    }
    web_sys::console::error_1(&format!("[{kind}] {message}").into());
    let _ = by_id("error").map(|e| e.set_text_content(Some(&format!("{message}{}", hint(kind)))));
    let _ = show("error", true);
    let _ = set_marker("state", "error");
    let _ = set_marker("errorKind", kind);
}

pub fn bind(app: &App) -> AppResult<()> {
    for (id, zip) in [("download-panels", false), ("download-zip", true)] {
        let a = app.clone();
        on::<Event>(&by_id(id)?, "click", move |_| {
            let job = a.state.borrow().shown;
            if let Some(job) = job {
                let _ = a.send(&ToWorker::Export { job, zip }, vec![]);
            }
        })?;
    }
    let a = app.clone();
    on::<Event>(&by_id("download-canvas")?, "click", move |_| {
        let st = a.state.borrow();
        if let Some(set) = st.shown.and_then(|j| st.sets.iter().find(|s| s.job == j)) {
            let _ = save(&format!("set-{}-canvas.png", set.job), &set.png, "image/png");
        }
    })?;
    Ok(())
}

/// A generation was sent: reset the progress area.
pub fn started(app: &App, job: u32, recipe: Recipe) -> AppResult<()> {
    {
        let mut s = app.state.borrow_mut();
        s.running = Some((job, recipe));
        s.started_ms = now_ms();
        s.step_secs.clear();
    }
    show("error", false)?;
    clear(&by_id("adapter-report")?);
    enable("generate", false)?;
    enable("cancel", true)?;
    set_text("progress-text", "Starting…")?;
    set_text("progress-detail", "")?;
    bar(0.0)?;
    set_marker("state", "running")
}

/// The running generation ended (done, failed or cancelled).
pub fn finished(app: &App) -> AppResult<()> {
    app.state.borrow_mut().running = None;
    enable("generate", true)?;
    enable("cancel", false)
}

fn bar(fraction: f64) -> AppResult<()> {
    let p: HtmlProgressElement =
        by_id("progress-bar")?.dyn_into().map_err(|_| AppError::Browser("#progress-bar".into()))?;
    p.set_value(fraction.clamp(0.0, 1.0));
    Ok(())
}

fn canvas(id: &str) -> AppResult<(HtmlCanvasElement, CanvasRenderingContext2d)> {
    let c: HtmlCanvasElement =
        by_id(id)?.dyn_into().map_err(|_| AppError::Browser(format!("#{id} is not a <canvas>")))?;
    let ctx = c
        .get_context("2d")?
        .ok_or_else(|| AppError::Browser("no 2d context".into()))?
        .dyn_into::<CanvasRenderingContext2d>()
        .map_err(|_| AppError::Browser("no 2d context".into()))?;
    Ok((c, ctx))
}

/// Draws RGBA pixels into the canvas `id`, resizing it.
fn draw(id: &str, width: usize, height: usize, rgba: &[u8]) -> AppResult<HtmlCanvasElement> {
    let (c, ctx) = canvas(id)?;
    c.set_width(width as u32);
    c.set_height(height as u32);
    let data = ImageData::new_with_u8_clamped_array_and_sh(Clamped(rgba), width as u32, height as u32)?;
    ctx.put_image_data(&data, 0.0, 0.0)?;
    Ok(c)
}

/// Progress messages of the running job.
pub fn progress(app: &App, msg: FromWorker, bufs: Vec<Vec<u8>>) -> AppResult<()> {
    let running = app.state.borrow().running.as_ref().map(|(j, _)| *j);
    let job = match &msg {
        FromWorker::Download { job, .. }
        | FromWorker::Stage { job, .. }
        | FromWorker::Step { job, .. }
        | FromWorker::Line { job, .. }
        | FromWorker::Warning { job, .. }
        | FromWorker::Adapter { job, .. }
        | FromWorker::Preview { job, .. }
        | FromWorker::Done { job, .. } => *job,
        _ => return Ok(()),
    };
    if running != Some(job) {
        return Ok(());
    }
    match msg {
        FromWorker::Download { bytes, total, rate, eta, overall_bytes, overall_total, file, .. } => {
            let name = file.rsplit('/').next().unwrap_or(&file).to_string();
            let of = if total > 0 { format!(" of {}", human_bytes(total)) } else { String::new() };
            set_text("progress-text", &format!("Downloading {name}: {}{of}", human_bytes(bytes)))?;
            set_text(
                "progress-detail",
                &format!(
                    "{}/s, about {} left for this file; {} of {} in all",
                    human_bytes(rate as u64),
                    human_secs(eta),
                    human_bytes(overall_bytes),
                    human_bytes(overall_total)
                ),
            )?;
            if overall_total > 0 {
                bar(overall_bytes as f64 / overall_total as f64 * 0.3)?;
            }
        }
        FromWorker::Stage { what, .. } => {
            set_text("progress-text", &format!("{}…", capitalize(&what)))?;
        }
        FromWorker::Step { index, steps, seconds, computed, .. } => {
            let avg = {
                let mut s = app.state.borrow_mut();
                s.step_secs.push(seconds);
                s.step_secs.iter().sum::<f64>() / s.step_secs.len() as f64
            };
            // With the step cache, how many steps ran the whole transformer and how many reused it.
            let cache = computed
                .map(|c| format!(" · step cache: {c} computed, {} skipped", index + 1 - c.min(index + 1)))
                .unwrap_or_default();
            set_text("progress-text", &format!("Step {}/{steps}{cache}", index + 1))?;
            set_text(
                "progress-detail",
                &format!("{seconds:.2} s/step; about {} left", human_secs(avg * (steps - index - 1) as f64)),
            )?;
            bar(0.3 + 0.65 * (index + 1) as f64 / steps as f64)?;
        }
        FromWorker::Line { line, .. } => web_sys::console::log_1(&line.into()),
        FromWorker::Warning { message, .. } => {
            let d = by_id("progress-detail")?;
            d.set_text_content(Some(&format!("Note: {message}")));
        }
        FromWorker::Adapter { summary, .. } => {
            add(&by_id("adapter-report")?, "li", "", &summary)?;
        }
        FromWorker::Preview { width, height, .. } => {
            if let Some(rgba) = bufs.first() {
                draw("preview", width, height, rgba)?;
                show("preview", true)?;
                let body = crate::app::dom::body()?;
                let n = body.dataset().get("previews").and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
                set_marker("previews", &(n + 1).to_string())?;
            }
        }
        FromWorker::Done { width, height, seconds, .. } => {
            let (Some(rgba), Some(png)) = (bufs.first(), bufs.get(1)) else {
                return Err(AppError::Browser("the worker sent a result without pixels".into()));
            };
            let recipe = app.state.borrow().running.as_ref().map(|(_, r)| r.clone());
            finished(app)?;
            let Some(recipe) = recipe else { return Ok(()) };
            let set = SetEntry { job, recipe, width, height, rgba: rgba.clone(), png: png.clone() };
            bar(1.0)?;
            set_text("progress-text", &format!("Done in {}.", human_secs(seconds)))?;
            set_text("progress-detail", "")?;
            show("preview", false)?;
            display(app, &set)?;
            add_to_gallery(app, &set)?;
            app.state.borrow_mut().sets.push(set);
            set_marker("result", &job.to_string())?;
            set_marker("state", "done")?;
            app.send(&ToWorker::CacheList, vec![])?;
        }
        _ => {}
    }
    Ok(())
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// Shows a set in #result: the canvas, its panels, the share link.
pub fn display(app: &App, set: &SetEntry) -> AppResult<()> {
    let full = draw("result-canvas", set.width, set.height, &set.rgba)?;
    let panels = by_id("result-panels")?;
    clear(&panels);
    let (rows, cols) = (set.recipe.layout.rows.max(1) as f64, set.recipe.layout.cols.max(1) as f64);
    let (pw, ph) = (set.width as f64 / cols, set.height as f64 / rows);
    if rows * cols > 1.0 {
        for r in 0..rows as usize {
            for c in 0..cols as usize {
                let canvas: HtmlCanvasElement =
                    add(&panels, "canvas", "panel", "")?.dyn_into().map_err(|_| AppError::Browser("canvas".into()))?;
                canvas.set_width(pw as u32);
                canvas.set_height(ph as u32);
                let ctx = canvas.get_context("2d")?.and_then(|c| c.dyn_into::<CanvasRenderingContext2d>().ok());
                if let Some(ctx) = ctx {
                    ctx.draw_image_with_html_canvas_element_and_sw_and_sh_and_dx_and_dy_and_dw_and_dh(
                        &full,
                        c as f64 * pw,
                        r as f64 * ph,
                        pw,
                        ph,
                        0.0,
                        0.0,
                        pw,
                        ph,
                    )?;
                }
            }
        }
    }
    show("result", true)?;
    app.state.borrow_mut().shown = Some(set.job);
    share::show_link(&set.recipe)
}

fn add_to_gallery(app: &App, set: &SetEntry) -> AppResult<()> {
    let gallery = by_id("gallery")?;
    let fig = add(&gallery, "figure", "", "")?;
    let img = add(&fig, "img", "", "")?;
    img.set_attribute("src", &blob_url(&set.png, "image/png")?)?;
    img.set_attribute("alt", &format!("set {}", set.job))?;
    let caption = set.recipe.prompt.chars().take(80).collect::<String>();
    add(&fig, "figcaption", "", &format!("#{} · seed {} · {}", set.job, set.recipe.seed, caption))?;
    let (a, job) = (app.clone(), set.job);
    on::<Event>(&fig, "click", move |_| {
        let st = a.state.borrow();
        if let Some(set) = st.sets.iter().find(|s| s.job == job) {
            // `display` borrows the state mutably; do it after this borrow ends.
            let _ = display_later(&a, set.job);
        }
    })?;
    Ok(())
}

fn display_later(app: &App, job: u32) -> AppResult<()> {
    let a = app.clone();
    let f = wasm_bindgen::closure::Closure::once_into_js(move || {
        let shown = {
            let st = a.state.borrow();
            st.sets.iter().find(|s| s.job == job).map(|s| SetEntry {
                job: s.job,
                recipe: s.recipe.clone(),
                width: s.width,
                height: s.height,
                rgba: s.rgba.clone(),
                png: s.png.clone(),
            })
        };
        if let Some(s) = shown {
            let _ = display(&a, &s);
        }
    });
    crate::app::dom::window()?.set_timeout_with_callback(f.unchecked_ref())?;
    Ok(())
}

fn blob_url(bytes: &[u8], mime: &str) -> AppResult<String> {
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes).into());
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &opts)?;
    Ok(web_sys::Url::create_object_url_with_blob(&blob)?)
}

/// Offers `bytes` as a download named `name`.
pub fn save(name: &str, bytes: &[u8], mime: &str) -> AppResult<()> {
    let url = blob_url(bytes, mime)?;
    let a: web_sys::HtmlAnchorElement =
        document()?.create_element("a")?.dyn_into().map_err(|_| AppError::Browser("a".into()))?;
    a.set_href(&url);
    a.set_download(name);
    a.click();
    // The download has its own reference; free ours a bit later.
    let f = wasm_bindgen::closure::Closure::once_into_js(move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    });
    crate::app::dom::window()?.set_timeout_with_callback_and_timeout_and_arguments_0(f.unchecked_ref(), 60_000)?;
    Ok(())
}

/// Files of an export, one download each.
pub fn save_files(names: &[String], bufs: Vec<Vec<u8>>) -> AppResult<()> {
    for (n, b) in names.iter().zip(bufs) {
        let mime = if n.ends_with(".zip") { "application/zip" } else { "image/png" };
        save(n, &b, mime)?;
    }
    Ok(())
}

/// The download plan: files, sizes, what is cached, a GPU memory estimate.
pub fn show_plan(files: &[PlannedFile]) -> AppResult<()> {
    let table = by_id("plan-table")?;
    clear(&table);
    let (mut total, mut cached) = (0u64, 0u64);
    for f in files {
        let tr = add(&table, "tr", "", "")?;
        add(&tr, "th", "", &f.component)?;
        add(&tr, "td", "", f.location.rsplit('/').next().unwrap_or(&f.location))?;
        add(&tr, "td", "", &human_bytes(f.bytes))?;
        add(&tr, "td", "", if f.cached { "in browser storage" } else { "to download" })?;
        total += f.bytes;
        if f.cached {
            cached += f.bytes;
        }
    }
    // Weights go to the GPU about as stored (fp8 files are widened to f16); the largest of the
    // stages' working memory comes on top, which the canvas size decides.
    let transformer: u64 = files.iter().filter(|f| f.component == "transformer").map(|f| f.bytes).sum();
    let widen = files.iter().any(|f| f.component == "transformer" && f.location.contains("fp8"));
    let gpu = if widen { transformer * 2 } else { transformer };
    let tokens = {
        let n = |id: &str| crate::app::dom::value(id).ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(1024);
        n("width") * n("height") / 256
    };
    // The widest intermediates of a single block (BFL `SingleStreamBlock`,
    // src/flux/modules/layers.py @ 802fb47): qkv (3·3072) + MLP (12288) + attention output (3072) f32 values
    // per text and image token, about twice over
    // while the next ones are written.
    let work = (tokens + 512) * (3 * 3072 + 12288 + 3072) * 4 * 2;
    set_text(
        "plan-summary",
        &format!(
            "{} in all, {} already in this browser's storage, {} to download. GPU memory: about {} (transformer weights {} + working memory {} at this canvas size); the text encoders and the VAE are loaded one at a time and freed.",
            human_bytes(total),
            human_bytes(cached),
            human_bytes(total - cached),
            human_bytes(gpu + work),
            human_bytes(gpu),
            human_bytes(work)
        ),
    )
}

/// The cached files, each with a Delete button.
pub fn show_cache(app: &App, files: &[CachedFile], note: &str) -> AppResult<()> {
    let table = by_id("cache-table")?;
    clear(&table);
    let total: u64 = files.iter().map(|f| f.bytes).sum();
    set_text(
        "cache-note",
        &format!(
            "{}{} file(s), {} in this browser's storage.",
            if note.is_empty() { String::new() } else { format!("{note}. ") },
            files.len(),
            human_bytes(total)
        ),
    )?;
    for f in files {
        let tr = add(&table, "tr", "", "")?;
        add(&tr, "td", "", &f.url)?;
        add(&tr, "td", "", &format!("{}{}", human_bytes(f.bytes), if f.complete { "" } else { " (partial)" }))?;
        let td = add(&tr, "td", "", "")?;
        let b = add(&td, "button", "", "Delete")?;
        b.set_attribute("type", "button")?;
        let (a, url) = (app.clone(), f.url.clone());
        on::<Event>(&b, "click", move |_| {
            let _ = a.send(&ToWorker::CacheDelete { url: url.clone() }, vec![]);
        })?;
    }
    Ok(())
}
