//! Download URLs: one parser for what the user is shown, what is compared and what is fetched.
//!
//! A URL is read by the WHATWG URL parser — the browser's own `URL` in the page and the worker,
//! the `url` crate (the same standard) natively — and then refused wherever a person reading the
//! text and the browser fetching it could disagree about the host:
//! - backslashes (`https://evil.example\@huggingface.co/x` is fetched from evil.example: WHATWG
//!   reads `\` as `/` in http(s) URLs),
//! - user names and passwords (`https://huggingface.co@evil.example/` is evil.example),
//! - hosts the parser rewrites (`127.1`, `0x7f.0.0.1`, `%65vil.example`, `[0:0::1]`): only the
//!   form the browser will contact is accepted, up to ASCII case.
//!
//! Internationalized hosts are accepted and shown as the browser contacts them (punycode) with
//! the Unicode form beside it, so a Cyrillic look-alike of a known name cannot pass as that name.

use crate::error::{Error, Result};

/// A checked http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebUrl {
    /// The parser's serialization: what is fetched.
    pub href: String,
    /// `host[:port]` as the browser contacts it (lower case, punycode; no default port).
    pub host: String,
    /// The host as typed when it is not ASCII (an internationalized name), lower-cased.
    pub host_unicode: Option<String>,
}

impl WebUrl {
    /// The host for people: the ASCII form, with the Unicode form beside it when they differ.
    pub fn host_label(&self) -> String {
        match &self.host_unicode {
            Some(u) => format!("{} ({u})", self.host),
            None => self.host.clone(),
        }
    }
}

/// What the WHATWG parser made of a string.
struct Parsed {
    /// Without the colon, lower case.
    scheme: String,
    has_credentials: bool,
    /// ASCII (punycode) host; IPv6 in brackets.
    hostname: String,
    /// `None` for the scheme's default port.
    port: Option<String>,
    href: String,
}

#[cfg(not(target_arch = "wasm32"))]
fn whatwg(s: &str) -> Option<Parsed> {
    let u = url::Url::parse(s).ok()?;
    Some(Parsed {
        scheme: u.scheme().to_string(),
        has_credentials: !u.username().is_empty() || u.password().is_some(),
        hostname: u.host_str()?.to_string(),
        port: u.port().map(|p| p.to_string()),
        href: u.as_str().to_string(),
    })
}

#[cfg(target_arch = "wasm32")]
fn whatwg(s: &str) -> Option<Parsed> {
    let u = web_sys::Url::new(s).ok()?;
    let port = u.port();
    Some(Parsed {
        scheme: u.protocol().trim_end_matches(':').to_string(),
        has_credentials: !u.username().is_empty() || !u.password().is_empty(),
        hostname: u.hostname(),
        port: (!port.is_empty()).then_some(port),
        href: u.href(),
    })
}

fn refuse(field: &str, why: String) -> Error {
    Error::InvalidRecipe { field: field.to_string(), why }
}

/// The host part of the authority as typed (`user@` and `:port` removed), lower-cased.
fn typed_host(s: &str) -> &str {
    let rest = s.split_once("://").map_or("", |(_, r)| r);
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        // IPv6: the port, if any, follows the bracket.
        return host_port.find(']').map_or(host_port, |i| &host_port[..=i]);
    }
    host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
}

/// Parses `url` as an absolute http(s) URL and refuses every form whose host a reader and the
/// browser could see differently (see the module doc). `field` names the form field in errors.
pub fn parse_web_url(field: &str, url: &str) -> Result<WebUrl> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse(field, "contains spaces or control characters; paste the URL again".into()));
    }
    if url.contains('\\') {
        return Err(refuse(field, format!("`{url}` contains a backslash, which browsers read as `/`: the link would not go where it seems to; remove it")));
    }
    let not_http =
        || refuse(field, format!("`{url}` is not an http(s) URL (only http:// and https:// links can be downloaded)"));
    let p = whatwg(url).ok_or_else(not_http)?;
    if !(p.scheme == "http" || p.scheme == "https") || p.hostname.is_empty() {
        return Err(not_http());
    }
    let typed = typed_host(url).to_lowercase();
    // `user@` with an empty user name is not a credential to the parser but still hides text.
    let authority_at =
        url.split_once("://").is_some_and(|(_, r)| r[..r.find(['/', '?', '#']).unwrap_or(r.len())].contains('@'));
    if p.has_credentials || authority_at {
        return Err(refuse(field, format!("`{url}` has a user name before `@`, which can hide the real host ({}); remove everything between `//` and `@`", p.hostname)));
    }
    let host_unicode = if typed.is_ascii() {
        if typed != p.hostname {
            return Err(refuse(
                field,
                format!(
                    "the host `{typed}` is not written as the browser will contact it (`{}`); use that form",
                    p.hostname
                ),
            ));
        }
        None
    } else {
        (typed != p.hostname).then_some(typed)
    };
    let host = match p.port {
        Some(port) => format!("{}:{port}", p.hostname),
        None => p.hostname,
    };
    Ok(WebUrl { href: p.href, host, host_unicode })
}

/// `url` resolved against `base` by the WHATWG parser (an absolute `url` stays itself), then
/// checked by [`parse_web_url`]: what is fetched is what a person was shown. Without a base, a
/// relative `url` is an error that says what to give. `field` names the recipe field in errors.
pub fn resolve_url(field: &str, base: Option<&str>, url: &str) -> Result<String> {
    // Checked before joining: the parser would turn the backslash into a slash.
    if url.contains('\\') || whatwg(url).is_some() {
        return parse_web_url(field, url).map(|u| u.href);
    }
    let joined = base.and_then(|b| join(b, url)).ok_or_else(|| {
        refuse(field, format!("`{url}` is relative, and there is no page address to read it against (open the share link itself, or give --base with the studio's address)"))
    })?;
    parse_web_url(field, &joined).map(|u| u.href)
}

#[cfg(not(target_arch = "wasm32"))]
fn join(base: &str, url: &str) -> Option<String> {
    let b = url::Url::parse(base).ok()?;
    b.join(url).ok().map(|u| u.to_string())
}

#[cfg(target_arch = "wasm32")]
fn join(base: &str, url: &str) -> Option<String> {
    web_sys::Url::new_with_base(url, base).ok().map(|u| u.href())
}
