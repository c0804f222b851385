//! Weight file formats and the GPU layouts of their tensors.

pub mod repack;
