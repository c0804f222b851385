//! shaders/elementwise.wgsl + activations.wgsl against reference::elementwise.

mod common;
use common::{assert_close, gpu, run, Rng};
use iclora::kernels::elementwise::{self as ew, Activation};
use iclora::reference::elementwise as reference;

// Shapes: ordinary, awkward (1, 7, odd, not a multiple of the workgroup), and FLUX-sized rows.
const SHAPES: &[&[usize]] = &[&[1], &[7], &[3, 5], &[33, 257], &[4, 3072], &[2, 12288]];
const RTOL: f32 = 1e-5;

#[test]
fn activations_match_reference() {
    let mut rng = Rng::new(1);
    for shape in SHAPES {
        let n: usize = shape.iter().product();
        let x = rng.vec(n, -8.0, 8.0);
        for act in Activation::ALL {
            let got = run(|g, b| {
                let t = g.upload_f32(shape, &x)?;
                ew::activation(g, b, &t, act)
            });
            assert_close(&format!("{act:?} {shape:?}"), &got, &reference::activation(&x, act), RTOL);
        }
    }
}

#[test]
fn add_mul_sub_broadcast_match_reference() {
    let mut rng = Rng::new(2);
    for shape in SHAPES {
        let n: usize = shape.iter().product();
        let inner = *shape.last().unwrap_or(&1);
        let a = rng.vec(n, -2.0, 2.0);
        for b_len in [n, inner] {
            let bv = rng.vec(b_len, -2.0, 2.0);
            let got = run(|g, b| ew::add(g, b, &g.upload_f32(shape, &a)?, &g.upload_f32(&[b_len], &bv)?));
            assert_close(&format!("add {shape:?} b {b_len}"), &got, &reference::add(&a, &bv), RTOL);
            let got = run(|g, b| ew::mul(g, b, &g.upload_f32(shape, &a)?, &g.upload_f32(&[b_len], &bv)?));
            assert_close(&format!("mul {shape:?} b {b_len}"), &got, &reference::mul(&a, &bv), RTOL);
            let got = run(|g, b| ew::sub(g, b, &g.upload_f32(shape, &a)?, &g.upload_f32(&[b_len], &bv)?));
            assert_close(&format!("sub {shape:?} b {b_len}"), &got, &reference::sub(&a, &bv), RTOL);
        }
    }
}

#[test]
fn gated_residual_matches_reference() {
    let mut rng = Rng::new(3);
    for shape in SHAPES {
        let n: usize = shape.iter().product();
        let inner = *shape.last().unwrap_or(&1);
        let (a, y, gate) = (rng.vec(n, -2.0, 2.0), rng.vec(n, -2.0, 2.0), rng.vec(inner, -1.0, 1.0));
        let got = run(|g, b| {
            ew::gated_add(g, b, &g.upload_f32(shape, &a)?, &g.upload_f32(&[inner], &gate)?, &g.upload_f32(shape, &y)?)
        });
        assert_close(&format!("gated_add {shape:?}"), &got, &reference::gated_add(&a, &gate, &y), RTOL);
    }
}

#[test]
fn bad_shapes_and_formats_are_typed_errors() {
    let g = gpu();
    let mut b = g.batch();
    let a = g.upload_f32(&[4, 6], &[0.0; 24]).unwrap();
    let bad = g.upload_f32(&[5], &[0.0; 5]).unwrap();
    assert!(matches!(ew::add(g, &mut b, &a, &bad), Err(iclora::Error::ShapeMismatch { .. })));
    let half = g.upload_half(&[4, 6], &[0.0; 24], iclora::gpu::DType::F16).unwrap();
    assert!(matches!(ew::activation(g, &mut b, &half, Activation::Silu), Err(iclora::Error::UnsupportedFormat { .. })));
    assert!(matches!(g.upload_f32(&[4, 6], &[0.0; 23]), Err(iclora::Error::ShapeMismatch { .. })));
}

/// Masked blend (RePaint re-imposition) against the reference, f32 to 1e-5 relative, on the
/// shapes above seen as `[rows, cols]` (cols = innermost) and a FLUX canvas of 64-feature tokens;
/// thresholds mix 0 (always), σ itself (boundary: imposed), values just above σ and never.
#[test]
fn masked_blend_matches_reference() {
    let mut rng = Rng::new(4);
    let mut shapes: Vec<&[usize]> = SHAPES.to_vec();
    shapes.push(&[4096 + 7, 64]);
    for shape in shapes {
        let n: usize = shape.iter().product();
        let cols = *shape.last().unwrap_or(&1);
        let rows = n / cols;
        for sigma in [0.0f32, 0.37, 1.0] {
            let (x, target, noise) = (rng.vec(n, -3.0, 3.0), rng.vec(n, -3.0, 3.0), rng.vec(n, -3.0, 3.0));
            let thresholds: Vec<f32> = (0..rows)
                .map(|_| match rng.below(4) {
                    0 => 0.0,
                    1 => sigma,
                    2 => sigma + 1e-3,
                    _ => ew::NEVER_IMPOSED,
                })
                .collect();
            let got = run(|g, b| {
                let t = |v: &[f32], s: &[usize]| g.upload_f32(s, v);
                ew::masked_blend(
                    g,
                    b,
                    &t(&x, shape)?,
                    &t(&thresholds, &[rows])?,
                    &t(&target, shape)?,
                    &t(&noise, shape)?,
                    &t(&[sigma], &[1])?,
                )
            });
            let expected = reference::masked_blend(&x, &thresholds, &target, &noise, sigma, cols);
            assert_close(&format!("masked_blend {shape:?} sigma {sigma}"), &got, &expected, RTOL);
            // Rows kept or imposed at sigma 0 are exact copies, not merely close.
            for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
                let t = thresholds[i / cols];
                if sigma < t || sigma == 0.0 {
                    assert_eq!(
                        g.to_bits(),
                        e.to_bits(),
                        "masked_blend {shape:?} sigma {sigma}: index {i} must be exact"
                    );
                }
            }
        }
    }
}

#[test]
fn masked_blend_bad_shapes_are_typed_errors() {
    let g = gpu();
    let mut b = g.batch();
    let x = g.upload_f32(&[4, 6], &[0.0; 24]).unwrap();
    let rows = g.upload_f32(&[4], &[0.0; 4]).unwrap();
    let sigma = g.upload_f32(&[1], &[0.5]).unwrap();
    let short = g.upload_f32(&[3, 6], &[0.0; 18]).unwrap();
    let two = g.upload_f32(&[2], &[0.0; 2]).unwrap();
    let shape = |r: iclora::Result<iclora::gpu::Tensor>| {
        matches!(r, Err(iclora::Error::ShapeMismatch { op: "masked_blend", .. }))
    };
    assert!(shape(ew::masked_blend(g, &mut b, &x, &rows, &short, &x, &sigma)), "target shape");
    assert!(shape(ew::masked_blend(g, &mut b, &x, &rows, &x, &short, &sigma)), "noise shape");
    assert!(shape(ew::masked_blend(g, &mut b, &x, &two, &x, &x, &sigma)), "thresholds per row");
    assert!(shape(ew::masked_blend(g, &mut b, &x, &rows, &x, &x, &two)), "one sigma");
    let half = g.upload_half(&[4, 6], &[0.0; 24], iclora::gpu::DType::F16).unwrap();
    let r = ew::masked_blend(g, &mut b, &half, &rows, &x, &x, &sigma);
    assert!(matches!(r, Err(iclora::Error::UnsupportedFormat { .. })), "F16 x");
}
