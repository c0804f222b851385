//! `iclora bench kernels`: times the kernels at FLUX shapes on the current
//! adapter. Figures are medians over several runs, each run submitted alone
//! and waited for, so they include dispatch overhead (as a FLUX step would).
//! Native only (it uses wall-clock time and blocking waits). The other benchmarks: a FLUX step
//! (`flux_step`), the live preview (`preview`), reductions (`reduce`) and weight streaming
//! (`stream`).

mod flux_step;
pub mod preview;
pub mod reduce;
pub mod stream;

pub use flux_step::{bench_flux_step, FluxStepOpts};

use std::time::Instant;

use crate::error::Result;
use crate::gpu::{DType, Gpu, Tensor};
use crate::kernels::attention::{attention_with, AttnInput, AttnOptions, AttnPath};
use crate::kernels::conv2d::{conv2d, Conv2d};
use crate::kernels::matmul::{matmul, Epilogue, Precision};
use crate::reference::random::{weight_bytes, Rng};
use crate::weights::repack::repack;

#[derive(Debug, Clone)]
pub struct BenchOpts {
    /// Fraction of FLUX's 4608 tokens (1024² + 512 text tokens) to run with.
    pub scale: f64,
    pub iters: usize,
    pub formats: Vec<DType>,
    pub precision: Precision,
    /// Which kernel families to run (`KERNELS` names).
    pub kernels: Vec<String>,
}

/// The kernel families `iclora bench kernels` knows. `matmul_coop` runs the cooperative-matrix
/// (tensor core) matmul alone, for A/B against `matmul` with `ICLORA_NO_COOP=1` (FMA kernels).
/// `reductions` times the row-reducing kernels on their subgroup and workgroup-memory paths
/// (`bench_reduce`).
pub const KERNELS: [&str; 5] = ["matmul", "attention", "conv2d", "matmul_coop", "reductions"];

impl Default for BenchOpts {
    fn default() -> Self {
        BenchOpts {
            scale: 1.0,
            iters: 5,
            formats: DType::WEIGHT_FORMATS.to_vec(),
            precision: Precision::F32,
            // matmul_coop only on request: `matmul` already takes the cooperative path where it applies.
            kernels: KERNELS.iter().filter(|k| **k != "matmul_coop").map(|k| k.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BenchRow {
    pub kernel: String,
    pub format: String,
    pub shape: String,
    pub median_ms: f64,
    pub gflops: f64,
    pub gbs: f64,
    pub note: String,
}

impl std::fmt::Display for BenchRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.note.is_empty() {
            write!(
                f,
                "{:<10} {:<6} {:<22} median_ms={:.3} gflops={:.2} gbs={:.2}",
                self.kernel, self.format, self.shape, self.median_ms, self.gflops, self.gbs
            )
        } else {
            write!(f, "{:<10} {:<6} {:<22} {}", self.kernel, self.format, self.shape, self.note)
        }
    }
}

fn unit(rng: &mut Rng) -> f32 {
    rng.uniform(-1.0, 1.0)
}

/// A random `[n, k]` weight in `dtype`, in GGUF/file layout then repacked for the GPU.
pub fn random_weight(gpu: &Gpu, dtype: DType, n: usize, k: usize, seed: u64) -> Result<Tensor> {
    let bytes = weight_bytes(&mut Rng::new(seed), dtype, n * k, 1.0, 0.01);
    gpu.upload_raw(&[n, k], dtype, &repack(dtype, &bytes)?)
}

/// Median wall time in ms of `iters` runs of `f` (after one warm-up run that also compiles pipelines).
pub fn time_median<F: FnMut() -> Result<()>>(gpu: &Gpu, iters: usize, mut f: F) -> Result<f64> {
    f()?;
    gpu.wait_idle()?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t0 = Instant::now();
        f()?;
        gpu.wait_idle()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Matmul at FLUX's two weight shapes (attention/proj 3072→3072, MLP up 3072→12288) for each format.
pub fn bench_matmul(gpu: &Gpu, opts: &BenchOpts, report: impl FnMut(BenchRow)) -> Result<()> {
    bench_matmul_path(gpu, opts, false, report)
}

/// [`bench_matmul`] on the cooperative-matrix kernel only; one "skipped" row where the adapter
/// has no usable configuration. Its f16 operands need `--f16` (f32 tiles keep the FMA kernel).
pub fn bench_matmul_coop(gpu: &Gpu, opts: &BenchOpts, mut report: impl FnMut(BenchRow)) -> Result<()> {
    if gpu.features().cooperative_matrix.is_some() {
        return bench_matmul_path(gpu, opts, true, report);
    }
    let note = format!(
        "skipped: adapter lacks cooperative matrix (reported configs: {:?})",
        gpu.info().cooperative_matrix_configs
    );
    report(BenchRow {
        kernel: "matmul_coop".into(),
        format: String::new(),
        shape: String::new(),
        median_ms: 0.0,
        gflops: 0.0,
        gbs: 0.0,
        note,
    });
    Ok(())
}

fn bench_matmul_path(gpu: &Gpu, opts: &BenchOpts, coop_only: bool, mut report: impl FnMut(BenchRow)) -> Result<()> {
    use crate::kernels::matmul_coop::{matmul_coop, select};
    let m = ((4608.0 * opts.scale).ceil() as usize).max(1);
    let k = 3072;
    let mut rng = Rng::new(7);
    let x_data: Vec<f32> = (0..m * k).map(|_| unit(&mut rng)).collect();
    let x = gpu.upload_f32(&[m, k], &x_data)?;
    for &n in &[3072usize, 12288] {
        for &dtype in &opts.formats {
            let shape = format!("{m}x{k}->{n}");
            let w_bytes = dtype.gpu_bytes(n * k) as u64;
            let w = random_weight(gpu, dtype, n, k, 11)?;
            let epi = Epilogue { precision: opts.precision, ..Default::default() };
            let path = select(gpu, &x, &w, &epi);
            if coop_only {
                if let Err(why) = path {
                    report(BenchRow {
                        kernel: "matmul_coop".into(),
                        format: dtype.to_string(),
                        shape,
                        median_ms: 0.0,
                        gflops: 0.0,
                        gbs: 0.0,
                        note: format!("skipped: {why}"),
                    });
                    continue;
                }
            }
            let ms = time_median(gpu, opts.iters, || {
                let mut b = gpu.batch();
                let _y = if coop_only {
                    matmul_coop(gpu, &mut b, &x, &w, &epi)?
                } else {
                    matmul(gpu, &mut b, &x, &w, &epi)?
                };
                gpu.submit(b)
            })?;
            // Marked so that an A/B run (ICLORA_NO_COOP=1) cannot be mistaken for the other path.
            let shape = if path.is_ok() { format!("{shape} coop") } else { shape };
            let flops = 2.0 * (m * n * k) as f64;
            let bytes = (w_bytes + (m * k * 4 + m * n * 4) as u64) as f64;
            report(BenchRow {
                kernel: if coop_only { "matmul_coop" } else { "matmul" }.into(),
                format: dtype.to_string(),
                shape,
                median_ms: ms,
                gflops: flops / ms / 1e6,
                gbs: bytes / ms / 1e6,
                note: String::new(),
            });
        }
    }
    Ok(())
}

/// Joint attention as in a FLUX block: 24 heads × 128, q/k/v read from one fused `[L, 9216]` tensor,
/// or from three `[L, 3072]` ones where the fused one exceeds a storage binding (lavapipe's 128 MiB
/// at 4096 tokens and more).
pub fn bench_attention(gpu: &Gpu, opts: &BenchOpts, mut report: impl FnMut(BenchRow)) -> Result<()> {
    let (heads, d) = (24usize, 128usize);
    let l = ((4608.0 * opts.scale).ceil() as usize).max(1);
    let mut rng = Rng::new(5);
    let fused = (l * 3 * heads * d * 4) as u64 <= gpu.info().max_storage_binding;
    let mut part = |w: usize| gpu.upload_f32(&[l, w], &(0..l * w).map(|_| unit(&mut rng)).collect::<Vec<f32>>());
    let qkv: Vec<Tensor> =
        if fused { vec![part(3 * heads * d)?] } else { vec![part(heads * d)?, part(heads * d)?, part(heads * d)?] };
    // (tensor, column offset) of q, k and v.
    let at = |i: usize| if fused { (&qkv[0], i * heads * d) } else { (&qkv[i], 0) };
    let opts_a = AttnOptions::for_head_dim(d);
    // ICLORA_ATTN_GENERAL=1 forces the general kernel, for A/B runs against the tiled one.
    let path = match std::env::var("ICLORA_ATTN_GENERAL") {
        Ok(s) if s == "1" => AttnPath::General,
        _ => AttnPath::Auto,
    };
    let call = || {
        let mut b = gpu.batch();
        let _o = attention_with(
            gpu,
            &mut b,
            AttnInput::new(at(0).0, at(0).1),
            AttnInput::new(at(1).0, at(1).1),
            AttnInput::new(at(2).0, at(2).1),
            heads,
            d,
            &opts_a,
            path,
        )?;
        gpu.submit(b)
    };
    let ms = time_median(gpu, opts.iters, call)?;
    // Memory (issue #8: peak at 2n tokens ≤ 2.2× that at n): storage bytes one call holds beyond
    // what existed before it, and the peak of all live storage (inputs included), from the pool's
    // counters. Measured on a call of its own, after the timed ones.
    gpu.wait_idle()?;
    let before = gpu.buffer_stats().live_bytes;
    gpu.reset_peak_bytes();
    call()?;
    gpu.wait_idle()?;
    let peak = gpu.buffer_stats().peak_live_bytes;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let flops = 4.0 * (l * l * heads * d) as f64;
    let bytes = (l * 3 * heads * d * 4 + l * heads * d * 4) as f64;
    report(BenchRow {
        kernel: "attention".into(),
        format: "F32".into(),
        // Marked so that an A/B run (ICLORA_ATTN_GENERAL=1) cannot be mistaken for the default path.
        shape: format!(
            "{l}tok x{heads}h x{d}{}{}",
            if path == AttnPath::General { " general" } else { "" },
            if fused { "" } else { " split" }
        ),
        median_ms: ms,
        gflops: flops / ms / 1e6,
        gbs: bytes / ms / 1e6,
        note: String::new(),
    });
    report(BenchRow {
        kernel: "attention".into(),
        format: "F32".into(),
        shape: format!("{l}tok x{heads}h x{d}"),
        median_ms: 0.0,
        gflops: 0.0,
        gbs: 0.0,
        note: format!(
            "memory: call_alloc_mib={:.2} peak_live_mib={:.2} (inputs included)",
            mib(peak.saturating_sub(before)),
            mib(peak)
        ),
    });
    Ok(())
}

/// VAE decoder convolutions for a 1024² image (latent 128²), sides scaled by √scale.
pub fn bench_conv2d(gpu: &Gpu, opts: &BenchOpts, mut report: impl FnMut(BenchRow)) -> Result<()> {
    let side = |s: usize| ((s as f64 * opts.scale.sqrt()).round() as usize).max(2);
    // (in channels, side, out channels, conv, what)
    let cases = [
        (512, side(128), 512, Conv2d::same(1), "mid 3x3"),
        (512, side(128), 512, Conv2d::UPSAMPLE, "up+3x3"),
        (256, side(512), 256, Conv2d::same(1), "3x3"),
        (128, side(1024), 128, Conv2d::same(1), "3x3"),
        (128, side(1024), 3, Conv2d::same(1), "conv_out"),
    ];
    let mut rng = Rng::new(3);
    for (c, s, o, conv, what) in cases {
        for dtype in [DType::F32, DType::F16] {
            let shape = format!("{c}x{s}x{s}->{o} {what}");
            let (ho, wo) = conv.output_size(s, s, 3, 3).unwrap_or((0, 0));
            let in_bytes = (c * s * s * 4) as u64;
            let out_bytes = (o * ho * wo * 4) as u64;
            if in_bytes.max(out_bytes) > gpu.info().max_storage_binding {
                report(BenchRow {
                    kernel: "conv2d".into(),
                    format: dtype.to_string(),
                    shape,
                    median_ms: 0.0,
                    gflops: 0.0,
                    gbs: 0.0,
                    note: "skipped: activation over this adapter's binding limit (the VAE tiles such layers)".into(),
                });
                continue;
            }
            let x = gpu.upload_f32(&[c, s, s], &(0..c * s * s).map(|_| unit(&mut rng)).collect::<Vec<_>>())?;
            let wv: Vec<f32> = (0..o * c * 9).map(|_| unit(&mut rng) * 0.05).collect();
            let w = if dtype == DType::F16 {
                gpu.upload_half(&[o, c, 3, 3], &wv, dtype)?
            } else {
                gpu.upload_f32(&[o, c, 3, 3], &wv)?
            };
            let bias = gpu.upload_f32(&[o], &vec![0.0; o])?;
            let ms = time_median(gpu, opts.iters, || {
                let mut b = gpu.batch();
                let _y = conv2d(gpu, &mut b, &x, &w, &bias, conv, None)?;
                gpu.submit(b)
            })?;
            let flops = 2.0 * (o * c * 9 * ho * wo) as f64;
            report(BenchRow {
                kernel: "conv2d".into(),
                format: dtype.to_string(),
                shape,
                median_ms: ms,
                gflops: flops / ms / 1e6,
                gbs: (in_bytes + out_bytes + w.gpu_bytes()) as f64 / ms / 1e6,
                note: String::new(),
            });
        }
    }
    Ok(())
}

/// Everything `iclora bench kernels` runs.
pub fn bench_kernels(gpu: &Gpu, opts: &BenchOpts, mut report: impl FnMut(BenchRow)) -> Result<()> {
    let wants = |k: &str| opts.kernels.iter().any(|w| w == k);
    if wants("matmul") {
        bench_matmul(gpu, opts, &mut report)?;
    }
    if wants("attention") {
        bench_attention(gpu, opts, &mut report)?;
    }
    if wants("conv2d") {
        bench_conv2d(gpu, opts, &mut report)?;
    }
    if wants("matmul_coop") {
        bench_matmul_coop(gpu, opts, &mut report)?;
    }
    if wants("reductions") {
        reduce::bench_reductions(gpu, opts, &mut report)?;
    }
    Ok(())
}
