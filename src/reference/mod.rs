//! Plain-Rust CPU versions of every kernel, written for clarity, not speed.
//! Tests compare the GPU kernels against these; they are also handy when
//! debugging a model layer by layer.

pub mod attention;
pub mod conv2d;
pub mod copy;
pub mod elementwise;
pub mod embedding;
pub mod matmul;
pub mod norm;
pub mod pack;
pub mod quant;
pub mod quantize;
pub mod random;
pub mod reduce;
pub mod rope;
pub mod softmax;
pub mod upsample;
