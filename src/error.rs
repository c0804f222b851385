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

    #[error("{what} needs {needed} but this GPU allows at most {available}; use a smaller canvas or a smaller quantization")]
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

    #[error("timed out {what} `{url}`: the connection stalled and retries did not help; check the network and try again")]
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

    /// The user stopped the run (a generation's Cancel button, a cancelled download).
    #[error("cancelled")]
    Cancelled,

    /// A pipeline component (`iclora generate`: transformer, VAE, text encoders, tokenizers) that
    /// is missing or cannot be loaded; `file` is the file (or folder) it was looked for in.
    #[error("{component}: `{file}`: {message}")]
    Component { component: String, file: String, message: String },
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

pub type Result<T> = std::result::Result<T, Error>;
