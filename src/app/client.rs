//! The page's side of the worker protocol: starts web/worker.js (a module worker running this
//! same wasm module, see `worker.rs`), exchanges `protocol` messages with it, and reports when it
//! dies. A panic or a failed allocation in the worker's wasm kills that instance for good (its
//! memory may be half-updated), so the studio replaces the whole worker (`studio::restart`).

use std::rc::Rc;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{ErrorEvent, MessageEvent, Worker, WorkerOptions, WorkerType};

use super::dom::{document, AppError, AppResult};
use super::protocol::{envelope, open_envelope, FromWorker, ToWorker};

/// A running engine worker; dropping it terminates the worker.
pub struct Client {
    worker: Worker,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_message_error: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(ErrorEvent)>,
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
    /// Starts the worker; `on_message` gets every message with the byte arrays that came with it,
    /// `on_crash` why the worker cannot go on: an uncaught error or a rejected promise in it (a
    /// wasm panic or out-of-memory abort ends as one of these), or a message that cannot be read.
    /// `on_crash` may be called more than once for one death; it must not drop this `Client`
    /// synchronously (the handler that calls it belongs to it).
    pub fn start(
        mut on_message: impl FnMut(FromWorker, Vec<Vec<u8>>) + 'static,
        on_crash: impl Fn(String) + 'static,
    ) -> AppResult<Client> {
        let (js, wasm) = module_urls()?;
        let enc = |s: &str| String::from(js_sys::encode_uri_component(s));
        let opts = WorkerOptions::new();
        opts.set_type(WorkerType::Module);
        opts.set_name("iclora-engine");
        let worker = Worker::new_with_options(&format!("worker.js?js={}&wasm={}", enc(&js), enc(&wasm)), &opts)?;
        let on_crash = Rc::new(on_crash);
        let crash = on_crash.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let (text, bufs) = open_envelope(&ev.data());
            match serde_json::from_str::<FromWorker>(&text) {
                Ok(FromWorker::Crashed { message }) => crash(message),
                Ok(msg) => on_message(msg, bufs),
                Err(e) => {
                    let head: String = text.chars().take(200).collect();
                    crash(format!("a message from the engine could not be read ({e}): {head}"))
                }
            }
        });
        let crash = on_crash.clone();
        let on_message_error = Closure::<dyn FnMut(MessageEvent)>::new(move |_: MessageEvent| {
            crash("a message from the engine could not be received".into())
        });
        let crash = on_crash;
        let on_error = Closure::<dyn FnMut(ErrorEvent)>::new(move |ev: ErrorEvent| {
            let message = ev.message();
            crash(if message.is_empty() { "an uncaught error in the engine's worker".into() } else { message })
        });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onmessageerror(Some(on_message_error.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Ok(Client { worker, _on_message: on_message, _on_message_error: on_message_error, _on_error: on_error })
    }

    /// Sends `msg`; `bufs` are transferred (the page gives them up).
    pub fn send(&self, msg: &ToWorker, bufs: Vec<Vec<u8>>) -> AppResult<()> {
        let json = serde_json::to_string(msg).map_err(|e| AppError::Browser(e.to_string()))?;
        let (obj, transfer) = envelope(&json, bufs)?;
        self.worker.post_message_with_transfer(&obj, &transfer)?;
        Ok(())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Handlers first: the closures die with this value, and a late event must not call them.
        self.worker.set_onmessage(None);
        self.worker.set_onmessageerror(None);
        self.worker.set_onerror(None);
        self.worker.terminate();
    }
}
