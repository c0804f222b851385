//! The one error type of the engine. Every variant carries the data a user needs
//! to understand what went wrong, and its message says what to do about it.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    #[error("no GPU adapter found ({0}). In a browser, use a recent Chrome/Edge (113+), or Firefox/Safari with WebGPU enabled; natively, install a Vulkan, Metal or DX12 driver (on Linux without a GPU: mesa-vulkan-drivers).")]
    NoAdapter(String),

    #[error("could not open the GPU device: {0}")]
    DeviceRequest(String),

    #[error("{op}: shape mismatch: expected {expected}, got {got}")]
    ShapeMismatch { op: &'static str, expected: String, got: String },

    #[error(
        "{what} needs {needed} but this GPU allows at most {available}; use a smaller canvas or a smaller quantization"
    )]
    LimitExceeded { what: String, needed: u64, available: u64 },

    #[error("{op} needs the GPU feature `{feature}`, which this adapter does not offer; use the f32 path instead")]
    MissingFeature { op: &'static str, feature: &'static str },

    #[error("{op}: tensor format {format} is not supported here ({why})")]
    UnsupportedFormat { op: &'static str, format: String, why: String },

    #[error("shader `{shader}` (entry `{entry}`) failed to compile: {message}")]
    Shader { shader: String, entry: String, message: String },

    #[error("GPU validation error: {0}")]
    Validation(String),

    #[error("the GPU ran out of memory ({0}); try a smaller quantization (Q4_0) or a smaller canvas")]
    OutOfMemory(String),

    #[error("the GPU device was lost ({0}); the page can recover by creating a new device — reload the models")]
    DeviceLost(String),

    #[error("reading results back from the GPU failed: {0}")]
    Readback(String),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("`{file}` is not a valid weights file: {what}. The file may be truncated or not what its name says; download it again or pick another file")]
    Malformed { file: String, what: String },

    #[error("reading `{file}` failed: {message}")]
    Io { file: String, message: String },

    #[error("`{url}` answered HTTP {status}: {}", http_hint(*.status))]
    Http { url: String, status: u16 },

    #[error("`{url}` does not support HTTP Range requests (it answered 200 with the whole file instead of 206 Partial Content). Weights are streamed in ranges so that no file is held whole in memory: download the file and open it by path, or serve it from a host that supports ranges")]
    NoRangeSupport { url: String },

    /// A file whose version changed on the server between two reads of it (another validator,
    /// size or answer to `If-Range`): its parts cannot be joined.
    #[error("`{url}` changed on the server during the download ({what}); the parts already read belong to the old version. Retry to read the new version from the start")]
    FileChanged { url: String, what: String },

    /// A host that may ignore byte ranges: reading from it synchronously (the browser's no-cache
    /// path) could hold the whole file in memory before its answer can be checked.
    #[error("`{url}` does not show that it serves HTTP Range requests (its answer to HEAD has no `Accept-Ranges: bytes`; a server on another origin must also list Accept-Ranges in Access-Control-Expose-Headers) and the file is {size}: reading it here could load all of it into memory. Serve it from a host that supports ranges, or let the browser cache it")]
    RangesNotShown { url: String, size: String },

    /// An https URL that redirects to plain http.
    #[error("`{url}` redirects from https to plain http (`{to}`); refusing to read weights over an unencrypted connection. Use an https link to the file")]
    InsecureRedirect { url: String, to: String },

    #[error(
        "timed out {what} `{url}`: the connection stalled and retries did not help; check the network and try again"
    )]
    Timeout { url: String, what: String },

    #[error("`{file}` has no tensor `{name}`, which this model needs; is it a complete checkpoint of the right model (FLUX.1 transformer, diffusers or BFL names)?")]
    MissingTensor { file: String, name: String },

    #[error("`{file}`: tensor `{name}` has shape {got}, but the model config expects {expected}; the weights and the config do not belong together")]
    TensorShape { file: String, name: String, expected: String, got: String },

    #[error("`{file}` has no tensor `{name}`, which the {model} needs; is it a complete {model} checkpoint (Hugging Face transformers names)?")]
    MissingModelTensor { model: &'static str, file: String, name: String },

    #[error("tokenizer file `{file}`: {message}")]
    Tokenizer { file: String, message: String },

    /// A LoRA that cannot be applied to the loaded model: an unsupported kind (DoRA, LoKr,
    /// full-delta `.diff` keys), a module the model does not have or of another shape (a LoRA
    /// for another base model). `key` is the first offending key; the base model is unchanged.
    #[error("LoRA `{file}`: key `{key}`: {why}")]
    Lora { file: String, key: String, why: String },

    /// A count or size read from a file (a `config.json`, a LoRA, a tokenizer, a PNG) over one of
    /// this app's caps (`crate::limits`); it was refused before anything was allocated from it.
    #[error("`{file}`: {what} is {found}, over this app's limit of {limit} ({why}); the file is damaged, hostile or not the kind of file expected here: check that it is the right file, or pick another")]
    FileLimit { file: String, what: String, found: u64, limit: u64, why: String },

    /// The user stopped the run (a generation's Cancel button, a cancelled download).
    #[error("cancelled")]
    Cancelled,

    /// A cross-origin weights URL whose server does not send CORS headers (the browser hides the
    /// answer, so this is also what a network failure to another origin looks like).
    #[error("the server at {} does not allow this page to read `{url}` (CORS); use a host that sends Access-Control-Allow-Origin, e.g. huggingface.co resolve URLs, or download the file and drop it on the page (if the host does send CORS headers, check the network connection)", url_host(url))]
    Cors { url: String },

    /// The browser's storage quota (OPFS) is too small for a file being cached.
    #[error("the browser's storage is full: caching `{url}` ({needed} bytes) exceeded its quota ({available} bytes available to this site); delete cached models or free disk space — the model is streamed without caching meanwhile")]
    Quota { url: String, needed: u64, available: u64 },

    /// A pipeline component (`iclora generate`: transformer, VAE, text encoders, tokenizers) that
    /// is missing or cannot be loaded; `file` is the file (or folder) it was looked for in.
    #[error("{component}: `{file}`: {message}")]
    Component { component: String, file: String, message: String },

    /// A recipe (share link, PNG metadata, form) with a value the engine cannot run: `field` names
    /// it as the form does (`width`, `steps`, `adapters[1].url`, ...).
    #[error("recipe: `{field}` {why}")]
    InvalidRecipe { field: String, why: String },

    /// A recipe written by a newer (or unknown) version of the app.
    #[error("this recipe has format version {found}, but this app reads version {supported}; open the link with a newer version of the app")]
    RecipeVersion { found: u64, supported: u64 },

    /// A `#r=...` link that is not a recipe (cut off when copied, or edited by hand).
    #[error("the share link is damaged ({0}); copy the whole link again")]
    BadShareLink(String),

    /// An image file that cannot be read (a truncated or corrupt PNG).
    #[error("not a valid {format} image: {why}")]
    BadImage { format: &'static str, why: String },

    /// An IC-LoRA panel grid that does not fit the canvas: panels must be whole multiples of 16 px
    /// (the 2×2-patch packed latent tokens, diffusers `FluxPipeline._pack_latents`,
    /// src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c) so that each panel owns whole tokens.
    #[error("a {rows}×{cols} panel grid on a {width}×{height} canvas: {why}")]
    PanelGrid { rows: usize, cols: usize, width: usize, height: usize, why: String },

    /// A reference image for a panel the layout does not have.
    #[error("reference for panel {index}, but the layout has {panels} panels (numbered from 0, row by row)")]
    PanelIndex { index: usize, panels: usize },

    /// A reference's SDEdit strength outside (0, 1).
    #[error("panel {panel}: reference strength {strength} must lie strictly between 0 and 1 (near 0: keep the reference; near 1: ignore it)")]
    ReferenceStrength { panel: usize, strength: f32 },

    /// Reference panels were given but the VAE was not loaded with its encoder.
    #[error(
        "reference panels need the VAE encoder; load the VAE with its encoder (VaeParts::ENCODER or VaeParts::BOTH)"
    )]
    NoVaeEncoder,
}

/// What a user can do about an HTTP status.
fn http_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "access denied; for a gated or private Hugging Face repo, accept its license on the model page and use a URL the server lets you read",
        404 | 410 => "no such file; check the URL (Hugging Face file links look like https://huggingface.co/<org>/<repo>/resolve/main/<file>)",
        416 => "the requested byte range is outside the file; the file may have changed on the server, start the download again",
        429 => "too many requests; wait a minute and try again",
        500..=599 => "the server failed; try again later",
        _ => "unexpected answer to a byte-range GET",
    }
}

/// The host a URL is fetched from, for messages (the whole string when it has none).
fn url_host(url: &str) -> String {
    crate::recipe::url_host(url).unwrap_or_else(|| url.to_string())
}

pub type Result<T> = std::result::Result<T, Error>;
