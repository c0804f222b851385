//! The FLUX VAE (diffusers `AutoencoderKL`, src/diffusers/models/autoencoders/autoencoder_kl.py @ 58eb52c;
//! BFL `AutoEncoder`, src/flux/modules/autoencoder.py @ 802fb47; 16 latent channels): config, weights
//! (diffusers or BFL names), encoder and decoder on the kernels (tensors over one storage binding
//! are split inside the kernels), and band-tiled decoding for canvases whose activations exceed one
//! buffer (memory notes in [`tiled`]).

pub mod blocks;
pub mod config;
pub mod model;
pub mod tiled;
pub mod weights;

pub use config::{VaeConfig, VaeKeys};
pub use model::Vae;
pub use tiled::{plan_bands, TileOptions};
pub use weights::{Decoder, Encoder, VaeParts};
