//! The form ↔ [`Recipe`]: presets fill it, the caption fields build the joint prompt, and a
//! recipe (from a share link or a PNG) restores it. Every text goes in through `value` /
//! `textContent`, never as markup.

use wasm_bindgen::JsCast;
use web_sys::{HtmlInputElement, HtmlSelectElement};

use crate::app::dom::{add, by_id, clear, document, input, set_text, set_value, value, AppError, AppResult};
use crate::pipeline::step_cache::StepCache;
use crate::recipe::presets::{build_prompt, model_preset, model_presets, task_preset, task_presets, CaptionTemplate};
use crate::recipe::{Adapter, Captions, Layout, ModelSource, ModelUrls, Recipe, RECIPE_VERSION};

/// The id of the bundled tiny model preset.
pub const TINY: &str = "tiny";
/// `<option>` value of "custom URLs" / "no task".
pub const CUSTOM: &str = "custom";
pub const NO_TASK: &str = "none";

const URL_FIELDS: [(&str, &str); 7] = [
    ("root", "model-root"),
    ("transformer", "model-transformer"),
    ("t5", "model-t5"),
    ("clip", "model-clip"),
    ("vae", "model-vae"),
    ("t5_tokenizer", "model-t5-tokenizer"),
    ("clip_tokenizer", "model-clip-tokenizer"),
];

pub(super) fn select(id: &str) -> AppResult<HtmlSelectElement> {
    by_id(id)?.dyn_into().map_err(|_| AppError::Browser(format!("#{id} is not a <select>")))
}

pub(super) fn option(sel: &HtmlSelectElement, value: &str, text: &str) -> AppResult<()> {
    let o = add(sel, "option", "", text)?;
    o.set_attribute("value", value)?;
    Ok(())
}

/// Fills the model and task `<select>`s from the presets.
pub fn fill_presets() -> AppResult<()> {
    let models = select("model-preset")?;
    clear(&models);
    for m in model_presets()? {
        option(&models, &m.id, &m.title)?;
    }
    option(&models, CUSTOM, "Custom URLs…")?;
    let tasks = select("task-preset")?;
    clear(&tasks);
    option(&tasks, NO_TASK, "None (plain FLUX, or your own LoRA)")?;
    for t in task_presets()? {
        option(&tasks, &t.id, &format!("{} ({}×{}, {} panels)", t.title, t.width, t.height, t.rows * t.cols))?;
    }
    Ok(())
}

fn num<T: std::str::FromStr>(id: &str, what: &str) -> AppResult<T> {
    let v = value(id)?;
    v.trim().parse().map_err(|_| AppError::Browser(format!("{what}: `{v}` is not a valid number")))
}

fn opt(v: String) -> Option<String> {
    let v = v.trim().to_string();
    (!v.is_empty()).then_some(v)
}

/// The model the form names.
pub fn model_source() -> AppResult<ModelSource> {
    let id = value("model-preset")?;
    if id != CUSTOM {
        return Ok(ModelSource::Preset(id));
    }
    let mut u = ModelUrls::default();
    for (field, el) in URL_FIELDS {
        let v = opt(value(el)?);
        match field {
            "root" => u.root = v,
            "transformer" => u.transformer = v,
            "t5" => u.t5 = v,
            "clip" => u.clip = v,
            "vae" => u.vae = v,
            "t5_tokenizer" => u.t5_tokenizer = v,
            _ => u.clip_tokenizer = v,
        }
    }
    Ok(ModelSource::Custom(u))
}

/// The adapter rows (`.adapter` with a URL input and a scale input).
pub fn adapters() -> AppResult<Vec<Adapter>> {
    let rows = document()?.query_selector_all("#adapters .adapter")?;
    let mut out = Vec::new();
    for i in 0..rows.length() {
        let Some(row) = rows.item(i).and_then(|n| n.dyn_into::<web_sys::Element>().ok()) else { continue };
        let url = row
            .query_selector(".adapter-url")?
            .and_then(|e| e.dyn_into::<HtmlInputElement>().ok())
            .map(|e| e.value())
            .unwrap_or_default();
        let scale = row
            .query_selector(".adapter-scale")?
            .and_then(|e| e.dyn_into::<HtmlInputElement>().ok())
            .map(|e| e.value())
            .unwrap_or_default();
        if url.trim().is_empty() {
            continue;
        }
        let scale: f32 =
            scale.trim().parse().map_err(|_| AppError::Browser(format!("LoRA scale `{scale}` is not a number")))?;
        out.push(Adapter { url: url.trim().to_string(), scale });
    }
    Ok(out)
}

/// Adds an adapter row.
pub fn add_adapter_row(url: &str, scale: f32) -> AppResult<()> {
    let list = by_id("adapters")?;
    let row = add(&list, "div", "adapter", "")?;
    let u: HtmlInputElement =
        add(&row, "input", "adapter-url", "")?.dyn_into().map_err(|_| AppError::Browser("input".into()))?;
    u.set_type("url");
    u.set_placeholder("https://…/adapter.safetensors");
    u.set_value(url);
    u.set_attribute("aria-label", "LoRA URL")?;
    let s: HtmlInputElement =
        add(&row, "input", "adapter-scale", "")?.dyn_into().map_err(|_| AppError::Browser("input".into()))?;
    s.set_type("number");
    s.set_step("0.05");
    s.set_value(&scale.to_string());
    s.set_attribute("aria-label", "LoRA scale")?;
    let remove = add(&row, "button", "adapter-remove", "Remove")?;
    remove.set_attribute("type", "button")?;
    let row2 = row.clone();
    crate::app::dom::on::<web_sys::Event>(&remove, "click", move |_| row2.remove())?;
    Ok(())
}

/// The caption template of the chosen task (a plain one for "none").
pub fn template() -> AppResult<CaptionTemplate> {
    let id = value("task-preset")?;
    Ok(match task_preset(&id) {
        Some(t) => t.template.clone(),
        None => CaptionTemplate {
            task_tag: None,
            panel_tags: Vec::new(),
            joiner: " ".into(),
            example_overall: String::new(),
            example_panels: Vec::new(),
        },
    })
}

/// Panel captions, in row-major panel order.
pub fn panel_captions() -> AppResult<Vec<String>> {
    let fields = document()?.query_selector_all("#caption-panels textarea")?;
    Ok((0..fields.length())
        .filter_map(|i| fields.item(i).and_then(|n| n.dyn_into::<web_sys::HtmlTextAreaElement>().ok()))
        .map(|t| t.value())
        .collect())
}

/// Rebuilds one caption field per panel (keeping what was typed where the count allows).
pub fn caption_fields(count: usize, tags: &[String], values: &[String]) -> AppResult<()> {
    let box_ = by_id("caption-panels")?;
    clear(&box_);
    for k in 0..count {
        let tag = tags.get(k).cloned().unwrap_or_else(|| format!("panel {}", k + 1));
        let label = add(&box_, "label", "", &format!("Panel {} {tag}", k + 1))?;
        let t = add(&label, "textarea", "", "")?;
        t.set_attribute("rows", "2")?;
        t.set_attribute("data-panel", &k.to_string())?;
        if let Some(v) = values.get(k) {
            if let Some(t) = t.dyn_ref::<web_sys::HtmlTextAreaElement>() {
                t.set_value(v);
            }
        }
    }
    Ok(())
}

/// Builds the joint prompt from the fields into `#prompt` (when "build from the fields" is on).
pub fn rebuild_prompt() -> AppResult<()> {
    if !input("prompt-auto")?.checked() {
        return Ok(());
    }
    let prompt = build_prompt(&template()?, &value("caption-overall")?, &panel_captions()?);
    set_value("prompt", &prompt)
}

/// Applies a task preset: canvas, grid, steps, guidance, its adapter, example captions.
pub fn apply_task(id: &str) -> AppResult<()> {
    let Some(t) = task_preset(id) else {
        set_text("task-note", "No task LoRA: plain FLUX, or add your own LoRA below.")?;
        caption_fields(0, &[], &[])?;
        return rebuild_prompt();
    };
    for (el, v) in [
        ("width", t.width.to_string()),
        ("height", t.height.to_string()),
        ("rows", t.rows.to_string()),
        ("cols", t.cols.to_string()),
        ("steps", t.steps.to_string()),
        ("guidance", t.guidance.to_string()),
    ] {
        set_value(el, &v)?;
    }
    clear(&by_id("adapters")?);
    add_adapter_row(&t.adapter, t.scale)?;
    set_value("caption-overall", &t.template.example_overall)?;
    caption_fields((t.rows * t.cols) as usize, &t.template.panel_tags, &t.template.example_panels)?;
    set_text(
        "task-note",
        &format!("{}: {}×{} canvas, {} × {} panels, LoRA scale {}, {} steps, guidance {}. Replace the example captions with yours.", t.title, t.width, t.height, t.rows, t.cols, t.scale, t.steps, t.guidance),
    )?;
    input("prompt-auto")?.set_checked(true);
    super::speed::apply()?;
    rebuild_prompt()
}

/// What the model preset will download, for the note under it.
pub fn describe_model(id: &str) -> AppResult<()> {
    let text = match model_preset(id) {
        Some(m) if m.id == TINY => "Random weights, for checking your browser: the whole pipeline runs in seconds and draws noise-like images. 3.6 MB, served by this page.".to_string(),
        Some(m) => {
            let (bytes, exact) = m.known_bytes();
            let size = if bytes > 0 && exact {
                crate::app::dom::human_bytes(bytes)
            } else {
                // The listings' rounded sizes, per file; "Check download size" asks the servers.
                let parts: Vec<String> = [("transformer", &m.transformer), ("T5", &m.t5), ("CLIP", &m.clip), ("VAE", &m.vae)]
                    .iter()
                    .filter_map(|(what, f)| f.as_ref().and_then(|f| f.approx.as_ref()).map(|a| format!("{what} {a}")))
                    .collect();
                if parts.is_empty() { "several GB".into() } else { parts.join(" + ") }
            };
            format!("{} — {size} to download once (kept in this browser's storage). Licence: {}.", m.title, m.license)
        }
        None => "Give a diffusers-layout folder URL, or the single files (GGUF or safetensors). Hosts must allow cross-origin reads (Hugging Face resolve URLs do).".into(),
    };
    set_text("model-note", &text)?;
    if let Some(d) = by_id("model-custom")?.dyn_ref::<web_sys::HtmlDetailsElement>() {
        d.set_open(id == CUSTOM);
    }
    Ok(())
}

/// Adapters the user dropped as files (`file:` locations): used, but not part of a recipe.
pub fn dropped_adapters() -> AppResult<Vec<Adapter>> {
    Ok(adapters()?.into_iter().filter(|a| a.url.starts_with("file:")).collect())
}

/// The recipe the form describes (validated). Dropped LoRA files are left out (a recipe names
/// only what others can download).
pub fn recipe(references_used: bool) -> AppResult<Recipe> {
    let task = value("task-preset")?;
    let r = Recipe {
        version: RECIPE_VERSION,
        model: model_source()?,
        adapters: adapters()?.into_iter().filter(|a| !a.url.starts_with("file:")).collect(),
        task: (task != NO_TASK).then_some(task),
        captions: Captions { overall: value("caption-overall")?, panels: panel_captions()? },
        prompt: value("prompt")?,
        layout: Layout { rows: num("rows", "Rows")?, cols: num("cols", "Columns")? },
        width: num("width", "Width")?,
        height: num("height", "Height")?,
        steps: num("steps", "Steps")?,
        guidance: num("guidance", "Guidance")?,
        seed: num("seed", "Seed")?,
        sampler: "euler".into(),
        references_used,
        step_cache: step_cache()?,
    };
    r.validate()?;
    Ok(r)
}

/// The step-cache controls (`None` when the box is unchecked; an empty cap: no limit).
fn step_cache() -> AppResult<Option<StepCache>> {
    if !input("step-cache")?.checked() {
        return Ok(None);
    }
    let max_reuse = opt(value("step-cache-max-reuse")?)
        .map(|_| num("step-cache-max-reuse", "Reused steps in a row"))
        .transpose()?;
    Ok(Some(StepCache { threshold: num("step-cache-threshold", "Step-cache threshold")?, max_reuse }))
}

/// Puts a recipe back into the form.
pub fn restore(r: &Recipe) -> AppResult<()> {
    match &r.model {
        ModelSource::Preset(id) => set_value("model-preset", id)?,
        ModelSource::Custom(u) => {
            set_value("model-preset", CUSTOM)?;
            for (field, el) in URL_FIELDS {
                let v =
                    u.entries().into_iter().find(|(k, _)| *k == field).map(|(_, v)| v.to_string()).unwrap_or_default();
                set_value(el, &v)?;
            }
        }
    }
    describe_model(&value("model-preset")?)?;
    set_value("task-preset", r.task.as_deref().unwrap_or(NO_TASK))?;
    for (el, v) in [
        ("width", r.width.to_string()),
        ("height", r.height.to_string()),
        ("rows", r.layout.rows.to_string()),
        ("cols", r.layout.cols.to_string()),
        ("steps", r.steps.to_string()),
        ("guidance", r.guidance.to_string()),
        ("seed", r.seed.to_string()),
    ] {
        set_value(el, &v)?;
    }
    input("seed-random")?.set_checked(false);
    input("step-cache")?.set_checked(r.step_cache.is_some());
    if let Some(c) = &r.step_cache {
        set_value("step-cache-threshold", &c.threshold.to_string())?;
        set_value("step-cache-max-reuse", &c.max_reuse.map(|m| m.to_string()).unwrap_or_default())?;
    }
    clear(&by_id("adapters")?);
    for a in &r.adapters {
        add_adapter_row(&a.url, a.scale)?;
    }
    super::speed::restore(r)?;
    set_value("caption-overall", &r.captions.overall)?;
    let tags = r.task.as_deref().and_then(task_preset).map(|t| t.template.panel_tags.clone()).unwrap_or_default();
    caption_fields((r.layout.rows * r.layout.cols) as usize, &tags, &r.captions.panels)?;
    // The stored prompt is the truth; keep it even if the fields would build another.
    input("prompt-auto")?.set_checked(false);
    set_value("prompt", &r.prompt)
}

/// The page's starting state: FLUX.1-dev Q4_0 and the film storyboard task.
pub fn set_value_default() -> AppResult<()> {
    let model = if model_preset("flux-dev-q4_0").is_some() { "flux-dev-q4_0" } else { TINY };
    set_value("model-preset", model)?;
    describe_model(model)?;
    let task = if task_preset("film-storyboard").is_some() { "film-storyboard" } else { NO_TASK };
    set_value("task-preset", task)?;
    apply_task(task)
}

/// Sets the seed field.
pub fn set_seed(seed: u64) -> AppResult<()> {
    set_value("seed", &seed.to_string())
}

/// Rebuilds the caption fields for the current grid, keeping what was typed.
pub fn regrid() -> AppResult<()> {
    let tags = task_preset(&value("task-preset")?).map(|t| t.template.panel_tags.clone()).unwrap_or_default();
    caption_fields(super::panel_count(), &tags, &panel_captions()?)
}

/// The bundled tiny model is a toy: a task's canvas is scaled down by 16 per side (panels stay
/// multiples of 16 px) and task LoRAs, made for the real FLUX.1, are left out.
pub fn fit_canvas_to_model() -> AppResult<()> {
    if value("model-preset")? != TINY {
        return Ok(());
    }
    let n = |id: &str| value(id).ok().and_then(|v| v.trim().parse::<u32>().ok()).unwrap_or(1).max(1);
    let (w, h, rows, cols) = (n("width"), n("height"), n("rows"), n("cols"));
    if w <= 256 && h <= 256 {
        return Ok(());
    }
    let side = |total: u32, k: u32| ((total / k / 16).div_ceil(16) * 16).max(16);
    set_value("width", &(side(w, cols) * cols).to_string())?;
    set_value("height", &(side(h, rows) * rows).to_string())?;
    set_value("steps", "4")?;
    if let Some(t) = task_preset(&value("task-preset")?) {
        let rows_el = document()?.query_selector_all("#adapters .adapter")?;
        for i in 0..rows_el.length() {
            let Some(row) = rows_el.item(i).and_then(|n| n.dyn_into::<web_sys::Element>().ok()) else { continue };
            let url = row
                .query_selector(".adapter-url")?
                .and_then(|e| e.dyn_into::<HtmlInputElement>().ok())
                .map(|e| e.value())
                .unwrap_or_default();
            if url == t.adapter {
                row.remove();
            }
        }
        set_text("task-note", &format!("{}: the tiny test model uses the task's layout and captions at 1/16 size, without its LoRA (made for FLUX.1-dev).", t.title))?;
    }
    Ok(())
}
