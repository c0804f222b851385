//! Weight file formats and the GPU layouts of their tensors.

pub mod repack;
pub mod tensor_info;
pub mod safetensors;
pub mod gguf;
pub mod load;
pub mod upload;
pub mod fp8;
pub mod detect;
pub mod source;
pub mod range;
#[cfg(not(target_arch = "wasm32"))]
pub mod http;
#[cfg(target_arch = "wasm32")]
pub mod browser;
