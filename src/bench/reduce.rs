//! `iclora bench kernels --kernels reductions`: the kernels that reduce a row per workgroup
//! (`kernels::Reducing`), timed on both of their paths in the same run: subgroup reductions on
//! the bench's device (where it has subgroups) and workgroup-memory reductions on a second
//! device of the same adapter opened without them. FLUX shapes, scaled by `--scale`.

use super::{time_median, BenchOpts, BenchRow};
use crate::error::Result;
use crate::gpu::{Gpu, GpuOptions, Tensor};
use crate::kernels::norm::{self, Columns, Modulation, EPS_FLUX};
use crate::kernels::rope::{self, flux_position_ids, QkNormRope, RopeTables, FLUX_AXES, FLUX_THETA};
use crate::kernels::softmax::softmax;
use crate::reference::random::Rng;

/// Runs a recorded kernel once.
type Recorder = Box<dyn Fn(&Gpu) -> Result<()>>;
/// Builds a case's inputs and returns its recorder.
type Setup = Box<dyn Fn(&Gpu) -> Result<Recorder>>;

/// One kernel at one shape: its name, shape label, bytes it reads + writes, and a recorder.
struct Case {
    kernel: &'static str,
    shape: String,
    bytes: u64,
    run: Setup,
}

fn random(gpu: &Gpu, shape: &[usize], seed: u64) -> Result<Tensor> {
    let mut rng = Rng::new(seed);
    gpu.upload_f32(shape, &rng.vec(shape.iter().product(), -2.0, 2.0))
}

fn cases(opts: &BenchOpts) -> Vec<Case> {
    // FLUX.1 at 1024²: 4608 joint tokens; the VAE's last group norms are 128 channels at 1024².
    let tokens = ((4608.0 * opts.scale).round() as usize).max(1);
    let side = ((1024.0 * opts.scale.sqrt()).round() as usize).max(8);
    vec![
        Case {
            kernel: "adaLN",
            shape: format!("{tokens}x3072"),
            bytes: (tokens * 3072 * 8) as u64,
            run: Box::new(move |g| {
                let (x, m) = (random(g, &[tokens, 3072], 1)?, random(g, &[6 * 3072], 2)?);
                Ok(Box::new(move |g: &Gpu| {
                    let mut b = g.batch();
                    let _y = norm::layer_norm_modulated(
                        g,
                        &mut b,
                        &x,
                        &Modulation { tensor: &m, shift: 0, scale: 3072 },
                        EPS_FLUX,
                    )?;
                    g.submit(b)
                }))
            }),
        },
        Case {
            kernel: "qk_norm_rope",
            shape: format!("{tokens}x9216 D128"),
            bytes: (tokens * 6144 * 8) as u64,
            run: Box::new(move |g| {
                let x = random(g, &[tokens, 9216], 3)?;
                let (nq, nk) = (random(g, &[128], 4)?, random(g, &[128], 5)?);
                let ids = flux_position_ids(0, 1, tokens);
                let tables = RopeTables::new(g, &ids, &FLUX_AXES, FLUX_THETA)?;
                Ok(Box::new(move |g: &Gpu| {
                    let spec = QkNormRope {
                        q: Columns { offset: 0, width: 3072 },
                        k: Columns { offset: 3072, width: 3072 },
                        norm_q: &nq,
                        norm_k: &nk,
                        eps: EPS_FLUX,
                    };
                    let mut b = g.batch();
                    rope::qk_norm_rope_inplace(g, &mut b, &x, &spec, &tables, 0)?;
                    g.submit(b)
                }))
            }),
        },
        Case {
            kernel: "group_norm",
            shape: format!("128x{side}x{side} g32"),
            bytes: (128 * side * side * 8) as u64,
            run: Box::new(move |g| {
                let x = random(g, &[128, side, side], 6)?;
                let (w, bias) = (random(g, &[128], 7)?, random(g, &[128], 8)?);
                Ok(Box::new(move |g: &Gpu| {
                    let mut b = g.batch();
                    let _y = norm::group_norm(g, &mut b, &x, 32, &w, &bias, EPS_FLUX, true)?;
                    g.submit(b)
                }))
            }),
        },
        Case {
            kernel: "softmax",
            shape: format!("{}x4608", (tokens / 4).max(1)),
            bytes: ((tokens / 4).max(1) * 4608 * 8) as u64,
            run: Box::new(move |g| {
                let x = random(g, &[(tokens / 4).max(1), 4608], 9)?;
                Ok(Box::new(move |g: &Gpu| {
                    let mut b = g.batch();
                    let _y = softmax(g, &mut b, &x)?;
                    g.submit(b)
                }))
            }),
        },
    ]
}

/// Rows "subgroups" (where the device has them) and "workgroup memory", with the ratio of the two.
pub fn bench_reductions(gpu: &Gpu, opts: &BenchOpts, mut report: impl FnMut(BenchRow)) -> Result<()> {
    let plain = Gpu::new_blocking(&GpuOptions { allow_subgroups: false, ..GpuOptions::default() })?;
    for case in cases(opts) {
        let time = |g: &Gpu| -> Result<f64> {
            let f = (case.run)(g)?;
            time_median(g, opts.iters, || f(g))
        };
        let wg_ms = time(&plain)?;
        let row = |path: &str, ms: f64, note: String| BenchRow {
            kernel: case.kernel.into(),
            format: "F32".into(),
            shape: case.shape.clone(),
            median_ms: ms,
            gflops: 0.0,
            gbs: case.bytes as f64 / ms / 1e6,
            note: if note.is_empty() { String::new() } else { format!("{path}: {note}") },
        };
        if gpu.features().subgroups {
            let sg_ms = time(gpu)?;
            report(row(
                "subgroups",
                sg_ms,
                format!(
                    "median_ms={sg_ms:.3} gbs={:.2} ({:.2}x the workgroup-memory time)",
                    case.bytes as f64 / sg_ms / 1e6,
                    sg_ms / wg_ms
                ),
            ));
        } else {
            report(row("subgroups", 0.0, "not offered by this adapter".into()));
        }
        report(row(
            "workgroup memory",
            wg_ms,
            format!("median_ms={wg_ms:.3} gbs={:.2}", case.bytes as f64 / wg_ms / 1e6),
        ));
    }
    Ok(())
}
