//! The "Speed" choice of the task box: a few-step LoRA (`web/presets/fast.json`) stacked on the
//! task adapter, with its steps and guidance. It only edits the adapter rows and the two fields,
//! so the recipe, the share link and the download plan see it as one more adapter.

use wasm_bindgen::JsCast;

use super::form::{add_adapter_row, option, select};
use crate::app::dom::{document, set_text, set_value, value, AppResult};
use crate::recipe::fast::{fast_preset, fast_preset_of, fast_presets};
use crate::recipe::Recipe;

/// `<option>` value of "no few-step LoRA".
pub const FULL: &str = "full";

/// Fills the choice.
pub fn fill() -> AppResult<()> {
    let sel = select("fast-preset")?;
    crate::app::dom::clear(&sel);
    option(&sel, FULL, "Full steps (the task's settings)")?;
    for p in fast_presets()? {
        let size = p.approx.as_deref().map(|a| format!(", {a}")).unwrap_or_default();
        option(&sel, &p.id, &format!("{}{size}", p.title))?;
    }
    Ok(())
}

/// Applies the chosen preset to the form: drops any few-step adapter row, then adds the chosen
/// one with its scale and sets steps and guidance.
pub fn apply() -> AppResult<()> {
    let id = value("fast-preset")?;
    let rows = document()?.query_selector_all("#adapters .adapter")?;
    let fast: Vec<&str> = fast_presets()?.iter().map(|p| p.adapter.as_str()).collect();
    for i in 0..rows.length() {
        let Some(row) = rows.item(i).and_then(|n| n.dyn_into::<web_sys::Element>().ok()) else { continue };
        let url = row
            .query_selector(".adapter-url")?
            .and_then(|e| e.dyn_into::<web_sys::HtmlInputElement>().ok())
            .map(|e| e.value())
            .unwrap_or_default();
        if fast.contains(&url.trim()) {
            row.remove();
        }
    }
    let Some(p) = fast_preset(&id) else {
        return set_text("fast-note", "");
    };
    add_adapter_row(&p.adapter, p.scale)?;
    set_value("steps", &p.steps.to_string())?;
    set_value("guidance", &p.guidance.to_string())?;
    set_text(
        "fast-note",
        &format!(
            "{}: LoRA scale {}, {} steps, guidance {} (its model card's settings). Licence: {}.",
            p.title, p.scale, p.steps, p.guidance, p.license
        ),
    )
}

/// Shows the choice a restored recipe made (its adapters are already in the rows).
pub fn restore(r: &Recipe) -> AppResult<()> {
    set_value("fast-preset", fast_preset_of(r).map(|p| p.id.as_str()).unwrap_or(FULL))?;
    set_text("fast-note", "")
}
