//! Peer benchmark: burn 0.22's wgpu (cubecl, WGSL) matmul on the default wgpu adapter, at the
//! shapes of FLUX's linear layers: y[M, N] = x[M, K] · W[N, K]ᵀ with W stored [out, in] like a
//! torch `Linear` weight. Prints one parseable line per (shape, dtype):
//! `peer burn-cubecl <dtype> <M>x<K>-><N> median_ms=<f> gflops=<f>`
//!
//! Usage: `peer-bench [--scale S] [--iters N]` — M = ceil(4608·S) tokens (4608 = a 1024×1024
//! image in FLUX's packed latent space), K = 3072 (hidden), N = 3072 or 12288 (MLP width).

use std::time::Instant;

use burn::tensor::{DType, Device, Distribution, Tensor};

const FLUX_TOKENS: f64 = 4608.0;
const SHAPES: [(usize, usize); 2] = [(3072, 3072), (3072, 12288)];
const WARMUP: usize = 2;

struct Args {
    scale: f64,
    iters: usize,
}

fn parse_args() -> Args {
    let mut args = Args { scale: 1.0, iters: 5 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--scale" => args.scale = value.parse().unwrap_or_else(|_| usage("bad --scale")),
            "--iters" => args.iters = value.parse().unwrap_or_else(|_| usage("bad --iters")),
            _ => usage(&format!("unknown option {flag}")),
        }
    }
    if !(args.scale > 0.0) || args.iters == 0 {
        usage("--scale must be > 0 and --iters >= 1");
    }
    args
}

fn usage(msg: &str) -> ! {
    eprintln!("{msg}\nusage: peer-bench [--scale S (default 1.0)] [--iters N (default 5)]");
    std::process::exit(2)
}

/// Smallest number of equal row-blocks of W such that each block and its output block fit in
/// one storage binding (lavapipe: 128 MiB; f32 W[12288, 3072] is 150 MB, so it splits in two).
fn weight_parts(m: usize, k: usize, n: usize, elem_bytes: usize, max_binding: u64) -> usize {
    let fits = |p: usize| {
        let rows = (n / p) as u64;
        rows * k as u64 * elem_bytes as u64 <= max_binding
            && m as u64 * rows * elem_bytes as u64 <= max_binding
    };
    (1..=n)
        .find(|&p| n % p == 0 && fits(p))
        .expect("no split of W fits the binding limit")
}

/// Checks y[0, 0] of block 0 against a CPU dot product so we never time a no-op.
fn sanity_check(x: &Tensor<2>, w: &Tensor<2>, y: &Tensor<2>, rtol: f32) {
    let k = x.dims()[1];
    let row = |t: &Tensor<2>| {
        t.clone().slice([0..1, 0..k]).to_data_as::<f32>().try_to_vec::<f32>().expect("read row")
    };
    let (xr, wr) = (row(x), row(w));
    let expected: f32 = xr.iter().zip(&wr).map(|(a, b)| a * b).sum();
    let scale: f32 = xr.iter().zip(&wr).map(|(a, b)| (a * b).abs()).sum();
    let got = y.clone().slice([0..1, 0..1]).to_data_as::<f32>().try_to_vec::<f32>().expect("read y")[0];
    assert!(
        (got - expected).abs() <= rtol * scale,
        "burn matmul result wrong: y[0,0] = {got}, CPU dot = {expected}"
    );
}

/// Median seconds of one y = x·Wᵀ (all W blocks), each run ended by a device sync.
fn bench(device: &Device, dtype: DType, m: usize, k: usize, n: usize, parts: usize, iters: usize) -> f64 {
    let dist = Distribution::Uniform(-1.0, 1.0);
    let x = Tensor::<2>::random([m, k], dist, (device, dtype));
    let ws: Vec<Tensor<2>> =
        (0..parts).map(|_| Tensor::<2>::random([n / parts, k], dist, (device, dtype))).collect();
    device.sync().expect("sync after building inputs");

    // The transpose is a stride change; burn's matmul reads W column-major without a copy.
    let run = || -> Vec<Tensor<2>> {
        let ys = ws.iter().map(|w| x.clone().matmul(w.clone().transpose())).collect();
        // `into_data()` can return before the bytes land in burn 0.22: wait on the device.
        device.sync().expect("device sync");
        ys
    };
    let ys = run();
    sanity_check(&x, &ws[0], &ys[0], if dtype == DType::F32 { 1e-4 } else { 1e-2 });
    drop(ys);
    for _ in 1..WARMUP {
        drop(run());
    }

    let mut times: Vec<f64> = (0..iters)
        .map(|_| {
            let t0 = Instant::now();
            let ys = run();
            let dt = t0.elapsed().as_secs_f64();
            drop(ys);
            dt
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    if times.len() % 2 == 0 { (times[mid - 1] + times[mid]) / 2.0 } else { times[mid] }
}

fn main() {
    let args = parse_args();
    let (device, setup) = Device::wgpu_options()
        .init_with_setup()
        .expect("failed to initialize burn's wgpu runtime on the default adapter");
    let info = setup.adapter.get_info();
    let max_binding = u64::from(setup.device.limits().max_storage_buffer_binding_size);
    println!(
        "adapter: {} ({:?}, {} {}), max storage binding {} MiB",
        info.name,
        info.backend,
        info.driver,
        info.driver_info,
        max_binding >> 20
    );

    // ceil, so --scale 0.111 gives M = 512 (4608 · 0.111 = 511.49); the epsilon keeps exact
    // products such as 4608 · 0.25 from rounding up.
    let m = ((FLUX_TOKENS * args.scale - 1e-6).ceil() as usize).max(1);
    for (k, n) in SHAPES {
        for (dtype, name, elem_bytes) in [(DType::F32, "f32", 4), (DType::F16, "f16", 2)] {
            if !device.supports_dtype(dtype) {
                println!("# skip {name}: adapter does not support it");
                continue;
            }
            let parts = weight_parts(m, k, n, elem_bytes, max_binding);
            if parts > 1 {
                println!("# {name} {m}x{k}->{n}: W split into {parts} blocks of {} rows", n / parts);
            }
            let t = bench(&device, dtype, m, k, n, parts, args.iters);
            let gflops = 2.0 * (m * n * k) as f64 / t / 1e9;
            println!(
                "peer burn-cubecl {name} {m}x{k}->{n} median_ms={:.3} gflops={:.3}",
                t * 1e3,
                gflops
            );
        }
    }
}
