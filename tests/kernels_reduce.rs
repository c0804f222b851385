//! shaders/reduce.wgsl against reference::reduce: the step cache's relative L1 distance.
//! Tolerance: f32 partial sums against an f64 reference, 1e-5 relative.

mod common;
use common::{gpu, Rng};
use iclora::kernels::reduce::{abs_diff_sums, relative_l1};
use iclora::reference::reduce as reference;

// Ordinary, awkward (1, 7, not a multiple of the workgroup) and FLUX shapes: image tokens of a
// small canvas at hidden 3072, and more elements than one pass of the workgroups covers.
const SHAPES: &[&[usize]] = &[&[1], &[7], &[3, 5], &[33, 257], &[4, 3072], &[96, 3072], &[1000, 777]];
const RTOL: f64 = 1e-5;

fn gpu_sums(a: &[f32], b: &[f32], shape: &[usize]) -> Vec<f32> {
    let g = gpu();
    let mut batch = g.batch();
    let sums =
        abs_diff_sums(g, &mut batch, &g.upload_f32(shape, a).unwrap(), &g.upload_f32(shape, b).unwrap()).unwrap();
    g.submit(batch).unwrap();
    g.read_f32_blocking(&sums).unwrap()
}

#[test]
fn relative_l1_matches_reference() {
    let mut rng = Rng::new(70);
    for shape in SHAPES {
        let n: usize = shape.iter().product();
        let b = rng.vec(n, -3.0, 3.0);
        // Near (what a cache hit looks like) and far.
        for scale in [0.01f32, 1.0] {
            let a: Vec<f32> = b.iter().map(|&v| v + scale * rng.uniform(-1.0, 1.0)).collect();
            let partials = gpu_sums(&a, &b, shape);
            let (d, s) = reference::abs_diff_sums(&a, &b);
            let (gd, gs) =
                partials.chunks_exact(2).fold((0.0f64, 0.0f64), |(x, y), p| (x + p[0] as f64, y + p[1] as f64));
            for (what, got, want) in [("Σ|a−b|", gd, d), ("Σ|b|", gs, s)] {
                assert!(
                    (got - want).abs() <= RTOL * want.abs().max(1e-30),
                    "{shape:?} scale {scale}: {what} got {got}, expected {want}"
                );
            }
            let (got, want) = (relative_l1(&partials), reference::relative_l1(&a, &b));
            assert!(
                (got - want).abs() <= RTOL * want,
                "{shape:?} scale {scale}: relative L1 got {got}, expected {want}"
            );
            eprintln!("{shape:?} scale {scale}: relative L1 {got:.6} ok");
        }
    }
}

#[test]
fn identical_and_zero_tensors() {
    let mut rng = Rng::new(71);
    let a = rng.vec(4 * 3072, -1.0, 1.0);
    assert_eq!(relative_l1(&gpu_sums(&a, &a, &[4, 3072])), 0.0);
    let z = vec![0.0f32; 7];
    assert_eq!(relative_l1(&gpu_sums(&z, &z, &[7])), 0.0);
    assert!(relative_l1(&gpu_sums(&[1.0; 7], &z, &[7])).is_infinite());
}

#[test]
fn mismatched_sizes_are_an_error() {
    let g = gpu();
    let mut b = g.batch();
    let e = abs_diff_sums(g, &mut b, &g.upload_f32(&[7], &[0.0; 7]).unwrap(), &g.upload_f32(&[6], &[0.0; 6]).unwrap());
    assert!(matches!(e, Err(iclora::Error::ShapeMismatch { .. })), "{e:?}");
}
