//! `iclora bench flux-step`: one denoising step of a FLUX.1 transformer with random weights, per
//! block kind and whole, with the FLOPs it does (medians, as `iclora bench kernels`).

use super::{time_median, BenchRow};
use crate::error::Result;
use crate::gpu::{Batch, DType, Gpu};
use crate::kernels::matmul::Precision;
use crate::reference::random::Rng;

/// Options of `iclora bench flux-step`: one denoising step of a FLUX.1 transformer with random
/// weights (`FluxWeights::random`: blocks of one kind share their tensors, so any block count
/// costs the memory of one block of each kind).
#[derive(Debug, Clone)]
pub struct FluxStepOpts {
    /// Joint sequence length, text + image (FLUX.1 at 1024²: 512 + 4096 = 4608); text gets 1/9.
    pub tokens: usize,
    pub format: DType,
    pub double: usize,
    pub single: usize,
    pub iters: usize,
    /// Width overrides for quick smoke runs (FLUX.1: 24 heads × 128 = 3072, MLP 4×).
    pub heads: usize,
    pub head_dim: usize,
    /// Random LoRA adapters attached at run time (`LoraHost::set_loras`, `LoraAdapter::random`:
    /// every attention/MLP Linear of the blocks), each of rank `lora_rank`.
    pub loras: usize,
    pub lora_rank: usize,
    /// Tile arithmetic of every matmul (`FluxModel::set_precision`; F16 needs shader-f16 and lets
    /// GPUs use the f16 FMA tiles and the cooperative-matrix path).
    pub precision: Precision,
}

impl FluxStepOpts {
    /// Full FLUX.1 with every block, at 1024²; `software` (a CPU adapter such as lavapipe) gets
    /// 256 tokens and one block of each kind instead.
    pub fn defaults(software: bool) -> FluxStepOpts {
        let (tokens, double, single) = if software { (256, 1, 1) } else { (4608, 19, 38) };
        FluxStepOpts {
            tokens,
            format: DType::Q8_0,
            double,
            single,
            iters: 3,
            heads: 24,
            head_dim: 128,
            loras: 0,
            lora_rank: 16,
            precision: Precision::F32,
        }
    }

    /// FLUX.1-dev's config with this run's widths and block counts.
    pub fn config(&self) -> crate::model::flux::FluxConfig {
        let c = crate::model::flux::FluxConfig::flux1_dev();
        // FLUX.1's split 16/56/56 of 128, scaled: one eighth for the index axis, the rest halved.
        let a = self.head_dim / 16 * 2;
        let b = (self.head_dim - a) / 4 * 2;
        let axes = vec![a, b, self.head_dim - a - b];
        let hidden = self.heads * self.head_dim;
        crate::model::flux::FluxConfig {
            heads: self.heads,
            head_dim: self.head_dim,
            mlp_hidden: 4 * hidden,
            double_blocks: self.double,
            single_blocks: self.single,
            axes_dim: axes,
            ..c
        }
    }

    /// (text, image) tokens.
    pub fn split(&self) -> (usize, usize) {
        let txt = (self.tokens / 9).max(1);
        (txt, self.tokens.saturating_sub(txt))
    }
}

/// FLOPs of one block (every matmul and the attention's two products, `2·m·n·k` each) for `l`
/// joint tokens: (double, single), BFL `DoubleStreamBlock` / `SingleStreamBlock`,
/// src/flux/modules/layers.py @ 802fb47.
pub fn flux_block_flops(c: &crate::model::flux::FluxConfig, l: usize) -> (f64, f64) {
    let (h, m, l) = (c.hidden() as f64, c.mlp_hidden as f64, l as f64);
    let attn = 4.0 * l * l * h;
    let double = 2.0 * (2.0 * 6.0 * h * h + l * (3.0 * h * h + h * h + 2.0 * m * h)) + attn;
    let single = 2.0 * (3.0 * h * h + l * (3.0 * h + m) * h + l * h * (h + m)) + attn;
    (double, single)
}

/// FLOPs outside the blocks: embedders, input projections and the final layer.
fn flux_rest_flops(c: &crate::model::flux::FluxConfig, txt: usize, img: usize) -> f64 {
    let h = c.hidden() as f64;
    let t = 256.0 * h + h * h;
    let embed = t * if c.guidance { 2.0 } else { 1.0 } + c.pooled_dim as f64 * h + h * h;
    let proj = (img * c.in_channels) as f64 * h + (txt * c.context_dim) as f64 * h;
    2.0 * (embed + proj + 2.0 * h * h + img as f64 * h * c.out_channels as f64)
}

/// Runs `iclora bench flux-step`: times the parts of one step (each block submitted alone and
/// waited for, medians over `iters`), then the whole step as one submission.
pub fn bench_flux_step(gpu: &Gpu, opts: &FluxStepOpts, mut report: impl FnMut(BenchRow)) -> Result<()> {
    use crate::model::flux::{FluxInputs, FluxModel, FluxWeights};
    let c = opts.config();
    let (lt, li) = opts.split();
    let (rows, cols) =
        (1..=li).rev().filter(|r| li % r == 0 && r * r <= li).map(|r| (r, li / r)).next().unwrap_or((1, li));
    let mut rng = Rng::new(9);
    let mut input = |r: usize, k: usize| gpu.upload_f32(&[r, k], &rng.vec(r * k, -1.0, 1.0));
    let h = c.hidden();
    let (img, txt, pooled) = (input(li, c.in_channels)?, input(lt, c.context_dim)?, input(1, c.pooled_dim)?);
    // Block inputs: the streams and silu(vec) (values do not matter for timing).
    let (txt_h, img_h, joint, svec) = (input(lt, h)?, input(li, h)?, input(lt + li, h)?, input(1, h)?);
    let mut full = FluxModel { config: c.clone(), weights: FluxWeights::random(gpu, &c, opts.format, 13)? };
    if opts.loras > 0 {
        use crate::lora::{LoraAdapter, LoraHost};
        let adapters = (0..opts.loras)
            .map(|i| LoraAdapter::random(&c, opts.lora_rank, 100 + i as u64))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<(&LoraAdapter, f32)> = adapters.iter().map(|a| (a, 1.0)).collect();
        let applied = full.set_loras(gpu, &refs)?;
        let note = format!(
            "{} adapters of rank {} on {} weights ({} stack slices)",
            opts.loras, opts.lora_rank, applied.weights, applied.slices
        );
        report(BenchRow {
            kernel: "lora".into(),
            format: opts.format.to_string(),
            shape: String::new(),
            median_ms: 0.0,
            gflops: 0.0,
            gbs: 0.0,
            note,
        });
    }
    full.set_precision(gpu, opts.precision)?;
    let mut w = full.weights;
    let (doubles, singles) = (std::mem::take(&mut w.double_blocks), std::mem::take(&mut w.single_blocks));
    let rest_model = FluxModel { config: c.clone(), weights: w };
    let rope = rest_model.rope_tables(gpu, lt, rows, cols)?;
    let inp = FluxInputs { img: &img, txt: &txt, pooled: &pooled, timestep: 0.5, guidance: Some(3.5), rope: &rope };
    let (fd, fs) = flux_block_flops(&c, lt + li);
    let fr = flux_rest_flops(&c, lt, li);
    // Rows say which tile arithmetic they timed: `Q8_0` (f32 tiles) or `Q8_0/f16`.
    let format =
        if opts.precision == Precision::F16 { format!("{}/f16", opts.format) } else { opts.format.to_string() };
    let row = |kernel: &str, shape: String, ms: f64, flops: f64| BenchRow {
        kernel: kernel.into(),
        format: format.clone(),
        shape,
        median_ms: ms,
        gflops: flops / ms / 1e6,
        gbs: 0.0,
        note: String::new(),
    };
    let shape = format!("{lt}+{li}tok h{h}");

    let rest = time_median(gpu, opts.iters, || {
        let mut b = gpu.batch();
        rest_model.forward(gpu, &mut b, &inp)?;
        gpu.submit(b)
    })?;
    report(row("rest", shape.clone(), rest, fr));
    let (nd, ns) = (doubles.len(), singles.len());
    // Median time of all blocks of one kind, each submitted alone, divided by their count.
    let per_block = |n: usize, run: &dyn Fn(&mut Batch, usize) -> Result<()>| -> Result<f64> {
        let ms = time_median(gpu, opts.iters, || {
            for i in 0..n {
                let mut b = gpu.batch();
                run(&mut b, i)?;
                gpu.submit(b)?;
            }
            Ok(())
        })?;
        Ok(ms / n as f64)
    };
    let mut est = rest;
    if nd > 0 {
        let ms = per_block(nd, &|b, i| doubles[i].forward(gpu, b, &c, &txt_h, &img_h, &svec, &rope).map(drop))?;
        report(row("double", format!("{shape} x{nd}"), ms, fd));
        est += 19.0 * ms;
    }
    if ns > 0 {
        let ms = per_block(ns, &|b, i| singles[i].forward(gpu, b, &c, &joint, &svec, &rope).map(drop))?;
        report(row("single", format!("{shape} x{ns}"), ms, fs));
        est += 38.0 * ms;
    }
    let model = FluxModel {
        config: c.clone(),
        weights: FluxWeights { double_blocks: doubles, single_blocks: singles, ..rest_model.weights },
    };
    let step = time_median(gpu, opts.iters, || {
        let mut b = gpu.batch();
        model.forward(gpu, &mut b, &inp)?;
        gpu.submit(b)
    })?;
    report(row("step", format!("{shape} {nd}d+{ns}s"), step, fr + nd as f64 * fd + ns as f64 * fs));
    // What one more step (warm: pipelines compiled, buffers pooled) asks of the GPU.
    let before = gpu.work_stats();
    let mut b = gpu.batch();
    model.forward(gpu, &mut b, &inp)?;
    gpu.submit(b)?;
    report(BenchRow {
        kernel: "step work".into(),
        format: opts.format.to_string(),
        shape: format!("{shape} {nd}d+{ns}s"),
        median_ms: 0.0,
        gflops: 0.0,
        gbs: 0.0,
        note: gpu.work_stats().since(before).to_string(),
    });
    if nd > 0 && ns > 0 {
        // FLUX.1's 19 + 38 blocks from the per-block medians (separate submissions).
        report(row("step(est)", format!("{shape} 19d+38s"), est, fr + 19.0 * fd + 38.0 * fs));
    }
    Ok(())
}
