//! Plain-Rust CPU versions of every kernel, written for clarity, not speed.
//! Tests compare the GPU kernels against these; they are also handy when
//! debugging a model layer by layer.

pub mod elementwise;
pub mod embedding;
pub mod conv2d;
pub mod upsample;
pub mod pack;
pub mod copy;
pub mod matmul;
pub mod quant;
pub mod random;
pub mod attention;
pub mod softmax;
pub mod norm;
pub mod rope;
pub mod quantize;
pub mod reduce;
