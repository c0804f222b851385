//! shaders/matmul.wgsl (+ quant.wgsl) against reference::matmul / reference::quant,
//! for every weight format, the epilogues, LoRA stacks and the f16 paths.
//!
//! Tolerances: f32 arithmetic 1e-5 relative (`assert_close`: relative to
//! max(|expected|, rms(expected))), quantized weights included, since the
//! reference multiplies the very same dequantized values. F16 activation
//! storage: the reference takes the same f16-rounded inputs and the output is
//! rounded to f16 (2^-11 relative), so 1e-3. F16 tiles: each dot4 of f16 values
//! is formed in f16 (4 multiplies + 3 adds, each rounded: up to ~4u = 2e-3 of
//! the dot's absolute sum, u = 2^-11) before the f32 accumulation; over K/4
//! such terms the error relative to the output's RMS stays ~1e-3 with tails to
//! ~2.5e-3, so 5e-3.

mod common;
use common::{assert_close, gpu, run, Rng};
use half::f16;
use iclora::gpu::{DType, Gpu, GpuOptions};
use iclora::kernels::elementwise::Activation;
use iclora::kernels::matmul::{matmul, AdapterSlice, Epilogue, Gate, LoraStack, Precision};
use iclora::reference::matmul::{self as reference, EpilogueRef, LoraRef};
use iclora::reference::quant::dequantize;
use iclora::reference::random::weight_bytes;
use iclora::weights::repack::repack;
use iclora::Error;

/// Uploads a random weight; returns the GPU tensor's source bytes' dequantized values.
fn weight(g: &Gpu, rng: &mut Rng, dtype: DType, n: usize, k: usize) -> (iclora::gpu::Tensor, Vec<f32>) {
    let bytes = weight_bytes(rng, dtype, n * k, 1.0, 0.05);
    let values = dequantize(dtype, &bytes).expect("dequantize");
    let t = g.upload_raw(&[n, k], dtype, &repack(dtype, &bytes).expect("repack")).expect("upload");
    (t, values)
}

fn k_for(dtype: DType, k: usize) -> usize {
    k.div_ceil(dtype.block_elems()) * dtype.block_elems()
}

#[test]
fn reference_dequant_matches_hand_computed_blocks() {
    // Q8_0: d = 0.5, qs = [-128, -1, 0, 1, 127, ...]
    let mut b = vec![0u8; 34];
    b[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
    for (i, q) in [-128i8, -1, 0, 1, 127].iter().enumerate() {
        b[2 + i] = *q as u8;
    }
    let y = dequantize(DType::Q8_0, &b).unwrap();
    assert_eq!(&y[..5], &[-64.0, -0.5, 0.0, 0.5, 63.5]);
    // Q4_0: d = 2, byte 0 = 0x1F → y[0] = 2·(15−8) = 14, y[16] = 2·(1−8) = −14
    let mut b = vec![0u8; 18];
    b[0..2].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
    b[2] = 0x1F;
    let y = dequantize(DType::Q4_0, &b).unwrap();
    assert_eq!((y[0], y[16], y[1]), (14.0, -14.0, -16.0));
    // Q5_0: d = 1, qh bit 0 and bit 16 set, qs[0] = 0x00 → y[0] = 16−16 = 0, y[16] = 0, y[1] = −16
    let mut b = vec![0u8; 22];
    b[0..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
    b[2..6].copy_from_slice(&(1u32 | 1 << 16).to_le_bytes());
    let y = dequantize(DType::Q5_0, &b).unwrap();
    assert_eq!((y[0], y[16], y[1]), (0.0, 0.0, -16.0));
    // Q6_K: d = 1, scales all 1, ql = qh = 0 → every value −32
    let mut b = vec![0u8; 210];
    b[192..208].fill(1);
    b[208..210].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
    assert!(dequantize(DType::Q6K, &b).unwrap().iter().all(|&v| v == -32.0));
    // Q4_K: d = 1, dmin = 1, scales: sub-block 0 scale 2 min 3, qs[0] = 0x05 → y[0] = 2·5 − 3 = 7
    let mut b = vec![0u8; 144];
    b[0..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
    b[2..4].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
    b[4] = 2;
    b[8] = 3;
    b[16] = 0x05;
    assert_eq!(dequantize(DType::Q4K, &b).unwrap()[0], 7.0);
}

#[test]
fn gpu_dequantizes_every_format_exactly() {
    // x = identity, so y = Wᵀ: every weight element comes back through the kernel's dequantization.
    let g = gpu();
    let mut rng = Rng::new(10);
    for dtype in DType::WEIGHT_FORMATS {
        let (n, k) = (5, k_for(dtype, 64).max(dtype.block_elems()));
        let (w, values) = weight(g, &mut rng, dtype, n, k);
        let eye: Vec<f32> = (0..k * k).map(|i| if i / k == i % k { 1.0 } else { 0.0 }).collect();
        let got = run(|g, b| matmul(g, b, &g.upload_f32(&[k, k], &eye)?, &w, &Epilogue::default()));
        let expected: Vec<f32> = (0..k * n).map(|i| values[(i % n) * k + i / n]).collect();
        assert_close(&format!("dequant {dtype}"), &got, &expected, 0.0);
    }
}

#[test]
fn every_format_matches_reference_on_awkward_and_flux_shapes() {
    let g = gpu();
    let mut rng = Rng::new(11);
    let awkward = [(1, 1, 32), (7, 33, 96), (65, 130, 256), (3, 7, 512)];
    for dtype in DType::WEIGHT_FORMATS {
        for &(m, n, k0) in &awkward {
            let k = k_for(dtype, k0);
            let (w, wv) = weight(g, &mut rng, dtype, n, k);
            let x = rng.vec(m * k, -1.0, 1.0);
            let got = run(|g, b| matmul(g, b, &g.upload_f32(&[m, k], &x)?, &w, &Epilogue::default()));
            let expected = reference::matmul(&x, &wv, m, n, k, &EpilogueRef::default());
            assert_close(&format!("{dtype} m{m} n{n} k{k}"), &got, &expected, 1e-5);
        }
    }
    // Real FLUX widths with few tokens (lavapipe is slow): qkv/proj 3072→3072 rows, MLP down 12288→3072.
    for (dtype, m, n, k) in [
        (DType::F16, 3, 3072, 3072),
        (DType::Q8_0, 2, 3072, 3072),
        (DType::Q4_0, 2, 3072, 3072),
        (DType::Q4K, 1, 3072, 3072),
        (DType::Q6K, 1, 256, 12288),
        (DType::BF16, 2, 64, 12288),
    ] {
        let (w, wv) = weight(g, &mut rng, dtype, n, k);
        let x = rng.vec(m * k, -1.0, 1.0);
        let got = run(|g, b| matmul(g, b, &g.upload_f32(&[m, k], &x)?, &w, &Epilogue::default()));
        assert_close(
            &format!("FLUX {dtype} m{m} n{n} k{k}"),
            &got,
            &reference::matmul(&x, &wv, m, n, k, &EpilogueRef::default()),
            1e-5,
        );
    }
}

#[test]
fn epilogues_match_reference() {
    let g = gpu();
    let mut rng = Rng::new(12);
    for &(m, n, k) in &[(1, 1, 1), (7, 33, 13), (70, 66, 64), (2, 3072, 256)] {
        for dtype in [DType::F32, DType::Q8_0] {
            let k = k_for(dtype, k);
            let (w, wv) = weight(g, &mut rng, dtype, n, k);
            let x = rng.vec(m * k, -1.0, 1.0);
            let bias = rng.vec(n, -1.0, 1.0);
            let resid = rng.vec(m * n, -1.0, 1.0);
            let gate = rng.vec(n + 5, -1.0, 1.0);
            for act in Activation::ALL {
                let got = run(|g, b| {
                    let (bt, rt, gt) =
                        (g.upload_f32(&[n], &bias)?, g.upload_f32(&[m, n], &resid)?, g.upload_f32(&[n + 5], &gate)?);
                    let epi = Epilogue {
                        bias: Some(&bt),
                        act: Some(act),
                        gate: Some(Gate { residual: &rt, gate: &gt, offset: 5 }),
                        ..Default::default()
                    };
                    matmul(g, b, &g.upload_f32(&[m, k], &x)?, &w, &epi)
                });
                let epi =
                    EpilogueRef { bias: Some(&bias), act, gated: Some((&resid, &gate[5..])), ..Default::default() };
                assert_close(
                    &format!("epilogue {act:?} {dtype} m{m} n{n} k{k}"),
                    &got,
                    &reference::matmul(&x, &wv, m, n, k, &epi),
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn lora_stacks_on_fused_slices_match_reference_on_quantized_bases() {
    let g = gpu();
    let mut rng = Rng::new(13);
    // A fused "qkv" of 3×96 rows; adapter 1 targets q (rank 4), adapter 2 targets v (rank 16), adapter 3 everything.
    let (m, n, k) = (9, 288, 96);
    let slices = [
        AdapterSlice { n0: 0, len: 96, rank: 4, scale: 1.0 },
        AdapterSlice { n0: 192, len: 96, rank: 16, scale: 0.6 },
        AdapterSlice { n0: 0, len: 288, rank: 3, scale: -0.3 },
    ];
    let parts: Vec<(Vec<f32>, Vec<f32>)> =
        slices.iter().map(|s| (rng.vec(s.rank * k, -0.5, 0.5), rng.vec(s.len * s.rank, -0.5, 0.5))).collect();
    for dtype in [DType::F32, DType::Q8_0, DType::Q4_0] {
        let (w, wv) = weight(g, &mut rng, dtype, n, k);
        let x = rng.vec(m * k, -1.0, 1.0);
        let bias = rng.vec(n, -1.0, 1.0);
        for count in 1..=3 {
            let mut stack = LoraStack::new(
                g,
                k,
                &parts
                    .iter()
                    .zip(&slices)
                    .take(count)
                    .map(|((a, b), s)| (a.as_slice(), b.as_slice(), *s))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            for scale in [1.0f32, 0.25] {
                stack.set_scale(0, scale);
                let got = run(|g, b| {
                    let bt = g.upload_f32(&[n], &bias)?;
                    matmul(
                        g,
                        b,
                        &g.upload_f32(&[m, k], &x)?,
                        &w,
                        &Epilogue { bias: Some(&bt), lora: Some(&stack), ..Default::default() },
                    )
                });
                let loras: Vec<LoraRef> = parts
                    .iter()
                    .zip(&stack.adapters)
                    .map(|((a, b), s)| LoraRef { a, b, rank: s.rank, n0: s.n0, len: s.len, scale: s.scale })
                    .collect();
                let epi = EpilogueRef { bias: Some(&bias), loras: &loras, ..Default::default() };
                assert_close(
                    &format!("lora x{count} scale {scale} on {dtype}"),
                    &got,
                    &reference::matmul(&x, &wv, m, n, k, &epi),
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn tensors_over_the_binding_limit_are_split_not_rejected() {
    // A device limited to 64 KiB per binding: x, y, the residual and W all exceed it and are
    // processed in row blocks; bias, gate and LoRA indices must stay global.
    let g = &Gpu::new_blocking(&GpuOptions { max_storage_binding: Some(1 << 16), ..Default::default() }).unwrap();
    let mut rng = Rng::new(16);
    for (dtype, m, n, k) in [(DType::F32, 300, 200, 96), (DType::Q8_0, 130, 1000, 96), (DType::F16, 70, 700, 64)] {
        let (w, wv) = weight(g, &mut rng, dtype, n, k);
        let x = rng.vec(m * k, -1.0, 1.0);
        let (bias, resid, gate) = (rng.vec(n, -1.0, 1.0), rng.vec(m * n, -1.0, 1.0), rng.vec(n, -1.0, 1.0));
        let slice = AdapterSlice { n0: n / 3, len: n / 2, rank: 4, scale: 0.7 };
        let (la, lb) = (rng.vec(4 * k, -0.5, 0.5), rng.vec(slice.len * 4, -0.5, 0.5));
        let stack = LoraStack::new(g, k, &[(&la, &lb, slice)]).unwrap();
        let mut b = g.batch();
        let y = {
            let (bt, rt, gt) = (
                g.upload_f32(&[n], &bias).unwrap(),
                g.upload_f32(&[m, n], &resid).unwrap(),
                g.upload_f32(&[n], &gate).unwrap(),
            );
            let epi = Epilogue {
                bias: Some(&bt),
                lora: Some(&stack),
                act: Some(Activation::Silu),
                gate: Some(Gate { residual: &rt, gate: &gt, offset: 0 }),
                ..Default::default()
            };
            matmul(g, &mut b, &g.upload_f32(&[m, k], &x).unwrap(), &w, &epi).unwrap()
        };
        assert!(b.dispatches() > 2, "{dtype}: expected a split, got {} dispatches", b.dispatches());
        g.submit(b).unwrap();
        let got = g.read_f32_blocking(&y).unwrap();
        let loras = [LoraRef { a: &la, b: &lb, rank: 4, n0: slice.n0, len: slice.len, scale: 0.7 }];
        let epi = EpilogueRef { bias: Some(&bias), loras: &loras, act: Activation::Silu, gated: Some((&resid, &gate)) };
        assert_close(&format!("split {dtype} m{m} n{n} k{k}"), &got, &reference::matmul(&x, &wv, m, n, k, &epi), 1e-5);
    }
}

fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

#[test]
fn f16_activation_storage_matches_reference_on_rounded_inputs() {
    let g = gpu();
    let mut rng = Rng::new(14);
    for &(m, n, k) in &[(1, 2, 32), (7, 34, 64), (66, 130, 96)] {
        for dtype in [DType::F16, DType::Q4_1] {
            let (w, wv) = weight(g, &mut rng, dtype, n, k);
            let x = rng.vec(m * k, -1.0, 1.0);
            let got = run(|g, b| matmul(g, b, &g.upload_half(&[m, k], &x, DType::F16)?, &w, &Epilogue::default()));
            let expected = reference::matmul(&round_f16(&x), &wv, m, n, k, &EpilogueRef::default());
            assert_close(&format!("f16 storage {dtype} m{m} n{n} k{k}"), &got, &expected, 1e-3);
        }
    }
}

#[test]
fn f16_tiles_match_reference_on_rounded_inputs() {
    let g = gpu();
    if !g.features().shader_f16 {
        eprintln!("adapter has no shader-f16: the f16 tile path cannot run here (f32 paths are tested)");
        return;
    }
    let mut rng = Rng::new(15);
    for &(m, n, k) in &[(1, 1, 32), (7, 33, 96), (5, 3072, 256)] {
        for dtype in [DType::F16, DType::Q8_0, DType::Q5K] {
            let k = k_for(dtype, k);
            let (w, wv) = weight(g, &mut rng, dtype, n, k);
            let x = rng.vec(m * k, -1.0, 1.0);
            let got = run(|g, b| {
                matmul(
                    g,
                    b,
                    &g.upload_f32(&[m, k], &x)?,
                    &w,
                    &Epilogue { precision: Precision::F16, ..Default::default() },
                )
            });
            let expected = reference::matmul(&round_f16(&x), &round_f16(&wv), m, n, k, &EpilogueRef::default());
            assert_close(&format!("f16 tiles {dtype} m{m} n{n} k{k}"), &got, &expected, 5e-3);
        }
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let g = gpu();
    let mut b = g.batch();
    let x = g.upload_f32(&[2, 64], &[0.0; 128]).unwrap();
    let w_bad_k = g.upload_f32(&[3, 63], &[0.0; 189]).unwrap();
    assert!(matches!(matmul(g, &mut b, &x, &w_bad_k, &Epilogue::default()), Err(Error::ShapeMismatch { .. })));
    let x48 = g.upload_f32(&[2, 48], &[0.0; 96]).unwrap();
    let q = g.empty(&[2, 64], DType::Q8_0).unwrap().reshape(&[4, 32]).unwrap();
    assert!(matches!(matmul(g, &mut b, &x48, &q, &Epilogue::default()), Err(Error::ShapeMismatch { .. })));
    let w = g.upload_f32(&[3, 64], &[0.0; 192]).unwrap();
    let bias = g.upload_f32(&[4], &[0.0; 4]).unwrap();
    assert!(matches!(
        matmul(g, &mut b, &x, &w, &Epilogue { bias: Some(&bias), ..Default::default() }),
        Err(Error::ShapeMismatch { .. })
    ));
    let ids = g.upload_u32(&[2, 64], &[0; 128]).unwrap();
    assert!(matches!(matmul(g, &mut b, &ids, &w, &Epilogue::default()), Err(Error::UnsupportedFormat { .. })));
    // A single row wider than one storage binding cannot be split.
    let small = Gpu::new_blocking(&GpuOptions { max_storage_binding: Some(1 << 16), ..Default::default() }).unwrap();
    let wide = 20_000;
    let (xw, ww) = (small.empty(&[1, wide], DType::F32).unwrap(), small.empty(&[2, wide], DType::F32).unwrap());
    let r = matmul(&small, &mut small.batch(), &xw, &ww, &Epilogue::default());
    assert!(matches!(r, Err(Error::LimitExceeded { .. })), "{r:?}");
    // f16 tiles on a device without shader-f16.
    let no_f16 = Gpu::new_blocking(&GpuOptions { allow_f16: false, ..Default::default() }).unwrap();
    let (x2, w2) =
        (no_f16.upload_f32(&[2, 64], &[0.0; 128]).unwrap(), no_f16.upload_f32(&[3, 64], &[0.0; 192]).unwrap());
    let mut b2 = no_f16.batch();
    let r = matmul(&no_f16, &mut b2, &x2, &w2, &Epilogue { precision: Precision::F16, ..Default::default() });
    assert!(matches!(r, Err(Error::MissingFeature { feature: "shader-f16", .. })), "{r:?}");
}

/// `matmul` picks matmul_sg.wgsl on CPU adapters with 8-wide subgroups (lavapipe), so the tests
/// above mostly exercise it here; this runs the workgroup-tile kernel (what GPUs and browsers
/// without subgroups use) explicitly on every format, awkward and FLUX shapes and the fused
/// epilogue, at the same tolerance.
#[test]
fn the_tiled_kernel_matches_reference_when_forced() {
    use iclora::kernels::matmul::{matmul_with, MatmulPath};
    let g = gpu();
    let mut rng = Rng::new(19);
    for dtype in DType::WEIGHT_FORMATS {
        // (Not a lone output: one dot product that cancels to ~0 says nothing about relative error.)
        for &(m, n, k0) in &[(1, 9, 32), (7, 33, 96), (65, 130, 256), (2, 3072, 256)] {
            let k = k_for(dtype, k0);
            let (w, wv) = weight(g, &mut rng, dtype, n, k);
            let x = rng.vec(m * k, -1.0, 1.0);
            let bias = rng.vec(n, -1.0, 1.0);
            let got = run(|g, b| {
                let bt = g.upload_f32(&[n], &bias)?;
                let epi = Epilogue { bias: Some(&bt), act: Some(Activation::GeluTanh), ..Default::default() };
                matmul_with(g, b, &g.upload_f32(&[m, k], &x)?, &w, &epi, MatmulPath::Tiled)
            });
            let epi = EpilogueRef { bias: Some(&bias), act: Activation::GeluTanh, ..Default::default() };
            assert_close(
                &format!("tiled {dtype} m{m} n{n} k{k}"),
                &got,
                &reference::matmul(&x, &wv, m, n, k, &epi),
                1e-5,
            );
        }
    }
}
