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
}

pub type Result<T> = std::result::Result<T, Error>;
