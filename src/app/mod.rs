//! The browser app (wasm32 only): detects WebGPU, starts the IC-LoRA studio
//! (`studio`; its engine runs in a Web Worker, `worker`, speaking `protocol`),
//! describes the adapter, and runs the kernel self-test (`?selftest` in the
//! URL, or the button), which checks every WGSL kernel against its CPU
//! reference on this browser's GPU.
//!
//! index.html provides the elements by id; this code only fills them in,
//! always through `textContent`.

mod client;
mod dom;
mod protocol;
mod run;
mod selftest;
mod studio;
mod worker;

pub use selftest::selftest_headless;
pub use worker::worker_main;

use std::cell::Cell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::HtmlButtonElement;

use crate::gpu::{Gpu, GpuOptions};
use dom::{add, by_id, clear, document, query_has, window, AppError, AppResult};

/// Entry point, called by the wasm-bindgen glue once the module is loaded.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    // The same module runs the engine in web/worker.js, which calls `worker_main` instead, and
    // under Node (tests/e2e/dawn_selftest.mjs), which calls `selftest_headless`: no page there.
    if worker::in_worker() || web_sys::window().is_none() {
        return;
    }
    wasm_bindgen_futures::spawn_local(async {
        if let Err(e) = boot().await {
            fatal(&e);
        }
    });
}

/// Shows an error that stops the page, and fails a requested self-test.
fn fatal(e: &AppError) {
    let text = e.to_string();
    web_sys::console::error_1(&text.clone().into());
    if let Ok(status) = by_id("status") {
        status.set_class_name("status error");
        status.set_text_content(Some(&text));
    }
    if query_has("selftest") {
        let _ = selftest::give_up(&text);
    }
}

async fn boot() -> AppResult<()> {
    let status = by_id("status")?;
    if let Some(why) = webgpu_missing()? {
        return Err(AppError::Unsupported(why));
    }
    status.set_text_content(Some("WebGPU found; starting the engine…"));
    // The studio (its engine runs in a worker) lives as long as the page.
    std::mem::forget(studio::start()?);
    if query_has("selftest") {
        if let Some(d) =
            document()?.query_selector("details.gpu")?.and_then(|d| d.dyn_into::<web_sys::HtmlDetailsElement>().ok())
        {
            d.set_open(true);
        }
    }
    // A device of the page's own for the adapter table and the kernel self-test.
    let gpu = Rc::new(Gpu::new(&GpuOptions::default()).await?);
    show_adapter(&gpu, browser_adapter_label().await)?;

    let button: HtmlButtonElement =
        by_id("selftest-run")?.dyn_into().map_err(|_| AppError::Browser("#selftest-run is not a <button>".into()))?;
    let running = Rc::new(Cell::new(false));
    let on_click = {
        let (gpu, running, button) = (gpu.clone(), running.clone(), button.clone());
        Closure::<dyn FnMut()>::new(move || {
            wasm_bindgen_futures::spawn_local(run_selftest(gpu.clone(), running.clone(), button.clone()));
        })
    };
    button.set_onclick(Some(on_click.as_ref().unchecked_ref()));
    // The handler lives as long as the page.
    on_click.forget();
    button.set_disabled(false);

    if query_has("selftest") {
        run_selftest(gpu, running, button).await;
    }
    Ok(())
}

async fn run_selftest(gpu: Rc<Gpu>, running: Rc<Cell<bool>>, button: HtmlButtonElement) {
    if running.replace(true) {
        return;
    }
    button.set_disabled(true);
    if let Err(e) = selftest::run(&gpu).await {
        let _ = selftest::give_up(&e.to_string());
    }
    button.set_disabled(false);
    running.set(false);
}

/// Why WebGPU cannot be used here, if it cannot.
fn webgpu_missing() -> AppResult<Option<String>> {
    let win = window()?;
    if !win.is_secure_context() {
        return Ok(Some(
            "WebGPU is only available on secure pages: open this app over https:// or from http://localhost (127.0.0.1).".into(),
        ));
    }
    let gpu = js_sys::Reflect::get(&win.navigator(), &JsValue::from_str("gpu"))?;
    if gpu.is_undefined() || gpu.is_null() {
        return Ok(Some(
            "This browser does not offer WebGPU (navigator.gpu is missing), and iclora runs on the GPU through it. \
             Use Chrome or Edge 113 or newer (Windows, macOS, ChromeOS; Android: Chrome 121+), Safari 26+ (macOS, iOS, iPadOS) \
             or Firefox 141+ (Windows). On Linux, enable it in Chrome at chrome://flags/#enable-unsafe-webgpu \
             or in Firefox with dom.webgpu.enabled in about:config."
                .into(),
        ));
    }
    Ok(None)
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn bytes(n: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if n >= GIB && n.is_multiple_of(GIB / 4) {
        format!("{} GiB", n as f64 / GIB as f64)
    } else if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else if n >= 1024 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

/// The browser's own description of its adapter (`GPUAdapterInfo`: vendor,
/// architecture, device, description). wgpu's WebGPU backend keeps only
/// `description` as the name, which Chromium leaves empty; vendor and
/// architecture ("google / swiftshader", "nvidia / ampere") are what users can
/// recognize. Plain JS calls, not wgpu: nothing here touches the engine's device.
async fn browser_adapter_label() -> Option<String> {
    let get = |o: &JsValue, k: &str| js_sys::Reflect::get(o, &JsValue::from_str(k)).ok();
    let gpu = get(&window().ok()?.navigator().into(), "gpu")?;
    let request: js_sys::Function = get(&gpu, "requestAdapter")?.dyn_into().ok()?;
    // The same preference as GpuOptions::default() (high_performance).
    let opts = js_sys::Object::new();
    js_sys::Reflect::set(&opts, &"powerPreference".into(), &"high-performance".into()).ok()?;
    let promise: js_sys::Promise = request.call1(&gpu, &opts).ok()?.dyn_into().ok()?;
    let adapter = wasm_bindgen_futures::JsFuture::from(promise).await.ok()?;
    let info = get(&adapter, "info")?;
    let parts: Vec<String> = ["vendor", "architecture", "device", "description"]
        .iter()
        .filter_map(|k| get(&info, k)?.as_string())
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" / "))
}

/// Chrome's subgroup-matrix configurations ("f16→f32 8×8×8, …"), or why there are none.
fn matrix_configs(configs: &[crate::gpu::CoopMatrixConfig]) -> String {
    if configs.is_empty() {
        // Chrome offers them behind chrome://flags "WebGPU Developer Features" (Apple, Intel, AMD:
        // f16/f32; NVIDIA: 8-bit integers); no kernel of ours uses them yet.
        return "none offered".to_string();
    }
    let name = |s: crate::gpu::CoopScalar| format!("{s:?}").to_lowercase();
    let list: Vec<String> =
        configs.iter().map(|c| format!("{}→{} {}×{}×{}", name(c.ab), name(c.acc), c.m, c.n, c.k)).collect();
    format!("{} (not used yet)", list.join(", "))
}

/// Fills `#adapter` with the adapter's name, backend, optional features and the limits kernels are sized by.
fn show_adapter(gpu: &Gpu, browser_label: Option<String>) -> AppResult<()> {
    let (i, f) = (gpu.info(), gpu.features());
    let or_unknown = |s: &str| if s.is_empty() { "(not reported by the browser)".to_string() } else { s.to_string() };
    let name = match browser_label {
        Some(label) if i.name.is_empty() => label,
        _ => or_unknown(&i.name),
    };
    let subgroup = if i.subgroup_max_size == 0 {
        "(not reported)".to_string()
    } else {
        format!("{}–{}", i.subgroup_min_size, i.subgroup_max_size)
    };
    let rows: Vec<(&str, String)> = vec![
        ("adapter", name),
        ("backend", i.backend.clone()),
        ("device type", i.device_type.clone()),
        ("driver", or_unknown(&i.driver)),
        ("shader-f16", yes_no(f.shader_f16).into()),
        ("subgroups", yes_no(f.subgroups).into()),
        ("subgroup matrices", matrix_configs(&i.cooperative_matrix_configs)),
        ("kernel paths", crate::kernels::describe_paths(gpu, crate::app::run::PRECISION)),
        ("timestamp-query", yes_no(f.timestamp_query).into()),
        ("max storage buffer binding", bytes(i.max_storage_binding)),
        ("max buffer size", bytes(i.max_buffer_size)),
        ("max invocations per workgroup", i.max_invocations.to_string()),
        ("max workgroup size x", i.max_workgroup_size_x.to_string()),
        ("max workgroups per dimension", i.max_workgroups_per_dim.to_string()),
        ("workgroup storage", bytes(i.max_workgroup_storage as u64)),
        ("storage buffers per stage", i.max_storage_buffers_per_stage.to_string()),
        ("subgroup size", subgroup),
    ];
    let table = by_id("adapter")?;
    clear(&table);
    for (k, v) in rows {
        let tr = add(&table, "tr", "", "")?;
        add(&tr, "th", "", k)?;
        add(&tr, "td", "", &v)?;
    }
    Ok(())
}
