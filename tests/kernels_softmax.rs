//! shaders/softmax.wgsl against reference::softmax (f64).

mod common;
use common::{assert_close, gpu, run, Rng};
use iclora::kernels::softmax::softmax;
use iclora::reference::softmax as reference;
use iclora::Error;

// exp in f32 over row sums of up to 12288 terms stays within 1e-5 of f64 (relative, RMS floor).
const RTOL: f32 = 1e-5;

fn check(shape: &[usize], x: &[f32], what: &str) {
    let n = *shape.last().unwrap_or(&1);
    let got = run(|g, b| softmax(g, b, &g.upload_f32(shape, x)?));
    assert_close(&format!("softmax {what} {shape:?}"), &got, &reference::softmax(x, n), RTOL);
}

#[test]
fn rows_of_awkward_and_flux_lengths_match_reference() {
    let mut rng = Rng::new(21);
    // Row lengths 1, 7, odd, one past the workgroup, CLIP 77, FLUX 4608 tokens, IC-LoRA 12288.
    let shapes: &[&[usize]] =
        &[&[1], &[7], &[5, 1], &[3, 7], &[4, 257], &[2, 3, 77], &[24, 4608], &[2, 12288], &[300, 33]];
    for shape in shapes {
        let n: usize = shape.iter().product();
        check(shape, &rng.vec(n, -8.0, 8.0), "uniform");
    }
}

#[test]
fn large_offsets_and_masked_entries_are_stable() {
    let mut rng = Rng::new(22);
    // A naive exp(x)/Σexp(x) overflows at x ~ 89; the max subtraction must make this harmless.
    let x: Vec<f32> =
        rng.vec(3 * 500, -5.0, 5.0).iter().enumerate().map(|(i, v)| v + [1000.0, -1000.0, 80.0][i / 500]).collect();
    check(&[3, 500], &x, "offset ±1000");
    // Masked scores as finfo.min / -inf (CLIP's causal mask style) get probability 0.
    let mut x = rng.vec(4 * 77, -3.0, 3.0);
    for (i, v) in x.iter_mut().enumerate() {
        if i % 77 > 40 {
            *v = if i % 2 == 0 { f32::MIN } else { f32::NEG_INFINITY };
        }
    }
    check(&[4, 77], &x, "masked");
}

#[test]
fn many_rows_use_a_2d_grid() {
    // More rows than one dispatch dimension allows (65535 on WebGPU).
    let rows = 70_000;
    let mut rng = Rng::new(23);
    check(&[rows, 3], &rng.vec(rows * 3, -4.0, 4.0), "many rows");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let g = gpu();
    let mut b = g.batch();
    let half = g.upload_half(&[2, 8], &[0.0; 16], iclora::gpu::DType::F16).unwrap();
    assert!(matches!(softmax(g, &mut b, &half), Err(Error::UnsupportedFormat { .. })));
    let scalar = g.upload_f32(&[], &[1.0]).unwrap();
    assert!(matches!(softmax(g, &mut b, &scalar), Err(Error::ShapeMismatch { .. })));
}
