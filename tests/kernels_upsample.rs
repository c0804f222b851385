//! shaders/upsample.wgsl against reference::upsample (exact: a copy, so tolerance 0).

mod common;
use common::{assert_close, gpu, run, Rng};
use iclora::gpu::DType;
use iclora::kernels::upsample as ku;
use iclora::reference::upsample as reference;
use iclora::Error;

// Awkward (1, odd, single row/column), a workgroup-crossing size, and a real VAE width with few pixels.
const SHAPES: &[(usize, usize, usize)] =
    &[(1, 1, 1), (3, 1, 7), (2, 7, 1), (5, 9, 13), (16, 17, 33), (512, 4, 4), (256, 3, 5)];

#[test]
fn nearest2x_matches_reference() {
    let mut rng = Rng::new(20);
    for &(c, h, w) in SHAPES {
        let x = rng.vec(c * h * w, -4.0, 4.0);
        let got = run(|g, b| {
            let y = ku::nearest2x(g, b, &g.upload_f32(&[c, h, w], &x)?)?;
            assert_eq!(y.shape(), [c, 2 * h, 2 * w]);
            Ok(y)
        });
        assert_close(&format!("nearest2x [{c}, {h}, {w}]"), &got, &reference::nearest2x(&x, c, h, w), 0.0);
    }
}

#[test]
fn reference_repeats_each_pixel_in_a_2x2_block() {
    // [1, 2, 2] → each input value fills its 2×2 block (guards the reference itself).
    let up = reference::nearest2x(&[1.0, 2.0, 3.0, 4.0], 1, 2, 2);
    let want = [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0];
    assert_eq!(up, want);
}

#[test]
fn rank4_batch1_input_keeps_its_rank() {
    let x: Vec<f32> = (0..2 * 3 * 5).map(|i| i as f32).collect();
    let got = run(|g, b| {
        let y = ku::nearest2x(g, b, &g.upload_f32(&[1, 2, 3, 5], &x)?)?;
        assert_eq!(y.shape(), [1, 2, 6, 10]);
        Ok(y)
    });
    assert_close("nearest2x [1, 2, 3, 5]", &got, &reference::nearest2x(&x, 2, 3, 5), 0.0);
}

#[test]
fn bad_shapes_and_formats_are_typed_errors() {
    let g = gpu();
    let mut b = g.batch();
    let flat = g.upload_f32(&[12], &[0.0; 12]).unwrap();
    assert!(matches!(ku::nearest2x(g, &mut b, &flat), Err(Error::ShapeMismatch { .. })));
    let batch2 = g.upload_f32(&[2, 1, 2, 3], &[0.0; 12]).unwrap();
    assert!(matches!(ku::nearest2x(g, &mut b, &batch2), Err(Error::ShapeMismatch { .. })));
    let half = g.upload_half(&[1, 2, 2], &[0.0; 4], DType::F16).unwrap();
    assert!(matches!(ku::nearest2x(g, &mut b, &half), Err(Error::UnsupportedFormat { .. })));
}
