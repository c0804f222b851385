//! Small JavaScript glue shared by the browser weight sources: the global scope (a
//! worker's or a window's, reached through `Reflect` so the same code runs in both),
//! timers, URL resolution and error names.

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// `globalThis` (a `DedicatedWorkerGlobalScope` in the engine's worker).
pub fn global() -> Object {
    js_sys::global()
}

/// `obj[key]`, `None` when undefined or null (or when reading throws).
pub fn get(obj: &JsValue, key: &str) -> Option<JsValue> {
    Reflect::get(obj, &JsValue::from_str(key)).ok().filter(|v| !v.is_undefined() && !v.is_null())
}

/// Calls the method `name` of `obj` with `args`.
pub fn call(obj: &JsValue, name: &str, args: &[JsValue]) -> Result<JsValue, JsValue> {
    let f: Function = get(obj, name)
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| JsValue::from_str(&format!("`{name}` is not a function here")))?;
    f.apply(obj, &args.iter().collect::<js_sys::Array>())
}

/// A timer: a promise that resolves to `value` after `ms`, and the id that cancels it.
/// The promise's resolve function is handed to `setTimeout` directly, so no Rust
/// closure is kept alive (or leaked) per timer.
pub fn timer(ms: f64, value: &str) -> (Promise, JsValue) {
    let mut id = JsValue::UNDEFINED;
    let g = global();
    let p = Promise::new(&mut |resolve, _reject| {
        id = call(&g, "setTimeout", &[resolve.into(), JsValue::from_f64(ms.max(0.0)), JsValue::from_str(value)])
            .unwrap_or(JsValue::UNDEFINED);
    });
    (p, id)
}

/// Cancels a `timer` (a no-op once it fired).
pub fn clear_timer(id: &JsValue) {
    let _ = call(&global(), "clearTimeout", std::slice::from_ref(id));
}

/// Awaits a value that is a promise (what `call` returns for async methods).
pub async fn await_value(v: JsValue) -> Result<JsValue, JsValue> {
    let p: Promise = v.unchecked_into();
    JsFuture::from(p).await
}

/// Waits `ms` milliseconds.
pub async fn sleep(ms: f64) {
    let _ = JsFuture::from(timer(ms, "").0).await;
}

/// Milliseconds since the epoch (`Date.now()`).
pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// `url` resolved against the script's location (relative URLs are allowed).
pub fn resolve(url: &str) -> Option<web_sys::Url> {
    let base = get(&global(), "location").and_then(|l| get(&l, "href")).and_then(|h| h.as_string());
    match base {
        Some(b) => web_sys::Url::new_with_base(url, &b).ok(),
        None => web_sys::Url::new(url).ok(),
    }
}

/// Whether `url` is on another origin than the running script (only then can a
/// failed request be a CORS refusal).
pub fn is_cross_origin(url: &str) -> bool {
    let here = get(&global(), "location").and_then(|l| get(&l, "origin")).and_then(|o| o.as_string());
    match (resolve(url), here) {
        (Some(u), Some(here)) => u.origin() != here,
        _ => true,
    }
}

/// The name of a thrown value: a `DOMException`'s or an `Error`'s `name`
/// (`"QuotaExceededError"`, `"AbortError"`, `"NetworkError"`, `"TypeError"`...).
pub fn error_name(e: &JsValue) -> String {
    get(e, "name").and_then(|n| n.as_string()).unwrap_or_default()
}

/// A thrown value as text, for messages.
pub fn error_text(e: &JsValue) -> String {
    if let Some(s) = e.as_string() {
        return s;
    }
    let name = error_name(e);
    let message = get(e, "message").and_then(|m| m.as_string()).unwrap_or_default();
    match (name.is_empty(), message.is_empty()) {
        (false, false) => format!("{name}: {message}"),
        (false, true) => name,
        (true, false) => message,
        (true, true) => format!("{e:?}"),
    }
}

/// FNV-1a, 64 bits: the cache's file names (from URLs) and the test probes' checksums.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}
