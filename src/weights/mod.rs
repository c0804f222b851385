//! Weight file formats and the GPU layouts of their tensors.

#[cfg(target_arch = "wasm32")]
pub mod browser;
pub mod bytes;
pub mod detect;
pub mod fp8;
pub mod gguf;
#[cfg(not(target_arch = "wasm32"))]
pub mod http;
pub mod load;
pub mod loader;
pub mod range;
pub mod repack;
pub mod safetensors;
pub mod sharded;
pub mod tensor_info;
pub mod upload;
