//! shaders/norm.wgsl against reference::norm: LayerNorm (plain, affine, AdaLN-modulated),
//! RMSNorm (T5 rows, per-head QK norm on column slices of fused tensors, in place and not),
//! GroupNorm (+ SiLU). Tolerance: 1e-5 relative (common::assert_close, output-RMS floor).

mod common;
use common::{assert_close, gpu, run, Rng};
use iclora::kernels::norm::{self, Columns, Modulation, EPS_CLIP, EPS_FLUX};
use iclora::reference::norm as reference;
use iclora::Error;

const RTOL: f32 = 1e-5;

/// (rows, C): awkward widths (1, 7, 33, odd), CLIP (77 × 768), FLUX / T5 widths 3072 and 4096.
const LN_SHAPES: &[(usize, usize)] = &[(1, 1), (7, 7), (33, 33), (5, 257), (77, 768), (1, 3072), (3, 3072), (2, 4096)];

#[test]
fn layer_norm_matches_reference() {
    let mut rng = Rng::new(10);
    for &(rows, c) in LN_SHAPES {
        let x = rng.vec(rows * c, -3.0, 3.0);
        let (w, b) = (rng.vec(c, -2.0, 2.0), rng.vec(c, -1.0, 1.0));
        let got = run(|g, bt| norm::layer_norm(g, bt, &g.upload_f32(&[rows, c], &x)?, None, EPS_FLUX));
        assert_close(&format!("layer_norm [{rows}, {c}]"), &got, &reference::layer_norm(&x, c, None, EPS_FLUX), RTOL);
        let got = run(|g, bt| {
            let (wt, bb) = (g.upload_f32(&[c], &w)?, g.upload_f32(&[c], &b)?);
            norm::layer_norm(g, bt, &g.upload_f32(&[rows, c], &x)?, Some((&wt, &bb)), EPS_CLIP)
        });
        let expected = reference::layer_norm(&x, c, Some((&w, &b)), EPS_CLIP);
        assert_close(&format!("layer_norm affine [{rows}, {c}]"), &got, &expected, RTOL);
    }
}

/// Rows with a large common offset (mean ≫ std): a naive one-pass f32 variance loses everything here.
#[test]
fn layer_norm_is_robust_to_large_means() {
    let mut rng = Rng::new(11);
    for (c, mean) in [(3072, 1.0e3), (4096, -3.0e3), (3072, 1.0e4)] {
        let x: Vec<f32> = rng.vec(3 * c, -1.0, 1.0).iter().map(|v| v + mean).collect();
        let got = run(|g, bt| norm::layer_norm(g, bt, &g.upload_f32(&[3, c], &x)?, None, EPS_FLUX));
        assert_close(
            &format!("layer_norm mean {mean} [3, {c}]"),
            &got,
            &reference::layer_norm(&x, c, None, EPS_FLUX),
            RTOL,
        );
    }
}

#[test]
fn modulated_layer_norm_reads_shift_and_scale_at_offsets() {
    let mut rng = Rng::new(12);
    for &(rows, c) in &[(1, 7), (7, 33), (2, 3072)] {
        let x = rng.vec(rows * c, -3.0, 3.0);
        // A [6·C] modulation vector like img_mod.lin's: (shift1, scale1, gate1, shift2, scale2, gate2).
        let m = rng.vec(6 * c, -1.0, 1.0);
        // msa (0, C), mlp (3C, 4C), diffusers norm_out's swapped halves (scale 0, shift C).
        for (shift, scale) in [(0, c), (3 * c, 4 * c), (c, 0)] {
            let got = run(|g, bt| {
                let mt = g.upload_f32(&[6 * c], &m)?;
                norm::layer_norm_modulated(
                    g,
                    bt,
                    &g.upload_f32(&[rows, c], &x)?,
                    &Modulation { tensor: &mt, shift, scale },
                    EPS_FLUX,
                )
            });
            let expected = reference::layer_norm_modulated(&x, c, &m, shift, scale, EPS_FLUX);
            assert_close(&format!("adaLN [{rows}, {c}] shift {shift} scale {scale}"), &got, &expected, RTOL);
        }
    }
}

#[test]
fn rms_norm_matches_reference() {
    let mut rng = Rng::new(13);
    // (rows, C, D): groups of D along rows of C; T5 is D = C = 4096.
    for &(rows, c, d) in &[(1, 7, 7), (7, 21, 7), (33, 64, 64), (3, 384, 128), (5, 128, 128), (3, 4096, 4096)] {
        let x = rng.vec(rows * c, -3.0, 3.0);
        let w = rng.vec(d, -2.0, 2.0);
        let got =
            run(|g, bt| norm::rms_norm(g, bt, &g.upload_f32(&[rows, c], &x)?, &g.upload_f32(&[d], &w)?, EPS_FLUX));
        assert_close(&format!("rms_norm [{rows}, {c}] D {d}"), &got, &reference::rms_norm(&x, &w, EPS_FLUX), RTOL);
    }
}

/// FLUX QK norm on a real-width fused qkv [L, 9216] (and linear1's [L, 21504]), in place: q and k
/// per 128-wide head with their own weights; v (and the MLP part) must stay untouched.
#[test]
fn qk_norm_in_place_on_fused_tensors() {
    let mut rng = Rng::new(14);
    for &(rows, c) in &[(1, 9216), (3, 9216), (2, 21504)] {
        let x = rng.vec(rows * c, -4.0, 4.0);
        let (wq, wk) = (rng.vec(128, 0.5, 1.5), rng.vec(128, 0.5, 1.5));
        let (q, k) = (Columns { offset: 0, width: 3072 }, Columns { offset: 3072, width: 3072 });
        let got = run(|g, bt| {
            let t = g.upload_f32(&[rows, c], &x)?;
            norm::rms_norm_columns_inplace(g, bt, &t, q, &g.upload_f32(&[128], &wq)?, EPS_FLUX)?;
            norm::rms_norm_columns_inplace(g, bt, &t, k, &g.upload_f32(&[128], &wk)?, EPS_FLUX)?;
            Ok(t)
        });
        let nq = reference::rms_norm(&reference::columns(&x, c, 0, 3072), &wq, EPS_FLUX);
        let nk = reference::rms_norm(&reference::columns(&x, c, 3072, 3072), &wk, EPS_FLUX);
        let expected = reference::with_columns(&reference::with_columns(&x, c, 0, &nq), c, 3072, &nk);
        assert_close(&format!("qk norm in place [{rows}, {c}]"), &got, &expected, RTOL);
        assert_eq!(&got[6144..c], &x[6144..c], "columns past q|k must be untouched");
    }
}

#[test]
fn rms_norm_of_a_column_slice_into_a_new_tensor() {
    let mut rng = Rng::new(15);
    // (rows, C, offset, width, D), including an odd offset and a slice that ends at the row end.
    for &(rows, c, offset, width, d) in &[(7, 40, 5, 21, 7), (4, 9216, 3072, 3072, 128), (3, 200, 72, 128, 64)] {
        let x = rng.vec(rows * c, -3.0, 3.0);
        let w = rng.vec(d, -2.0, 2.0);
        let got = run(|g, bt| {
            let t = g.upload_f32(&[rows, c], &x)?;
            norm::rms_norm_columns(g, bt, &t, Columns { offset, width }, &g.upload_f32(&[d], &w)?, EPS_FLUX)
        });
        let expected = reference::rms_norm(&reference::columns(&x, c, offset, width), &w, EPS_FLUX);
        assert_close(&format!("rms_norm columns {offset}+{width} of [{rows}, {c}] D {d}"), &got, &expected, RTOL);
    }
}

#[test]
fn group_norm_matches_reference() {
    let mut rng = Rng::new(16);
    for shape in [&[128usize, 9, 7][..], &[64, 8, 8], &[1, 64, 8, 8], &[32, 1, 1]] {
        let (c, hw) = (shape[shape.len() - 3], shape[shape.len() - 2] * shape[shape.len() - 1]);
        // Channel means differ, as after a conv: each group mixes channels of different offsets.
        let x: Vec<f32> = (0..c * hw).map(|i| rng.uniform(-2.0, 2.0) + (i / hw) as f32 * 0.37).collect();
        let (w, b) = (rng.vec(c, -2.0, 2.0), rng.vec(c, -1.0, 1.0));
        for silu in [false, true] {
            let got = run(|g, bt| {
                let (wt, bb) = (g.upload_f32(&[c], &w)?, g.upload_f32(&[c], &b)?);
                norm::group_norm(g, bt, &g.upload_f32(shape, &x)?, 32, &wt, &bb, EPS_FLUX, silu)
            });
            let expected = reference::group_norm(&x, c, hw, 32, &w, &b, EPS_FLUX, silu);
            assert_close(&format!("group_norm {shape:?} silu {silu}"), &got, &expected, RTOL);
        }
    }
}

/// Storage bindings capped at 64 KiB: tensors over it are split into runs of whole groups bound at
/// unaligned offsets; statistics stay per whole group, so the reference is unchanged (1e-5).
#[test]
fn group_norm_split_over_small_bindings_matches_reference() {
    let opts = iclora::gpu::GpuOptions { max_storage_binding: Some(64 << 10), ..Default::default() };
    let g = iclora::gpu::Gpu::new_blocking(&opts).expect("a GPU adapter");
    let mut rng = Rng::new(17);
    // (C, H, W, groups): 76 KB with odd planes; 290 KB with 8 groups of 36 KB; 32 channels of 23×29.
    for (c, h, w, groups) in [(64usize, 17usize, 17usize, 32usize), (96, 29, 26, 8), (32, 23, 29, 32)] {
        let hw = h * w;
        let x: Vec<f32> = (0..c * hw).map(|i| rng.uniform(-2.0, 2.0) + (i / hw) as f32 * 0.37).collect();
        let (wv, bv) = (rng.vec(c, -2.0, 2.0), rng.vec(c, -1.0, 1.0));
        for silu in [false, true] {
            let mut bt = g.batch();
            let y = (|| {
                let (wt, bb) = (g.upload_f32(&[c], &wv)?, g.upload_f32(&[c], &bv)?);
                norm::group_norm(&g, &mut bt, &g.upload_f32(&[c, h, w], &x)?, groups, &wt, &bb, EPS_FLUX, silu)
            })()
            .expect("group_norm");
            assert!(bt.dispatches() > 1, "a tensor over the binding limit is split");
            g.submit(bt).expect("submit");
            let got = g.read_f32_blocking(&y).expect("readback");
            let expected = reference::group_norm(&x, c, hw, groups, &wv, &bv, EPS_FLUX, silu);
            assert_close(&format!("split group_norm [{c}, {h}, {w}] / {groups} silu {silu}"), &got, &expected, RTOL);
        }
    }
}

#[test]
fn bad_shapes_offsets_and_formats_are_typed_errors() {
    let g = gpu();
    let mut b = g.batch();
    let up = |shape: &[usize]| g.upload_f32(shape, &vec![0.5; shape.iter().product()]).unwrap();
    let is_shape = |r: Result<_, Error>| matches!(r, Err(Error::ShapeMismatch { .. }));
    let x = up(&[4, 6]);
    let (w6, w5) = (up(&[6]), up(&[5]));
    // LayerNorm: affine of the wrong length; modulation runs past the end; a half input.
    assert!(is_shape(norm::layer_norm(g, &mut b, &x, Some((&w6, &w5)), EPS_FLUX).map(|_| ())));
    let m = up(&[12]);
    for (shift, scale) in [(7, 0), (0, 7), (12, 6)] {
        let r = norm::layer_norm_modulated(g, &mut b, &x, &Modulation { tensor: &m, shift, scale }, EPS_FLUX);
        assert!(is_shape(r.map(|_| ())), "shift {shift} scale {scale}");
    }
    assert!(norm::layer_norm_modulated(g, &mut b, &x, &Modulation { tensor: &m, shift: 6, scale: 0 }, EPS_FLUX).is_ok());
    let half = g.upload_half(&[4, 6], &[0.0; 24], iclora::gpu::DType::F16).unwrap();
    assert!(matches!(norm::layer_norm(g, &mut b, &half, None, EPS_FLUX), Err(Error::UnsupportedFormat { .. })));
    assert!(matches!(
        norm::rms_norm(g, &mut b, &x, &half.reshape(&[24]).unwrap(), EPS_FLUX),
        Err(Error::UnsupportedFormat { .. })
    ));
    // RMSNorm: C not a multiple of D; slices outside the row or not a multiple of D; empty slice.
    assert!(is_shape(norm::rms_norm(g, &mut b, &x, &up(&[4]), EPS_FLUX).map(|_| ())));
    let w3 = up(&[3]);
    for (offset, width) in [(4, 3), (0, 4), (0, 0), (6, 3)] {
        let cols = Columns { offset, width };
        assert!(is_shape(norm::rms_norm_columns(g, &mut b, &x, cols, &w3, EPS_FLUX).map(|_| ())), "{cols:?}");
        assert!(is_shape(norm::rms_norm_columns_inplace(g, &mut b, &x, cols, &w3, EPS_FLUX)), "{cols:?}");
    }
    assert!(norm::rms_norm_columns_inplace(g, &mut b, &x, Columns { offset: 3, width: 3 }, &w3, EPS_FLUX).is_ok());
    // GroupNorm: groups not dividing C, zero groups, wrong rank, batch > 1, affine of the wrong length.
    let gx = up(&[6, 2, 2]);
    assert!(is_shape(norm::group_norm(g, &mut b, &gx, 4, &w6, &w6, EPS_FLUX, true).map(|_| ())));
    assert!(is_shape(norm::group_norm(g, &mut b, &gx, 0, &w6, &w6, EPS_FLUX, true).map(|_| ())));
    assert!(is_shape(norm::group_norm(g, &mut b, &x, 2, &w6, &w6, EPS_FLUX, true).map(|_| ())));
    assert!(is_shape(norm::group_norm(g, &mut b, &up(&[2, 6, 2, 2]), 2, &w6, &w6, EPS_FLUX, true).map(|_| ())));
    assert!(is_shape(norm::group_norm(g, &mut b, &gx, 2, &w6, &w5, EPS_FLUX, true).map(|_| ())));
    assert!(norm::group_norm(g, &mut b, &gx, 3, &w6, &w6, EPS_FLUX, true).is_ok());
}
