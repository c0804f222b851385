//! Small DOM helpers. All user-visible text goes through `textContent`
//! (never `innerHTML`), so data can never become markup.

use std::fmt;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Document, Element, HtmlElement, Window};

/// What can go wrong in the page: an engine error (shown with its own
/// message, which says what to do) or a browser API that refused.
#[derive(Debug)]
pub enum AppError {
    Engine(crate::Error),
    /// This browser cannot run the app; the text says what to use instead.
    Unsupported(String),
    Browser(String),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Engine(e) => write!(f, "{e}"),
            AppError::Unsupported(m) => write!(f, "{m}"),
            AppError::Browser(m) => write!(f, "browser error: {m}"),
        }
    }
}

impl From<crate::Error> for AppError {
    fn from(e: crate::Error) -> Self {
        AppError::Engine(e)
    }
}

impl From<JsValue> for AppError {
    fn from(v: JsValue) -> Self {
        // Exceptions are usually `Error` objects; fall back to their debug form.
        let text = v
            .dyn_ref::<js_sys::Error>()
            .map(|e| String::from(e.message()))
            .or_else(|| v.as_string())
            .unwrap_or_else(|| format!("{v:?}"));
        AppError::Browser(text)
    }
}

pub type AppResult<T> = Result<T, AppError>;

pub fn window() -> AppResult<Window> {
    web_sys::window().ok_or_else(|| AppError::Browser("no window (is this running in a worker?)".into()))
}

pub fn document() -> AppResult<Document> {
    window()?.document().ok_or_else(|| AppError::Browser("no document".into()))
}

pub fn body() -> AppResult<HtmlElement> {
    document()?.body().ok_or_else(|| AppError::Browser("the page has no <body>".into()))
}

/// The element with `id`, which index.html must provide.
pub fn by_id(id: &str) -> AppResult<Element> {
    document()?.get_element_by_id(id).ok_or_else(|| AppError::Browser(format!("index.html lacks #{id}")))
}

/// A new `<tag class=..>text</tag>` (empty class / text are left out).
pub fn el(tag: &str, class: &str, text: &str) -> AppResult<Element> {
    let e = document()?.create_element(tag)?;
    if !class.is_empty() {
        e.set_class_name(class);
    }
    if !text.is_empty() {
        e.set_text_content(Some(text));
    }
    Ok(e)
}

/// Appends a new child element and returns it.
pub fn add(parent: &Element, tag: &str, class: &str, text: &str) -> AppResult<Element> {
    let e = el(tag, class, text)?;
    parent.append_child(&e)?;
    Ok(e)
}

/// Removes every child of `e`.
pub fn clear(e: &Element) {
    e.set_text_content(None);
}

/// Sets `document.body.dataset[key] = value` (a marker for tests and styles).
pub fn set_marker(key: &str, value: &str) -> AppResult<()> {
    body()?.dataset().set(key, value)?;
    Ok(())
}

/// Resolves after the browser has had a chance to render and handle events. Uses the global
/// `setTimeout`, so it works in the page, in a worker and under Node (the dawn.node harness).
pub async fn yield_to_browser() -> AppResult<()> {
    let set_timeout: js_sys::Function = js_sys::Reflect::get(&js_sys::global(), &"setTimeout".into())?
        .dyn_into()
        .map_err(|_| AppError::Browser("no setTimeout in this JavaScript environment".into()))?;
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        // If scheduling fails, resolve at once rather than hang.
        if set_timeout.call2(&JsValue::UNDEFINED, &resolve, &JsValue::from(0)).is_err() {
            let _ = resolve.call0(&JsValue::UNDEFINED);
        }
    });
    wasm_bindgen_futures::JsFuture::from(promise).await?;
    Ok(())
}

/// Milliseconds from the time origin of this page, worker or Node process (global `performance`).
pub fn now_ms() -> f64 {
    let perf = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).unwrap_or(JsValue::UNDEFINED);
    let now = js_sys::Reflect::get(&perf, &"now".into()).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok());
    now.and_then(|f| f.call0(&perf).ok()).and_then(|v| v.as_f64()).unwrap_or(0.0)
}

/// True when the page URL's query has `name` (`?selftest`, `?selftest=1`, `?a&selftest`).
pub fn query_has(name: &str) -> bool {
    let search = web_sys::window().and_then(|w| w.location().search().ok()).unwrap_or_default();
    search.trim_start_matches('?').split('&').any(|kv| kv.split('=').next() == Some(name))
}

/// The `<input>` with `id`.
pub fn input(id: &str) -> AppResult<web_sys::HtmlInputElement> {
    by_id(id)?.dyn_into().map_err(|_| AppError::Browser(format!("#{id} is not an <input>")))
}

/// The value of the form control (`input`, `select`, `textarea`) with `id`.
pub fn value(id: &str) -> AppResult<String> {
    let e = by_id(id)?;
    if let Some(i) = e.dyn_ref::<web_sys::HtmlInputElement>() {
        return Ok(i.value());
    }
    if let Some(s) = e.dyn_ref::<web_sys::HtmlSelectElement>() {
        return Ok(s.value());
    }
    if let Some(t) = e.dyn_ref::<web_sys::HtmlTextAreaElement>() {
        return Ok(t.value());
    }
    Err(AppError::Browser(format!("#{id} is not a form control")))
}

/// Sets the value of the form control with `id`.
pub fn set_value(id: &str, v: &str) -> AppResult<()> {
    let e = by_id(id)?;
    if let Some(i) = e.dyn_ref::<web_sys::HtmlInputElement>() {
        i.set_value(v);
    } else if let Some(s) = e.dyn_ref::<web_sys::HtmlSelectElement>() {
        s.set_value(v);
    } else if let Some(t) = e.dyn_ref::<web_sys::HtmlTextAreaElement>() {
        t.set_value(v);
    } else {
        return Err(AppError::Browser(format!("#{id} is not a form control")));
    }
    Ok(())
}

/// Runs `f` on every `event` at `target`, for the life of the page.
pub fn on<E: JsCast + 'static>(
    target: &impl AsRef<web_sys::EventTarget>,
    event: &str,
    f: impl FnMut(E) + 'static,
) -> AppResult<()> {
    let mut f = f;
    let c = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
        if let Ok(e) = e.dyn_into::<E>() {
            f(e);
        }
    });
    target.as_ref().add_event_listener_with_callback(event, c.as_ref().unchecked_ref())?;
    c.forget();
    Ok(())
}

/// Shows or hides the element with `id` (the `hidden` attribute).
pub fn show(id: &str, visible: bool) -> AppResult<()> {
    let e: HtmlElement =
        by_id(id)?.dyn_into().map_err(|_| AppError::Browser(format!("#{id} is not an HTML element")))?;
    e.set_hidden(!visible);
    Ok(())
}

/// Sets the text of the element with `id`.
pub fn set_text(id: &str, text: &str) -> AppResult<()> {
    by_id(id)?.set_text_content(Some(text));
    Ok(())
}

/// Enables or disables the button with `id`.
pub fn enable(id: &str, on: bool) -> AppResult<()> {
    let b: web_sys::HtmlButtonElement =
        by_id(id)?.dyn_into().map_err(|_| AppError::Browser(format!("#{id} is not a <button>")))?;
    b.set_disabled(!on);
    Ok(())
}

/// `n` bytes for people (KiB/MiB/GiB, one decimal).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Seconds for people: `42 s`, `3 min 05 s`, `1 h 02 min`.
pub fn human_secs(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "—".into();
    }
    let s = s.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}
