//! What a generation downloads: the model's URLs (with the optional preview decoder, TAEF1) and
//! the adapters. One value for the plan, the confirmation of other hosts and the request, so that
//! nothing is fetched from a host the user has not seen listed.

use super::confirm::{self, Host};
use super::form;
use super::{absolute, model_spec};
use crate::app::dom::{input, value, AppResult};
use crate::recipe::ModelUrls;

#[derive(Debug, Clone, PartialEq)]
pub struct Downloads {
    /// With `preview_decoder` set when "Sharp live preview" is checked.
    pub model: ModelUrls,
    /// LoRA locations (absolute URLs, or `file:` names of dropped files) with their strengths.
    pub loras: Vec<(String, f32)>,
}

impl Downloads {
    /// The form's model, adapters and preview choice.
    pub fn from_form() -> AppResult<Downloads> {
        let model = ModelUrls { preview_decoder: preview_decoder()?, ..model_spec(&form::model_source()?)? };
        Ok(Downloads { model, loras: form::adapters()?.into_iter().map(|a| (absolute(&a.url), a.scale)).collect() })
    }

    /// Every location, in a fixed order.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        let model = self.model.entries().into_iter().map(|(_, u)| u);
        model.chain(self.loras.iter().map(|(u, _)| u.as_str()))
    }

    /// What a confirmation covers: every location.
    pub fn key(&self) -> String {
        self.urls().collect::<Vec<_>>().join(" ")
    }

    /// The hosts of the files, this page's own excluded (`confirm::hosts_of`).
    pub fn hosts(&self) -> Vec<Host> {
        confirm::hosts_of(self.urls())
    }

    /// Whether any file comes from another host than this page's.
    pub fn has_other_hosts(&self) -> bool {
        let own = crate::app::dom::window().ok().and_then(|w| w.location().host().ok()).unwrap_or_default();
        self.hosts().iter().any(|h| h.host != own)
    }
}

/// The preview decoder's URL (absolute) when "Sharp preview" is checked.
pub fn preview_decoder() -> AppResult<Option<String>> {
    if !input("preview-taef1")?.checked() {
        return Ok(None);
    }
    let url = value("preview-decoder-url")?;
    let url = url.trim();
    Ok((!url.is_empty()).then(|| absolute(url)))
}
