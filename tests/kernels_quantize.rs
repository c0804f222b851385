//! `kernels::quantize` (F32/F16/BF16 → F16/Q8_0/Q4_0 on the GPU) against `reference::quantize`
//! (ggml's `quantize_row_q8_0_ref` / `quantize_row_q4_0_ref`, f16 round to nearest even).
//!
//! Tolerances: the GPU bytes must equal the reference bytes exactly — every code and every f16 scale,
//! zero codes allowed to differ (the shader divides and rounds in integer arithmetic precisely so that
//! WGSL's inexact division cannot move a code at a rounding tie). The dequantized result must lie
//! within the quantization error of the input: per block with step d (f16-rounded d16), Q8_0
//! |x − x̂| ≤ d/2 + 127·|d16 − d| and Q4_0 |x − x̂| ≤ d + 8·|d16 − d| (a full step: −max maps to code
//! 15 = 7·d), each ×(1 + 1e-5); F16 half an ulp.

mod common;

use common::{gpu, Rng};
use iclora::gpu::{DType, Gpu, GpuOptions, Tensor};
use iclora::kernels::embedding::dequantize as gpu_dequantize;
use iclora::kernels::quantize::{quantize, quantize_into, SOURCES, TARGETS};
use iclora::reference::quant::dequantize;
use iclora::reference::quantize::{quantize as reference, TINY};
use iclora::weights::repack::repack;
use iclora::Error;

/// Random values in blocks of 32 of different kinds: zeros, below TINY, a grid of max·k/16 (codes at
/// rounding ties), ±max ties, huge (f16 d overflows), small (f16 d subnormal), ordinary.
fn values(rng: &mut Rng, n: usize, source: DType) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let len = 32.min(n - v.len());
        let amp = 2f32.powf(rng.uniform(-8.0, 4.0));
        let max = if rng.below(2) == 0 { amp } else { -amp };
        let block: Vec<f32> = match rng.below(9) {
            0 => vec![0.0; len],
            1 => rng.vec(len, -2.0 * TINY, 2.0 * TINY),
            2 => (0..len).map(|_| max * (rng.below(33) as f32 - 16.0) / 16.0).collect(),
            3 => {
                let mut b = rng.vec(len, -amp, amp);
                let (i, j) = (rng.below(len), rng.below(len));
                (b[i], b[j]) = (1.5 * amp, -1.5 * amp);
                b
            }
            4 if source != DType::F16 => rng.vec(len, -3e7, 3e7),
            5 => rng.vec(len, -1e-5, 1e-5),
            6 => (0..len).map(|_| max * (rng.below(255) as f32 - 127.0 + 0.5) / 127.0).collect(),
            _ => rng.vec(len, -amp, amp),
        };
        v.extend(block);
    }
    v
}

/// `values` stored in `source`: (file bytes, the values the GPU reads).
fn encode(source: DType, v: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let bytes: Vec<u8> = match source {
        DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::F16 => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
        _ => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
    };
    let decoded = dequantize(source, &bytes).unwrap();
    (bytes, decoded)
}

fn upload(g: &Gpu, shape: &[usize], source: DType, bytes: &[u8]) -> Tensor {
    g.upload_raw(shape, source, &repack(source, bytes).unwrap()).unwrap()
}

fn read_bytes(g: &Gpu, t: &Tensor) -> Vec<u8> {
    pollster::block_on(g.read_bytes(t)).unwrap()
}

/// Exact comparison of GPU-layout bytes, naming the first differing element / block.
fn assert_same_bytes(what: &str, target: DType, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: byte count");
    let unit = if target == DType::F16 { 2 } else { target.gpu_block_words() * 4 };
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let k = i / unit;
        panic!(
            "{what}: first difference in {} {k}: got {:?}, expected {:?}",
            if unit == 2 { "element" } else { "block" },
            &got[k * unit..(k + 1) * unit],
            &want[k * unit..(k + 1) * unit]
        );
    }
}

/// Checks every dequantized value against its block's quantization step `d` and the f16 rounding
/// of `d` (which dominates when `d` is an f16 subnormal).
fn assert_within_quant_error(what: &str, target: DType, x: &[f32], xq: &[f32]) {
    for (b, (xs, qs)) in x.chunks(32).zip(xq.chunks(32)).enumerate() {
        let amax = xs.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let (steps, codes, d) = match target {
            DType::Q8_0 => (0.5, 127.0, amax / 127.0),
            DType::Q4_0 => (1.0, 8.0, amax / 8.0),
            _ => (0.0, 0.0, 0.0),
        };
        let d16 = half::f16::from_f32(d).to_f32();
        if amax < TINY || d16.is_infinite() || (target == DType::F16 && amax >= 65520.0) {
            continue; // stored as zero, or d / the value overflows f16 (inf, as ggml): nothing to bound
        }
        // F16: half an ulp (relative 2^-11), or half the smallest subnormal (2^-25).
        let bound = if target == DType::F16 {
            amax * 2f32.powi(-11) + 2f32.powi(-25)
        } else {
            steps * d + codes * (d16 - d).abs()
        };
        let bound = bound * (1.0 + 1e-5);
        for (j, (a, q)) in xs.iter().zip(qs).enumerate() {
            assert!((a - q).abs() <= bound, "{what}: block {b} element {j}: {a} dequantized to {q} (bound {bound})");
        }
    }
}

fn check(g: &Gpu, source: DType, target: DType, shape: &[usize], seed: u64) {
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(seed);
    let (bytes, x) = encode(source, &values(&mut rng, n, source));
    let t = upload(g, shape, source, &bytes);
    let mut b = g.batch();
    let y = quantize(g, &mut b, &t, target).unwrap();
    g.submit(b).unwrap();
    let want_file = reference(target, &x).unwrap();
    let what = format!("{source} → {target} {shape:?}");
    assert_same_bytes(&what, target, &read_bytes(g, &y), &repack(target, &want_file).unwrap());
    // The GPU dequantizer reads the result as the reference dequantizer reads the reference bytes.
    let rows = y.rows();
    let mut b = g.batch();
    let deq = gpu_dequantize(g, &mut b, &y.reshape(&[rows, y.dim_rev(0)]).unwrap()).unwrap();
    g.submit(b).unwrap();
    let xq = dequantize(target, &want_file).unwrap();
    let got = g.read_f32_blocking(&deq).unwrap();
    // Equal values (a zero code may come out as +0 or −0), NaN where d overflowed to inf.
    if let Some(i) = got.iter().zip(&xq).position(|(a, b)| a != b && !(a.is_nan() && b.is_nan())) {
        panic!("{what}: GPU dequantization differs at {i}: {} vs {}", got[i], xq[i]);
    }
    assert_within_quant_error(&what, target, &x, &xq);
    eprintln!("{what}: ok (exact)");
}

#[test]
fn quantized_codes_equal_ggml_reference() {
    let g = gpu();
    let shapes: [&[usize]; 5] = [&[1, 32], &[7, 64], &[3, 3072], &[2, 12288], &[2, 3, 96]];
    for (i, shape) in shapes.iter().enumerate() {
        for source in SOURCES {
            for target in [DType::Q8_0, DType::Q4_0] {
                check(g, source, target, shape, 100 + i as u64);
            }
        }
    }
}

#[test]
fn f16_conversion_rounds_to_nearest_even() {
    let g = gpu();
    let shapes: [&[usize]; 6] = [&[1], &[7], &[3, 5], &[2, 3072], &[1, 12288], &[4, 33]];
    for (i, shape) in shapes.iter().enumerate() {
        for source in SOURCES {
            check(g, source, DType::F16, shape, 200 + i as u64);
        }
    }
    // Hand-picked edges: ties to even, the largest finite, overflow, subnormal halves, underflow.
    let edges = [
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        65504.0,
        65519.0,
        65520.0,
        -1e9,
        2f32.powi(-24),
        1.5 * 2f32.powi(-24),
        2f32.powi(-25),
        2.5 * 2f32.powi(-25),
        -3e-8,
        6.1e-5,
    ];
    let t = g.upload_f32(&[edges.len()], &edges).unwrap();
    let mut b = g.batch();
    let y = quantize(g, &mut b, &t, DType::F16).unwrap();
    g.submit(b).unwrap();
    assert_same_bytes(
        "F16 edges",
        DType::F16,
        &read_bytes(g, &y),
        &repack(DType::F16, &reference(DType::F16, &edges).unwrap()).unwrap(),
    );
}

#[test]
fn all_zero_rows_give_ggml_zero_blocks() {
    let g = gpu();
    for target in [DType::Q8_0, DType::Q4_0] {
        let t = g.upload_f32(&[3, 64], &[0.0; 192]).unwrap();
        let mut b = g.batch();
        let y = quantize(g, &mut b, &t, target).unwrap();
        g.submit(b).unwrap();
        let bytes = read_bytes(g, &y);
        // d = 0 and codes 0 (Q8_0) or 8 | 8 << 4 (Q4_0), as ggml writes them.
        let code = if target == DType::Q8_0 { 0u8 } else { 0x88 };
        for blk in bytes.chunks(target.gpu_block_words() * 4) {
            assert!(blk[..4].iter().all(|&b| b == 0) && blk[4..].iter().all(|&b| b == code), "{target}: {blk:?}");
        }
    }
}

#[test]
fn streaming_into_offsets_and_split_bindings_match_whole() {
    // A device whose storage bindings are 64 KiB forces several dispatches per conversion.
    let small = Gpu::new_blocking(&GpuOptions { max_storage_binding: Some(64 << 10), ..Default::default() }).unwrap();
    for g in [gpu(), &small] {
        for target in TARGETS {
            let (rows, cols) = (37, 1024);
            let mut rng = Rng::new(7);
            let (bytes, x) = encode(DType::BF16, &values(&mut rng, rows * cols, DType::BF16));
            let want = repack(target, &reference(target, &x).unwrap()).unwrap();
            let whole = upload(g, &[rows, cols], DType::BF16, &bytes);
            let mut b = g.batch();
            let y = quantize(g, &mut b, &whole, target).unwrap();
            if g.info().max_storage_binding == 64 << 10 {
                assert!(b.dispatches() > 1, "75 KB of BF16 needs two 64 KiB bindings");
            }
            g.submit(b).unwrap();
            assert_same_bytes(&format!("{target} whole"), target, &read_bytes(g, &y), &want);
            // Row chunks of 5 (the loader's pattern): output offsets not aligned to anything but rows.
            let dst = g.empty(&[rows, cols], target).unwrap();
            for r0 in (0..rows).step_by(5) {
                let r1 = (r0 + 5).min(rows);
                let chunk = upload(g, &[r1 - r0, cols], DType::BF16, &bytes[r0 * cols * 2..r1 * cols * 2]);
                let mut b = g.batch();
                quantize_into(g, &mut b, &chunk, &dst, r0 * cols).unwrap();
                g.submit(b).unwrap();
            }
            assert_same_bytes(&format!("{target} chunked"), target, &read_bytes(g, &dst), &want);
        }
    }
}

#[test]
fn wrong_formats_and_shapes_are_typed_errors() {
    let g = gpu();
    let mut b = g.batch();
    let x = g.upload_f32(&[2, 64], &[1.0; 128]).unwrap();
    let q = g.empty(&[2, 64], DType::Q8_0).unwrap();
    assert!(
        matches!(quantize(g, &mut b, &q, DType::Q4_0), Err(Error::UnsupportedFormat { format, .. }) if format == "Q8_0")
    );
    for bad in [DType::F32, DType::BF16, DType::Q4_1, DType::Q6K] {
        assert!(matches!(quantize(g, &mut b, &x, bad), Err(Error::UnsupportedFormat { .. })), "{bad}");
    }
    let odd = g.upload_f32(&[2, 48], &[1.0; 96]).unwrap();
    assert!(matches!(quantize(g, &mut b, &odd, DType::Q8_0), Err(Error::ShapeMismatch { .. })));
    let chunk = g.upload_f32(&[32], &[1.0; 32]).unwrap();
    for offset in [16, 128, 1 << 40] {
        assert!(
            matches!(quantize_into(g, &mut b, &chunk, &q, offset), Err(Error::ShapeMismatch { .. })),
            "offset {offset}"
        );
    }
    // An odd F16 chunk may only end the destination (its last word's high half is padding).
    let (h, three) = (g.empty(&[8], DType::F16).unwrap(), g.upload_f32(&[3], &[1.0; 3]).unwrap());
    assert!(matches!(quantize_into(g, &mut b, &three, &h, 0), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(quantize_into(g, &mut b, &three, &h, 1), Err(Error::ShapeMismatch { .. })));
    quantize_into(g, &mut b, &three, &g.empty(&[7], DType::F16).unwrap(), 4).unwrap();
    assert_eq!(b.dispatches(), 1);
}
