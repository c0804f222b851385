//! Weight file formats and the GPU layouts of their tensors.
