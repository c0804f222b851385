//! The page's side of the worker protocol: starts web/worker.js (a module worker running this
//! same wasm module, see `worker.rs`) and exchanges `protocol` messages with it.

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, Worker, WorkerOptions, WorkerType};

use super::dom::{document, AppError, AppResult};
use super::protocol::{envelope, open_envelope, FromWorker, ToWorker};

pub struct Client {
    worker: Worker,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

/// The wasm-bindgen JS and wasm URLs Trunk wrote into the page (Trunk.toml's `pattern_script`).
fn module_urls() -> AppResult<(String, String)> {
    let tag = document()?
        .query_selector("script[data-iclora-js]")?
        .ok_or_else(|| AppError::Browser("index.html lacks the module script tag".into()))?;
    let js = tag.get_attribute("data-iclora-js").unwrap_or_default();
    let wasm = tag.get_attribute("data-iclora-wasm").unwrap_or_default();
    // Absolute, so that the worker (whose base is worker.js) resolves them like the page did.
    let base = document()?.base_uri()?.unwrap_or_default();
    let abs = |u: &str| web_sys::Url::new_with_base(u, &base).map(|u| u.href()).unwrap_or_else(|_| u.to_string());
    Ok((abs(&js), abs(&wasm)))
}

impl Client {
    /// Starts the worker; `on_message` gets every message with the byte arrays that came with it.
    pub fn start(mut on_message: impl FnMut(FromWorker, Vec<Vec<u8>>) + 'static) -> AppResult<Client> {
        let (js, wasm) = module_urls()?;
        let enc = |s: &str| String::from(js_sys::encode_uri_component(s));
        let opts = WorkerOptions::new();
        opts.set_type(WorkerType::Module);
        opts.set_name("iclora-engine");
        let worker = Worker::new_with_options(&format!("worker.js?js={}&wasm={}", enc(&js), enc(&wasm)), &opts)?;
        let handler = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let (text, bufs) = open_envelope(&ev.data());
            match serde_json::from_str::<FromWorker>(&text) {
                Ok(msg) => on_message(msg, bufs),
                Err(e) => web_sys::console::error_1(&format!("bad message from the worker: {e}: {text}").into()),
            }
        });
        worker.set_onmessage(Some(handler.as_ref().unchecked_ref()));
        Ok(Client { worker, _on_message: handler })
    }

    /// Sends `msg`; `bufs` are transferred (the page gives them up).
    pub fn send(&self, msg: &ToWorker, bufs: Vec<Vec<u8>>) -> AppResult<()> {
        let json = serde_json::to_string(msg).map_err(|e| AppError::Browser(e.to_string()))?;
        let (obj, transfer) = envelope(&json, bufs)?;
        self.worker.post_message_with_transfer(&obj, &transfer)?;
        Ok(())
    }
}
