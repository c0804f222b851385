//! Shared test helpers: one GPU per test binary (lavapipe in CI), a seeded
//! RNG, and a comparison that reports the first bad index.
#![allow(dead_code)]

pub mod text;
pub mod weights;

use std::sync::OnceLock;

use iclora::gpu::{Gpu, GpuOptions};

pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::new_blocking(&GpuOptions::default())
            .unwrap_or_else(|e| panic!("tests need a GPU adapter (lavapipe: apt install mesa-vulkan-drivers): {e}"))
    })
}

#[allow(unused_imports)]
pub use iclora::reference::random::Rng;

/// The bundled tiny diffusers-layout pipeline (web/demo/tiny-flux).
pub const TINY_FLUX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web/demo/tiny-flux");

/// The tiny pipeline's transformer, loaded once per test binary.
pub fn tiny_transformer() -> &'static iclora::model::flux::FluxModel {
    use iclora::model::flux::{FluxConfig, FluxModel};
    static M: OnceLock<FluxModel> = OnceLock::new();
    M.get_or_init(|| {
        let mut c = iclora::pipeline::components::resolve(
            &iclora::pipeline::store::ModelStore::new(),
            "transformer",
            Some(&format!("{TINY_FLUX}/transformer")),
            None,
            "diffusion_pytorch_model",
        )
        .unwrap();
        let cfg = FluxConfig::from_diffusers_json(c.config.as_deref().unwrap()).unwrap();
        FluxModel::load(gpu(), c.weights.source.as_mut(), &c.weights.header, Some(cfg)).unwrap()
    })
}

/// Random FLUX text conditioning of `c`'s shapes: `(txt [tokens, context_dim], pooled [pooled_dim])`.
pub fn random_text(
    c: &iclora::model::flux::FluxConfig,
    tokens: usize,
    seed: u64,
) -> (iclora::gpu::Tensor, iclora::gpu::Tensor) {
    let mut rng = Rng::new(seed);
    let g = gpu();
    let txt = g.upload_f32(&[tokens, c.context_dim], &rng.vec(tokens * c.context_dim, -1.0, 1.0)).unwrap();
    (txt, g.upload_f32(&[c.pooled_dim], &rng.vec(c.pooled_dim, -1.0, 1.0)).unwrap())
}

/// Asserts `|got − expected| ≤ rtol · max(|expected|, rms(expected))` for every
/// element (`iclora::selftest::compare`): relative error, with the output's RMS
/// as the floor so values that cancel to near zero are judged against the scale
/// of the output. NaN always fails. Panics naming the first bad index.
pub fn assert_close(what: &str, got: &[f32], expected: &[f32], rtol: f32) {
    let c = iclora::selftest::compare(got, expected, rtol).unwrap_or_else(|e| panic!("{what}: {e}"));
    if let Some((i, g, e)) = c.first_bad {
        panic!(
            "{what}: first bad index {i}: got {g}, expected {e} (max relative error {:.3e} > {rtol:.1e})",
            c.max_err
        );
    }
    eprintln!("{what}: ok, worst relative error {:.2e}", c.max_err);
}

/// Runs `f` with a fresh batch, submits it, reads the returned tensor back.
pub fn run<F>(f: F) -> Vec<f32>
where
    F: FnOnce(&Gpu, &mut iclora::gpu::Batch) -> iclora::Result<iclora::gpu::Tensor>,
{
    let g = gpu();
    let mut b = g.batch();
    let t = f(g, &mut b).unwrap_or_else(|e| panic!("kernel failed: {e}"));
    g.submit(b).unwrap_or_else(|e| panic!("submit failed: {e}"));
    g.read_f32_blocking(&t).unwrap_or_else(|e| panic!("readback failed: {e}"))
}

/// Peak signal-to-noise ratio of two 8-bit images in dB (∞ when identical).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "image sizes differ");
    let mse = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}
