//! The IC-LoRA studio: model and task presets, the caption editor, generation with progress
//! and previews (the engine runs in a worker, `crate::app::worker`), results, the gallery, share
//! links and PNG recipes.

mod confirm;
mod downloads;
mod form;
mod output;
mod refs;
mod share;
mod speed;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use web_sys::{Event, KeyboardEvent};

use super::client::Client;
use super::dom::{by_id, document, enable, input, on, set_text, value, AppError, AppResult};
use super::protocol::{FromWorker, GenerateRequest, ReferenceSpec, ToWorker};
use crate::recipe::{ModelSource, ModelUrls, Recipe};
use downloads::Downloads;

/// A reference image for one panel: RGB pixels at the panel's size.
pub struct Reference {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    pub strength: Option<f32>,
}

/// A finished set of this visit.
pub struct SetEntry {
    pub job: u32,
    pub recipe: Recipe,
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u8>,
    pub png: Vec<u8>,
}

#[derive(Default)]
pub struct State {
    pub next_job: u32,
    /// The generation in progress, with its recipe.
    pub running: Option<(u32, Recipe)>,
    pub started_ms: f64,
    pub step_secs: Vec<f64>,
    pub references: BTreeMap<usize, Reference>,
    pub sets: Vec<SetEntry>,
    /// The set shown in #result.
    pub shown: Option<u32>,
    /// The plan request whose answer #plan-table shows.
    pub plan_job: Option<u32>,
    /// A confirmed share link waits for the engine to be ready.
    pub pending_generate: bool,
    /// The model + adapter URLs the user agreed to download (see `try_generate`).
    pub confirmed: Option<String>,
    /// A plan requested to show what a Generate would download.
    pub confirming: Option<String>,
    /// The hosts the user let this page contact in this visit (`host[:port]`, punycode).
    pub allowed_hosts: std::collections::BTreeSet<String>,
    /// What the open confirmation dialog asks, and the hosts it lists.
    pub asking: Option<(confirm::Ask, Vec<String>)>,
    /// Counts engine workers started; a crash report names the one it is about.
    pub engine_generation: u32,
    /// Restarts since the engine was last ready (a worker that dies on start is not retried forever).
    pub restarts_unready: u32,
    /// LoRA files the user dropped, by name: given to every new engine worker.
    pub dropped_files: BTreeMap<String, Vec<u8>>,
}

pub struct Studio {
    pub state: RefCell<State>,
    pub client: RefCell<Option<Client>>,
}

pub type App = Rc<Studio>;

impl Studio {
    pub fn send(&self, msg: &ToWorker, bufs: Vec<Vec<u8>>) -> AppResult<()> {
        match self.client.borrow().as_ref() {
            Some(c) => c.send(msg, bufs),
            None => Err(AppError::Browser("the engine worker is not running".into())),
        }
    }
}

/// The page's address, against which recipes' relative locations are read.
pub fn page_base() -> String {
    document().ok().and_then(|d| d.base_uri().ok().flatten()).unwrap_or_default()
}

/// Resolves a URL relative to the page (a `file:` name of a dropped file stays as it is).
pub fn absolute(url: &str) -> String {
    web_sys::Url::new_with_base(url, &page_base()).map(|u| u.href()).unwrap_or_else(|_| url.to_string())
}

/// Where the worker finds the model of `source`: its URLs, made absolute (the same function as
/// the worker's runs and `iclora generate --recipe`).
pub fn model_spec(source: &ModelSource) -> AppResult<ModelUrls> {
    Ok(crate::recipe::run::model_locations(source, Some(&page_base()))?)
}

/// Builds the page: presets, handlers, the worker; restores a shared recipe from the URL.
pub fn start() -> AppResult<App> {
    let app: App = Rc::new(Studio { state: RefCell::default(), client: RefCell::new(None) });
    form::fill_presets()?;
    speed::fill()?;
    form::set_value_default()?;
    spawn_engine(&app)?;
    bind(&app)?;
    refs::rebuild(&app)?;
    share::on_load(&app)?;
    Ok(app)
}

/// Starts an engine worker and asks it to open the GPU.
fn spawn_engine(app: &App) -> AppResult<()> {
    let a = app.clone();
    let on_msg = move |msg, bufs| {
        if let Err(e) = on_message(&a, msg, bufs) {
            output::show_error(&e.to_string(), "error");
        }
    };
    let a = app.clone();
    let generation = app.state.borrow().engine_generation;
    let on_crash = move |why: String| {
        // Later in this turn: the handler calling this belongs to the client `restart` drops.
        let a = a.clone();
        wasm_bindgen_futures::spawn_local(async move { restart(&a, generation, &why) });
    };
    *app.client.borrow_mut() = Some(Client::start(on_msg, on_crash)?);
    app.send(&ToWorker::Init, vec![])?;
    // The worker keeps dropped LoRA files in its memory: a new one gets them again.
    for (name, bytes) in app.state.borrow().dropped_files.iter() {
        app.send(&ToWorker::AddFile { name: name.clone() }, vec![bytes.clone()])?;
    }
    Ok(())
}

/// After this many restarts without the engine becoming ready, the page stops trying.
const MAX_RESTARTS_UNREADY: u32 = 2;

/// The engine worker `generation` died: ends its job with a message, replaces the worker, and
/// keeps everything the page holds (the form, references, the gallery, dropped LoRA files).
fn restart(app: &App, generation: u32, why: &str) {
    let attempts = {
        let mut s = app.state.borrow_mut();
        if s.engine_generation != generation {
            return; // Already replaced (one death can be reported twice).
        }
        s.engine_generation += 1;
        s.restarts_unready += 1;
        (s.plan_job, s.confirming) = (None, None);
        s.restarts_unready
    };
    web_sys::console::error_1(&format!("the engine's worker stopped: {why}").into());
    drop(app.client.borrow_mut().take());
    let was_running = app.state.borrow().running.is_some();
    if was_running {
        let _ = output::finished(app);
    }
    // Until the new worker is ready.
    let _ = enable("generate", false);
    let _ = set_text("plan-summary", "");
    let _ = crate::app::dom::set_marker("engine", "restarting");
    let what = if was_running { "stopped during this generation" } else { "stopped" };
    if attempts > MAX_RESTARTS_UNREADY {
        output::show_error(&format!("The engine {what} ({why}) and could not be started again. Your settings and sets are still here; reload the page to try again."), "crashed");
        return;
    }
    output::show_error(
        &format!("The engine {what} ({why}). It is being restarted; your settings, reference panels and sets are kept. Press Generate to try again (with fewer steps, a smaller canvas or a smaller model if this repeats)."),
        "crashed",
    );
    if let Err(e) = spawn_engine(app) {
        output::show_error(&format!("The engine could not be restarted ({e}); reload the page."), "crashed");
    }
}

fn bind(app: &App) -> AppResult<()> {
    let doc: web_sys::EventTarget = document()?.into();
    let a = app.clone();
    on::<Event>(&by_id("model-preset")?, "change", move |_| {
        let _ = value("model-preset").and_then(|id| form::describe_model(&id));
        let _ = form::fit_canvas_to_model();
        // What this model will download (headers only), when its hosts may be contacted.
        if let Err(e) = plan_if_allowed(&a) {
            let _ = set_text("plan-summary", &e.to_string());
        }
    })?;
    on::<Event>(&by_id("task-preset")?, "change", |_| {
        let _ = value("task-preset").and_then(|id| form::apply_task(&id)).and_then(|_| form::fit_canvas_to_model());
    })?;
    let a = app.clone();
    on::<Event>(&by_id("form")?, "input", move |e| {
        let id = e.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()).map(|t| t.id()).unwrap_or_default();
        if id == "prompt" {
            let _ = input("prompt-auto").map(|c| c.set_checked(false));
        } else if id == "rows" || id == "cols" {
            let _ = form::regrid();
            let _ = refs::rebuild(&a);
        } else if id == "width" || id == "height" {
            let _ = refs::rebuild(&a);
        }
        let _ = form::rebuild_prompt();
    })?;
    on::<Event>(&by_id("fast-preset")?, "change", |_| {
        let _ = speed::apply();
    })?;
    on::<Event>(&by_id("prompt-auto")?, "change", |_| {
        let _ = form::rebuild_prompt();
    })?;
    on::<Event>(&by_id("adapter-add")?, "click", |_| {
        let _ = form::add_adapter_row("", 1.0);
    })?;
    let a = app.clone();
    on::<Event>(&by_id("form")?, "submit", move |e| {
        e.prevent_default();
        generate(&a);
    })?;
    let a = app.clone();
    on::<KeyboardEvent>(&doc, "keydown", move |e| {
        if e.key() == "Enter" && (e.ctrl_key() || e.meta_key()) {
            e.prevent_default();
            // A confirmation is a click on its button, never a shortcut.
            if !confirm::is_open() {
                generate(&a);
            }
        }
    })?;
    let a = app.clone();
    on::<Event>(&by_id("cancel")?, "click", move |_| {
        let job = a.state.borrow().running.as_ref().map(|(j, _)| *j);
        if let Some(job) = job {
            let _ = a.send(&ToWorker::Cancel { job }, vec![]);
            let _ = set_text("progress-text", "Cancelling after the current step…");
        }
    })?;
    let a = app.clone();
    on::<Event>(&by_id("plan-check")?, "click", move |_| {
        let asked = Downloads::from_form().map(|d| confirm::unallowed(&a, d.hosts())).and_then(|hosts| {
            if hosts.is_empty() {
                plan(&a)
            } else {
                confirm::open(&a, confirm::Ask::Plan, &hosts, "")
            }
        });
        if let Err(e) = asked {
            let _ = set_text("plan-summary", &e.to_string());
        }
    })?;
    output::bind(app)?;
    confirm::bind(app)?;
    share::bind(app)?;
    Ok(())
}

/// The plan of the form's model, if all its hosts may be contacted; else says which hosts a
/// size check would ask.
fn plan_if_allowed(app: &App) -> AppResult<()> {
    let hosts = confirm::unallowed(app, Downloads::from_form()?.hosts());
    if hosts.is_empty() {
        return plan(app);
    }
    crate::app::dom::clear(&by_id("plan-table")?);
    let names: Vec<&str> = hosts.iter().map(|h| h.label.as_str()).collect();
    set_text("plan-summary", &format!("This model downloads from {}. “Check download size” asks them for the sizes; nothing is contacted before that.", names.join(", ")))
}

/// Asks the worker for the download plan of the chosen model, adapters and preview decoder.
fn plan(app: &App) -> AppResult<()> {
    plan_of(app, Downloads::from_form()?)
}

fn plan_of(app: &App, d: Downloads) -> AppResult<()> {
    set_text("plan-summary", "Asking the servers for file sizes (headers only)…")?;
    let job = next_job(app);
    app.state.borrow_mut().plan_job = Some(job);
    app.send(&ToWorker::Plan { job, model: d.model, loras: d.loras }, vec![])
}

fn next_job(app: &App) -> u32 {
    let mut s = app.state.borrow_mut();
    s.next_job += 1;
    s.next_job
}

/// Starts a generation from the form (ignored while one runs).
pub fn generate(app: &App) {
    if app.state.borrow().running.is_some() {
        return;
    }
    if let Err(e) = try_generate(app) {
        output::show_error(&e.to_string(), "form");
    }
}

fn try_generate(app: &App) -> AppResult<()> {
    if input("seed-random")?.checked() {
        let seed = (js_sys::Math::random() * 4_294_967_296.0) as u64;
        form::set_seed(seed)?;
    }
    form::rebuild_prompt()?;
    let references_used = !app.state.borrow().references.is_empty();
    let recipe = form::recipe(references_used)?;
    let model =
        ModelUrls { preview_decoder: downloads::preview_decoder()?, ..recipe.model_locations(Some(&page_base()))? };
    let (mut specs, mut bufs) = (Vec::new(), Vec::new());
    for (panel, r) in app.state.borrow().references.iter() {
        specs.push(ReferenceSpec { panel: *panel, width: r.width, height: r.height, strength: r.strength });
        bufs.push(r.rgb.clone());
    }
    let loras = recipe
        .lora_locations(Some(&page_base()))?
        .into_iter()
        .chain(form::dropped_adapters()?.into_iter().map(|a| (a.url, a.scale)))
        .collect();
    let request = GenerateRequest {
        recipe: recipe.clone(),
        model,
        loras,
        references: specs,
        preview_every: 1,
        convert: value("convert")?.parse()?,
    };
    // Gigabytes from other hosts are fetched only after the user has seen what they are.
    let d = Downloads { model: request.model.clone(), loras: request.loras.clone() };
    let key = d.key();
    if d.has_other_hosts() && app.state.borrow().confirmed.as_deref() != Some(key.as_str()) {
        let hosts = confirm::unallowed(app, d.hosts());
        if !hosts.is_empty() {
            return confirm::open(app, confirm::Ask::Generate, &hosts, "");
        }
        app.state.borrow_mut().confirming = Some(key);
        output::status("Asking the servers for file sizes (headers only); no weights are downloaded yet…", "ok")?;
        return plan_of(app, d);
    }
    let job = next_job(app);
    output::started(app, job, recipe)?;
    app.send(&ToWorker::Generate { job, request }, bufs)
}

/// The user accepted downloads for the form's current model, adapters and preview decoder (a
/// share link's OK).
pub fn confirm_downloads(app: &App) -> AppResult<()> {
    app.state.borrow_mut().confirmed = Some(Downloads::from_form()?.key());
    Ok(())
}

fn on_message(app: &App, msg: FromWorker, bufs: Vec<Vec<u8>>) -> AppResult<()> {
    match msg {
        FromWorker::Ready { adapter, paths, .. } => {
            app.state.borrow_mut().restarts_unready = 0;
            enable("generate", true)?;
            output::status(
                &format!("Engine ready on {} ({paths}).", if adapter.is_empty() { "your GPU" } else { &adapter }),
                "ok",
            )?;
            super::dom::set_marker("engine", "ready")?;
            app.send(&ToWorker::CacheList, vec![])?;
            if std::mem::take(&mut app.state.borrow_mut().pending_generate) {
                generate(app);
            }
        }
        FromWorker::Plan { job, files } => {
            if app.state.borrow().plan_job == Some(job) {
                output::show_plan(&files)?;
                let confirming = app.state.borrow_mut().confirming.take();
                if let Some(key) = confirming {
                    let missing: u64 = files.iter().filter(|f| !f.cached).map(|f| f.bytes).sum();
                    if missing == 0 {
                        app.state.borrow_mut().confirmed = Some(key);
                        generate(app);
                    } else {
                        output::status(
                            &format!(
                                "Generate will first download {}; confirm to start.",
                                super::dom::human_bytes(missing)
                            ),
                            "ok",
                        )?;
                        let hosts = confirm::hosts_of(files.iter().filter(|f| !f.cached).map(|f| f.location.as_str()));
                        confirm::open(app, confirm::Ask::Download { key, bytes: missing }, &hosts, "")?;
                    }
                }
            }
        }
        FromWorker::Cache { files, note } => output::show_cache(app, &files, &note)?,
        FromWorker::Exported { names, .. } => output::save_files(&names, bufs)?,
        FromWorker::Error { job, kind, message } => {
            let running = app.state.borrow().running.as_ref().map(|(j, _)| *j);
            if running == Some(job) {
                output::finished(app)?;
            }
            if app.state.borrow().plan_job == Some(job) {
                // A failed plan confirms nothing: the next plan is a plain size check.
                app.state.borrow_mut().confirming = None;
                set_text("plan-summary", "")?;
            }
            output::show_error(&message, &kind);
        }
        other => output::progress(app, other, bufs)?,
    }
    Ok(())
}

/// Reference specs are only meaningful for the current grid; `refs` keeps them in sync.
pub fn panel_count() -> usize {
    let n = |id: &str| value(id).ok().and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(1).max(1);
    n("rows") * n("cols")
}
