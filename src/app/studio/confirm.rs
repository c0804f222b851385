//! The one dialog that asks before the page contacts another host: for a share link, for a
//! Generate or a size check whose hosts the user has not allowed in this visit, and before a
//! download starts. Nothing is sent to a host before the user clicks its OK button (a size check
//! already asks the servers for headers and the first MiB), and keyboard shortcuts are ignored
//! while the dialog is open, so a confirmation is always a deliberate click.

use std::collections::BTreeSet;

use wasm_bindgen::JsCast;
use web_sys::{Event, HtmlDialogElement};

use super::output::status;
use super::{absolute, generate, plan, App};
use crate::app::dom::{add, body, by_id, clear, human_bytes, on, set_marker, set_text, window, AppError, AppResult};
use crate::recipe::parse_web_url;

/// What the open dialog asks.
#[derive(Debug, Clone, PartialEq)]
pub enum Ask {
    /// A share link was opened: download from these hosts and generate.
    Link,
    /// “Check download size”: may these hosts be asked for file sizes?
    Plan,
    /// Generate: may these hosts be contacted (sizes first, then the download)?
    Generate,
    /// The plan is known: download `bytes` (the URLs of `key`) and generate.
    Download { key: String, bytes: u64 },
}

/// A host as contacted and as shown (punycode, Unicode beside it; "this site" for the page's).
pub struct Host {
    pub host: String,
    pub label: String,
}

fn dialog() -> AppResult<HtmlDialogElement> {
    by_id("confirm")?.dyn_into().map_err(|_| AppError::Browser("#confirm is not a <dialog>".into()))
}

/// Whether the dialog is open (keyboard shortcuts are ignored then).
pub fn is_open() -> bool {
    dialog().is_ok_and(|d| d.open())
}

/// The page's own `host[:port]`.
fn own_host() -> String {
    window().ok().and_then(|w| w.location().host().ok()).unwrap_or_default()
}

/// The distinct hosts of `urls` (made absolute against the page), sorted; URLs that do not parse
/// are left out (the form's validation reports them).
pub fn hosts_of<'a>(urls: impl IntoIterator<Item = &'a str>) -> Vec<Host> {
    let own = own_host();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for u in urls {
        if u.starts_with("file:") {
            continue;
        }
        let Ok(w) = parse_web_url("url", &absolute(u)) else { continue };
        if seen.insert(w.host.clone()) {
            let label = if w.host == own { format!("{} (this site)", w.host) } else { w.host_label() };
            out.push(Host { host: w.host, label });
        }
    }
    out.sort_by(|a, b| a.host.cmp(&b.host));
    out
}

/// The hosts among `hosts` that are neither this site nor allowed in this visit.
pub fn unallowed(app: &App, hosts: Vec<Host>) -> Vec<Host> {
    let own = own_host();
    let s = app.state.borrow();
    hosts.into_iter().filter(|h| h.host != own && !s.allowed_hosts.contains(&h.host)).collect()
}

/// Opens the dialog for `ask`, listing `hosts`, with `note` under them.
pub fn open(app: &App, ask: Ask, hosts: &[Host], note: &str) -> AppResult<()> {
    let (title, intro, ok) = match &ask {
        Ask::Link => ("Open a shared set?", "This link asks to download weights from:".to_string(), "Download and generate".to_string()),
        Ask::Plan => (
            "Ask these hosts for file sizes?",
            "To show the download size, the page asks these hosts for each file's headers (about 1 MiB per file, no weights):".to_string(),
            "Ask for sizes".to_string(),
        ),
        Ask::Generate => (
            "Download from these hosts?",
            "This model and its adapters come from the hosts below. The page first asks them for file sizes (about 1 MiB per file) and shows the download before it starts:".to_string(),
            "Allow and check sizes".to_string(),
        ),
        Ask::Download { bytes, .. } => (
            "Start the download?",
            format!("Generate will first download {} into this browser's storage (see “Check download size” for the files and the GPU memory estimate), from:", human_bytes(*bytes)),
            format!("Download {} and generate", human_bytes(*bytes)),
        ),
    };
    set_text("confirm-title", title)?;
    set_text("confirm-intro", &intro)?;
    set_text("confirm-ok", &ok)?;
    set_text("confirm-note", note)?;
    let list = by_id("confirm-hosts")?;
    clear(&list);
    for h in hosts {
        add(&list, "li", "", &h.label)?;
    }
    let kind = match ask {
        Ask::Link => "link",
        Ask::Plan => "plan",
        Ask::Generate => "hosts",
        Ask::Download { .. } => "downloads",
    };
    {
        let mut s = app.state.borrow_mut();
        s.asking = Some((ask, hosts.iter().map(|h| h.host.clone()).collect()));
    }
    let d = dialog()?;
    if !d.open() {
        d.show_modal()?;
    }
    // The safe choice has the focus: Enter or Space on it declines.
    if let Ok(b) = by_id("confirm-cancel")
        .and_then(|b| b.dyn_into::<web_sys::HtmlElement>().map_err(|_| AppError::Browser("#confirm-cancel".into())))
    {
        let _ = b.focus();
    }
    set_marker("ask", kind)?;
    set_marker("confirm", "open")
}

fn accept(app: &App) -> AppResult<()> {
    let asked = app.state.borrow_mut().asking.take();
    dialog()?.close();
    set_marker("confirm", "accepted")?;
    let Some((ask, hosts)) = asked else { return Ok(()) };
    app.state.borrow_mut().allowed_hosts.extend(hosts);
    match ask {
        Ask::Link => {
            super::confirm_downloads(app)?;
            let ready = app.client.borrow().is_some()
                && body().ok().and_then(|b| b.dataset().get("engine")).as_deref() == Some("ready");
            if ready {
                generate(app);
            } else {
                app.state.borrow_mut().pending_generate = true;
            }
        }
        Ask::Plan => plan(app)?,
        Ask::Generate => generate(app),
        Ask::Download { key, .. } => {
            app.state.borrow_mut().confirmed = Some(key);
            generate(app);
        }
    }
    Ok(())
}

fn decline(app: &App) -> AppResult<()> {
    app.state.borrow_mut().asking = None;
    dialog()?.close();
    set_marker("confirm", "declined")?;
    status("Nothing was downloaded. Press Generate when you are ready.", "ok")
}

pub fn bind(app: &App) -> AppResult<()> {
    let a = app.clone();
    on::<Event>(&by_id("confirm-ok")?, "click", move |_| {
        if let Err(e) = accept(&a) {
            super::output::show_error(&e.to_string(), "error");
        }
    })?;
    let a = app.clone();
    on::<Event>(&by_id("confirm-cancel")?, "click", move |_| {
        let _ = decline(&a);
    })?;
    // Escape closes a modal dialog without a click: that is a “no”.
    let a = app.clone();
    on::<Event>(&dialog()?, "cancel", move |_| {
        let _ = decline(&a);
    })
}
