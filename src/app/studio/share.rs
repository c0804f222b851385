//! Share links (the recipe in the URL fragment) and PNG recipes. Opening a link restores the
//! form and, before anything is downloaded, lists the hosts the recipe reads from and waits for
//! the user's OK; dropping a PNG made here restores its recipe (without generating).

use wasm_bindgen::JsCast;
use web_sys::{DragEvent, Event};

use super::output::{show_error, status};
use super::{form, App};
use crate::app::dom::{by_id, set_text, set_value, window, AppError, AppResult};
use crate::limits::{Cap, LORA_FILE_BYTES, PNG_FILE_BYTES};
use crate::recipe::png::recipe_from_png;
use crate::recipe::share::{from_fragment, to_fragment};
use crate::recipe::Recipe;

/// The page URL without its fragment.
fn page_url() -> AppResult<String> {
    let href = window()?.location().href()?;
    Ok(href.split('#').next().unwrap_or(&href).to_string())
}

/// Puts the share link of `recipe` in #share-link.
pub fn show_link(recipe: &Recipe) -> AppResult<()> {
    let link = format!("{}{}", page_url()?, to_fragment(recipe)?);
    set_value("share-link", &link)?;
    set_text(
        "share-note",
        if recipe.references_used {
            "This set used reference images. Links never carry images: whoever opens the link gets the same settings and seed, and must drop the same references for the same result."
        } else {
            "Opening the link restores these settings; after the visitor confirms the download hosts, the same seed and weights give the same set (up to GPU rounding)."
        },
    )
}

/// Restores a recipe from the page's fragment, if it has one, and asks before downloading.
pub fn on_load(app: &App) -> AppResult<()> {
    let hash = window()?.location().hash()?;
    if !hash.contains("r=") {
        return Ok(());
    }
    match from_fragment(&hash) {
        Ok(recipe) => {
            form::restore(&recipe)?;
            refresh_refs(app);
            ask(app, &recipe)
        }
        Err(e) => {
            show_error(&format!("This share link could not be opened: {e}"), "share");
            Ok(())
        }
    }
}

fn refresh_refs(app: &App) {
    let _ = super::refs::rebuild(app);
}

/// Asks before downloading what `recipe` names (the hosts, then a generation).
fn ask(app: &App, recipe: &Recipe) -> AppResult<()> {
    let note = format!(
        "{} steps at {}×{}, seed {}.{}",
        recipe.steps,
        recipe.width,
        recipe.height,
        recipe.seed,
        if recipe.references_used { " The original set used reference images, which links do not carry." } else { "" }
    );
    let urls = recipe.urls();
    super::confirm::open(
        app,
        super::confirm::Ask::Link,
        &super::confirm::hosts_of(urls.iter().map(String::as_str)),
        &note,
    )
}

pub fn bind(app: &App) -> AppResult<()> {
    let a = app.clone();
    crate::app::dom::on::<Event>(&by_id("adapter-file")?, "change", move |e| {
        let input = e.target().and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok());
        if let Some(file) = input.as_ref().and_then(|i| i.files()).and_then(|f| f.get(0)) {
            let a = a.clone();
            wasm_bindgen_futures::spawn_local(async move {
                if let Err(e) = add_lora_file(&a, file).await {
                    show_error(&e.to_string(), "lora");
                }
            });
        }
    })?;
    // A file dropped anywhere else on the page: a PNG restores its recipe, a .safetensors is a LoRA.
    let doc: web_sys::EventTarget = crate::app::dom::document()?.into();
    crate::app::dom::on::<DragEvent>(&doc, "dragover", |e| e.prevent_default())?;
    let a = app.clone();
    crate::app::dom::on::<DragEvent>(&doc, "drop", move |e| {
        e.prevent_default();
        let file = e.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0));
        if let Some(file) = file {
            let a = a.clone();
            wasm_bindgen_futures::spawn_local(async move {
                if let Err(e) = restore_png(&a, file).await {
                    show_error(&e.to_string(), "png");
                }
            });
        }
    })?;
    Ok(())
}

/// The bytes of a user's file, refused before reading when larger than `cap` allows.
pub async fn file_bytes(file: &web_sys::File, cap: &Cap) -> AppResult<Vec<u8>> {
    cap.check(&file.name(), file.size() as u64)?;
    let buf = wasm_bindgen_futures::JsFuture::from(file.array_buffer()).await?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// Hands a LoRA file the user picked or dropped to the worker and lists it as an adapter.
pub async fn add_lora_file(app: &App, file: web_sys::File) -> AppResult<()> {
    let bytes = file_bytes(&file, &LORA_FILE_BYTES).await?;
    let name = file.name();
    app.send(&crate::app::protocol::ToWorker::AddFile { name: name.clone() }, vec![bytes.clone()])?;
    app.state.borrow_mut().dropped_files.insert(name.clone(), bytes);
    form::add_adapter_row(&format!("file:{name}"), 1.0)?;
    status(
        &format!("{name} added as a LoRA (scale 1.0). Dropped files stay on this device: share links leave them out."),
        "ok",
    )
}

/// Restores the recipe in a PNG made by this app.
pub async fn restore_png(app: &App, file: web_sys::File) -> AppResult<()> {
    if file.name().ends_with(".safetensors") {
        return add_lora_file(app, file).await;
    }
    let bytes = file_bytes(&file, &PNG_FILE_BYTES).await?;
    match recipe_from_png(&file.name(), &bytes)? {
        Some(r) => {
            form::restore(&r)?;
            refresh_refs(app);
            status(
                &format!("Recipe restored from {} (seed {}). Press Generate to make it again.", file.name(), r.seed),
                "ok",
            )?;
            crate::app::dom::set_marker("restored", &r.seed.to_string())
        }
        None => Err(AppError::Browser(format!(
            "{} has no iclora recipe (only PNGs saved by this app carry one)",
            file.name()
        ))),
    }
}
