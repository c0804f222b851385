//! Reference panels: one drop zone (and file picker) per panel of the grid. A dropped image is
//! center-cropped to the panel's aspect and scaled to its size by the browser's canvas, and kept
//! as RGB for the worker, which VAE-encodes it (`crate::pipeline::conditioning`).

use wasm_bindgen::JsCast;
use web_sys::{CanvasRenderingContext2d, DragEvent, Event, HtmlCanvasElement, HtmlInputElement};

use super::output::show_error;
use super::{App, Reference};
use crate::app::dom::{add, by_id, clear, document, value, window, AppError, AppResult};
use crate::recipe::png::{check_image_prefix, HEADER_PREFIX};

fn grid() -> (usize, usize, usize, usize) {
    let n = |id: &str| value(id).ok().and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(1).max(1);
    let (rows, cols) = (n("rows"), n("cols"));
    (rows, cols, n("width") / cols, n("height") / rows)
}

/// Rebuilds the drop zones for the current grid; references that no longer fit are dropped.
pub fn rebuild(app: &App) -> AppResult<()> {
    let (rows, cols, pw, ph) = grid();
    app.state.borrow_mut().references.retain(|&k, r| k < rows * cols && r.width == pw && r.height == ph);
    let box_ = by_id("references")?;
    clear(&box_);
    // Through the CSSOM: the page's CSP forbids style attributes.
    if let Some(el) = box_.dyn_ref::<web_sys::HtmlElement>() {
        el.style().set_property("grid-template-columns", &format!("repeat({cols}, 1fr)"))?;
    }
    for k in 0..rows * cols {
        let zone = add(&box_, "div", "ref-zone", "")?;
        zone.set_attribute("data-panel", &k.to_string())?;
        let has = app.state.borrow().references.contains_key(&k);
        add(
            &zone,
            "span",
            "",
            &format!("Panel {} ({pw}×{ph}): {}", k + 1, if has { "reference kept" } else { "drop an image" }),
        )?;
        let pick: HtmlInputElement =
            add(&zone, "input", "ref-file", "")?.dyn_into().map_err(|_| AppError::Browser("input".into()))?;
        pick.set_type("file");
        pick.set_accept("image/*");
        pick.set_attribute("aria-label", &format!("reference image for panel {}", k + 1))?;
        let strength: HtmlInputElement =
            add(&zone, "input", "ref-strength", "")?.dyn_into().map_err(|_| AppError::Browser("input".into()))?;
        strength.set_type("number");
        strength.set_min("0.05");
        strength.set_max("0.95");
        strength.set_step("0.05");
        strength.set_placeholder("keep");
        strength.set_attribute("aria-label", &format!("strength for panel {} (empty: keep as is)", k + 1))?;
        if let Some(r) = app.state.borrow().references.get(&k) {
            strength.set_value(&r.strength.map(|s| s.to_string()).unwrap_or_default());
            let c: HtmlCanvasElement =
                add(&zone, "canvas", "ref-thumb", "")?.dyn_into().map_err(|_| AppError::Browser("canvas".into()))?;
            thumb(&c, r)?;
        }
        let a = app.clone();
        crate::app::dom::on::<Event>(&strength, "input", move |e| {
            let v =
                e.target().and_then(|t| t.dyn_into::<HtmlInputElement>().ok()).map(|i| i.value()).unwrap_or_default();
            if let Some(r) = a.state.borrow_mut().references.get_mut(&k) {
                r.strength = v.trim().parse::<f32>().ok();
            }
        })?;
        let a = app.clone();
        crate::app::dom::on::<Event>(&pick, "change", move |e| {
            let file = e
                .target()
                .and_then(|t| t.dyn_into::<HtmlInputElement>().ok())
                .and_then(|i| i.files())
                .and_then(|f| f.get(0));
            if let Some(f) = file {
                load(&a, k, f);
            }
        })?;
        let a = app.clone();
        crate::app::dom::on::<DragEvent>(&zone, "drop", move |e| {
            e.prevent_default();
            e.stop_propagation();
            if let Some(f) = e.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) {
                load(&a, k, f);
            }
        })?;
        if has {
            let clear_b = add(&zone, "button", "", "Remove")?;
            clear_b.set_attribute("type", "button")?;
            let a = app.clone();
            crate::app::dom::on::<Event>(&clear_b, "click", move |_| {
                a.state.borrow_mut().references.remove(&k);
                let _ = rebuild(&a);
            })?;
        }
    }
    Ok(())
}

fn thumb(c: &HtmlCanvasElement, r: &Reference) -> AppResult<()> {
    c.set_width(r.width as u32);
    c.set_height(r.height as u32);
    let rgba: Vec<u8> = r.rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    let data = web_sys::ImageData::new_with_u8_clamped_array_and_sh(
        wasm_bindgen::Clamped(&rgba),
        r.width as u32,
        r.height as u32,
    )?;
    ctx(c)?.put_image_data(&data, 0.0, 0.0)?;
    Ok(())
}

fn ctx(c: &HtmlCanvasElement) -> AppResult<CanvasRenderingContext2d> {
    c.get_context("2d")?
        .and_then(|x| x.dyn_into::<CanvasRenderingContext2d>().ok())
        .ok_or_else(|| AppError::Browser("no 2d context".into()))
}

fn load(app: &App, panel: usize, file: web_sys::File) {
    let a = app.clone();
    wasm_bindgen_futures::spawn_local(async move {
        match decode(&file).await {
            Ok((w, h, rgb)) => {
                a.state.borrow_mut().references.insert(panel, Reference { width: w, height: h, rgb, strength: None });
                let _ = rebuild(&a);
                let _ = crate::app::dom::set_marker("references", &a.state.borrow().references.len().to_string());
            }
            Err(e) => show_error(&format!("{}: {e}", file.name()), "image"),
        }
    });
}

/// The image center-cropped to the panel's aspect and scaled to its size, as RGB.
async fn decode(file: &web_sys::File) -> AppResult<(usize, usize, Vec<u8>)> {
    let (_, _, pw, ph) = grid();
    // A PNG's declared size is checked before the browser decodes (and allocates) its pixels.
    let head =
        wasm_bindgen_futures::JsFuture::from(file.slice_with_i32_and_i32(0, HEADER_PREFIX as i32)?.array_buffer())
            .await?;
    check_image_prefix(&file.name(), &js_sys::Uint8Array::new(&head).to_vec())?;
    let bitmap = wasm_bindgen_futures::JsFuture::from(window()?.create_image_bitmap_with_blob(file)?)
        .await
        .map_err(|_| AppError::Browser("not an image this browser can decode (PNG, JPEG, WebP)".into()))?
        .dyn_into::<web_sys::ImageBitmap>()
        .map_err(|_| AppError::Browser("not an image".into()))?;
    let (iw, ih) = (bitmap.width() as f64, bitmap.height() as f64);
    let aspect = pw as f64 / ph as f64;
    let (sw, sh) = if iw / ih > aspect { (ih * aspect, ih) } else { (iw, iw / aspect) };
    let c: HtmlCanvasElement =
        document()?.create_element("canvas")?.dyn_into().map_err(|_| AppError::Browser("canvas".into()))?;
    c.set_width(pw as u32);
    c.set_height(ph as u32);
    let g = ctx(&c)?;
    g.draw_image_with_image_bitmap_and_sw_and_sh_and_dx_and_dy_and_dw_and_dh(
        &bitmap,
        (iw - sw) / 2.0,
        (ih - sh) / 2.0,
        sw,
        sh,
        0.0,
        0.0,
        pw as f64,
        ph as f64,
    )?;
    let data = g.get_image_data(0.0, 0.0, pw as f64, ph as f64)?.data();
    let rgb = data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    Ok((pw, ph, rgb))
}
