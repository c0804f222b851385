//! `iclora bench preview`: what a live preview costs per step at a canvas size: the TAEF1 decoder
//! (`model::taef1`, TAEF1's shape with random F16 weights) against the linear latent→RGB map
//! (`pipeline::preview`, a read-back of the packed latents and a CPU map). Compare with
//! `iclora bench flux-step` at the same canvas's tokens on the same adapter (BENCHMARKS.md).

use super::{time_median, BenchRow};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::pack::unpack;
use crate::model::taef1::{TinyDecoder, TinyDecoderConfig};
use crate::pipeline::preview::latent_preview;
use crate::pipeline::seed::latent_hw;
use crate::reference::random::Rng;

/// Times both previews of a `width × height` canvas, median of `iters` after a warm-up.
pub fn bench_preview(
    gpu: &Gpu,
    width: usize,
    height: usize,
    iters: usize,
    mut report: impl FnMut(BenchRow),
) -> Result<()> {
    let (lh, lw) = latent_hw(height, width);
    let dec = TinyDecoder::random(gpu, TinyDecoderConfig::taef1(), 21)?;
    let channels = dec.config.latent_channels;
    let tokens = (lh / 2) * (lw / 2);
    let packed = gpu.upload_f32(&[tokens, 4 * channels], &Rng::new(22).vec(tokens * 4 * channels, -2.0, 2.0))?;
    let shape = format!("{width}x{height}");
    let row = |kernel: &str, ms: f64, flops: f64| BenchRow {
        kernel: kernel.into(),
        format: "F16".into(),
        shape: shape.clone(),
        median_ms: ms,
        gflops: flops / ms / 1e6,
        gbs: 0.0,
        note: String::new(),
    };

    let taef1 = time_median(gpu, iters, || {
        let mut b = gpu.batch();
        let z = unpack(gpu, &mut b, &packed, channels, lh, lw)?;
        let image = dec.decode(gpu, &mut b, &z)?;
        gpu.submit(b)?;
        gpu.read_f32_blocking(&image).map(drop)
    })?;
    report(row("taef1", taef1, dec.flops(lh, lw)));
    let linear = time_median(gpu, iters, || {
        let v = gpu.read_f32_blocking(&packed)?;
        latent_preview(&v, lh, lw).map(drop)
    })?;
    report(BenchRow { format: "F32".into(), ..row("linear", linear, 0.0) });
    Ok(())
}
