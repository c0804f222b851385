//! shaders/copy.wgsl against reference::copy. Copies are exact: tolerance 0.

mod common;
use common::{assert_close, gpu, run, Rng};
use iclora::gpu::DType;
use iclora::kernels::copy::{self as kc, Block};
use iclora::kernels::elementwise::Activation;
use iclora::reference::copy as reference;
use iclora::Error;

// FLUX feature widths (hidden 3072, qkv 9216, MLP 12288, single-block concat 15360) with few tokens,
// and awkward sizes.
const WIDTHS: &[usize] = &[1, 7, 33, 3072, 9216, 12288, 15360];
const ROWS: &[usize] = &[1, 3, 7];

#[test]
fn slice_cols_and_rows_match_reference() {
    let mut rng = Rng::new(40);
    for &cols in WIDTHS {
        for &rows in ROWS {
            let t = rng.vec(rows * cols, -1.0, 1.0);
            // A leading, a middle (odd start, odd width) and a trailing slice.
            for (start, width) in
                [(0, cols.div_ceil(3)), (cols / 3, (cols / 2).max(1) | 1), (cols - cols.div_ceil(5), cols.div_ceil(5))]
            {
                let width = width.min(cols - start);
                let got = run(|g, b| {
                    let y = kc::slice_cols(g, b, &g.upload_f32(&[rows, cols], &t)?, start, width)?;
                    assert_eq!(y.shape(), [rows, width]);
                    Ok(y)
                });
                let what = format!("slice_cols [{rows}, {cols}] {start}+{width}");
                assert_close(&what, &got, &reference::slice_cols(&t, cols, start, width), 0.0);
            }
            for (start, count) in [(0, 1), (rows / 2, rows - rows / 2), (rows - 1, 1)] {
                let got = run(|g, b| kc::slice_rows(g, b, &g.upload_f32(&[rows, cols], &t)?, start, count));
                let what = format!("slice_rows [{rows}, {cols}] {start}+{count}");
                assert_close(&what, &got, &reference::slice_rows(&t, cols, start, count), 0.0);
            }
        }
    }
}

#[test]
fn concat_rows_and_cols_match_reference() {
    let mut rng = Rng::new(41);
    // Joint sequence: text tokens then image tokens, at the hidden width and awkward widths.
    for &cols in WIDTHS {
        let (ra, rb) = (1 + rng.below(7), 1 + rng.below(7));
        let (a, bv) = (rng.vec(ra * cols, -1.0, 1.0), rng.vec(rb * cols, -1.0, 1.0));
        let got = run(|g, b| {
            let y = kc::concat_rows(g, b, &g.upload_f32(&[ra, cols], &a)?, &g.upload_f32(&[rb, cols], &bv)?)?;
            assert_eq!(y.shape(), [ra + rb, cols]);
            Ok(y)
        });
        assert_close(&format!("concat_rows [{ra}|{rb}, {cols}]"), &got, &reference::concat_rows(&a, &bv), 0.0);
    }
    // Single block: attention output (3072) then MLP activation (12288) → 15360; plus awkward pairs.
    for (ca, cb) in [(3072, 12288), (1, 1), (7, 33), (9216, 1), (5, 15360)] {
        for &rows in ROWS {
            let (a, bv) = (rng.vec(rows * ca, -1.0, 1.0), rng.vec(rows * cb, -1.0, 1.0));
            let got = run(|g, b| {
                let y = kc::concat_cols(g, b, &g.upload_f32(&[rows, ca], &a)?, &g.upload_f32(&[rows, cb], &bv)?)?;
                assert_eq!(y.shape(), [rows, ca + cb]);
                Ok(y)
            });
            let what = format!("concat_cols [{rows}, {ca}|{cb}]");
            assert_close(&what, &got, &reference::concat_cols(&a, ca, &bv, cb), 0.0);
        }
    }
}

#[test]
fn copy_into_writes_only_its_block() {
    let mut rng = Rng::new(42);
    for (dst_shape, src_shape, at, block) in [
        ((7, 33), (5, 9), (2, 11), Block { row0: 1, col0: 3, rows: 3, cols: 5 }),
        ((3, 15360), (4, 3072), (1, 3072), Block { row0: 2, col0: 0, rows: 2, cols: 3072 }),
        ((1, 7), (1, 1), (0, 6), Block { row0: 0, col0: 0, rows: 1, cols: 1 }),
        ((9, 13), (9, 13), (0, 0), Block { row0: 0, col0: 0, rows: 9, cols: 13 }),
    ] {
        let d0 = rng.vec(dst_shape.0 * dst_shape.1, -1.0, 1.0);
        let s = rng.vec(src_shape.0 * src_shape.1, -1.0, 1.0);
        let mut expected = d0.clone();
        reference::copy_into(
            &mut expected,
            dst_shape.1,
            at,
            &s,
            src_shape.1,
            (block.row0, block.col0, block.rows, block.cols),
        );
        let got = run(|g, b| {
            let dst = g.upload_f32(&[dst_shape.0, dst_shape.1], &d0)?;
            kc::copy_into(g, b, &dst, at, &g.upload_f32(&[src_shape.0, src_shape.1], &s)?, block)?;
            Ok(dst)
        });
        assert_close(&format!("copy_into {dst_shape:?} at {at:?} from {src_shape:?} {block:?}"), &got, &expected, 0.0);
    }
}

#[test]
fn u32_tensors_are_copied_bit_exactly() {
    // Token ids / packed data: copied as bits, so NaN patterns and large integers survive.
    let mut rng = Rng::new(43);
    let (a, bv): (Vec<u32>, Vec<u32>) =
        ((0..3 * 5).map(|_| rng.next_u64() as u32).collect(), (0..2 * 5).map(|_| rng.next_u64() as u32).collect());
    let g = gpu();
    let mut b = g.batch();
    let y =
        kc::concat_rows(g, &mut b, &g.upload_u32(&[3, 5], &a).unwrap(), &g.upload_u32(&[2, 5], &bv).unwrap()).unwrap();
    g.submit(b).unwrap();
    let bytes = pollster::block_on(g.read_bytes(&y)).unwrap();
    let got: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
    assert_eq!(got, [a, bv].concat());
}

#[test]
fn tensors_over_the_binding_limit_are_copied_in_chunks() {
    // The single block's concat at a few thousand tokens exceeds a 128 MiB binding: [rows, 15360] f32.
    let g = gpu();
    let limit = g.info().max_storage_binding as usize;
    let rows = limit / (15360 * 4) + 3;
    if rows * 15360 * 4 > g.info().max_buffer_size as usize || rows > 20_000 {
        eprintln!("skipped: binding limit {limit} too large to exceed cheaply");
        return;
    }
    let mut rng = Rng::new(44);
    let (a, bv) = (rng.vec(rows * 3072, -1.0, 1.0), rng.vec(rows * 12288, -1.0, 1.0));
    let got = run(|g, b| kc::concat_cols(g, b, &g.upload_f32(&[rows, 3072], &a)?, &g.upload_f32(&[rows, 12288], &bv)?));
    assert_close(
        &format!("concat_cols [{rows}, 3072|12288] (> binding limit)"),
        &got,
        &reference::concat_cols(&a, 3072, &bv, 12288),
        0.0,
    );
    let got = run(|g, b| kc::slice_cols(g, b, &g.upload_f32(&[rows, 15360], &got)?, 3071, 9217));
    assert_close(
        "slice_cols of it",
        &got,
        &reference::slice_cols(&reference::concat_cols(&a, 3072, &bv, 12288), 15360, 3071, 9217),
        0.0,
    );
}

#[test]
fn bad_shapes_and_formats_are_typed_errors() {
    let g = gpu();
    let mut b = g.batch();
    let t = g.upload_f32(&[4, 6], &[0.0; 24]).unwrap();
    let shape_err = |r: iclora::Result<iclora::gpu::Tensor>| matches!(r, Err(Error::ShapeMismatch { .. }));
    let format_err = |r: iclora::Result<iclora::gpu::Tensor>| matches!(r, Err(Error::UnsupportedFormat { .. }));
    assert!(shape_err(kc::slice_cols(g, &mut b, &t, 4, 3)));
    assert!(shape_err(kc::slice_cols(g, &mut b, &t, 0, 0)));
    assert!(shape_err(kc::slice_rows(g, &mut b, &t, 3, 2)));
    let other_cols = g.upload_f32(&[2, 5], &[0.0; 10]).unwrap();
    assert!(shape_err(kc::concat_rows(g, &mut b, &t, &other_cols)));
    assert!(shape_err(kc::concat_cols(g, &mut b, &t, &other_cols)));
    let rank3 = g.upload_f32(&[1, 4, 6], &[0.0; 24]).unwrap();
    assert!(shape_err(kc::slice_rows(g, &mut b, &rank3, 0, 1)));
    let half = g.upload_half(&[4, 6], &[0.0; 24], DType::F16).unwrap();
    assert!(format_err(kc::slice_cols(g, &mut b, &half, 0, 2)));
    let ints = g.upload_u32(&[4, 6], &[0; 24]).unwrap();
    assert!(format_err(kc::concat_rows(g, &mut b, &t, &ints)));
    // Blocks outside either matrix, and a copy onto its own buffer.
    let dst = g.upload_f32(&[4, 6], &[0.0; 24]).unwrap();
    let blk = Block { row0: 0, col0: 0, rows: 2, cols: 6 };
    assert!(kc::copy_into(g, &mut b, &dst, (2, 0), &t, blk).is_ok());
    assert!(matches!(kc::copy_into(g, &mut b, &dst, (3, 0), &t, blk), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(kc::copy_into(g, &mut b, &dst, (0, 1), &t, blk), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(
        kc::copy_into(g, &mut b, &dst, (0, 0), &t, Block { row0: 3, ..blk }),
        Err(Error::ShapeMismatch { .. })
    ));
    let view = dst.reshape(&[6, 4]).unwrap();
    assert!(matches!(
        kc::copy_into(g, &mut b, &dst, (0, 0), &view, Block { cols: 4, ..blk }),
        Err(Error::InvalidArgument(_))
    ));
}

/// Transpose: awkward sizes, the VAE mid-block's real width (512 channels, few pixels) and the tiny
/// VAE's; exact (tolerance 0). Wrong rank and format are typed errors.
#[test]
fn transpose_matches_reference() {
    let mut rng = Rng::new(44);
    for (rows, cols) in [(1, 1), (1, 7), (7, 1), (3, 33), (17, 31), (512, 20), (30, 64), (257, 129)] {
        let t = rng.vec(rows * cols, -1.0, 1.0);
        let got = run(|g, b| {
            let y = kc::transpose(g, b, &g.upload_f32(&[rows, cols], &t)?)?;
            assert_eq!(y.shape(), [cols, rows]);
            Ok(y)
        });
        assert_close(&format!("transpose [{rows}, {cols}]"), &got, &reference::transpose(&t, rows, cols), 0.0);
    }
    let g = gpu();
    let mut b = g.batch();
    let r3 = kc::transpose(g, &mut b, &g.upload_f32(&[2, 2, 2], &[0.0; 8]).unwrap());
    assert!(matches!(r3, Err(Error::ShapeMismatch { .. })), "{r3:?}");
    let h = kc::transpose(g, &mut b, &g.upload_half(&[2, 2], &[0.0; 4], DType::F16).unwrap());
    assert!(matches!(h, Err(Error::UnsupportedFormat { .. })), "{h:?}");
}

/// `copy_into_with` an activation: the single block's `concat(attn, gelu(mlp))` in one pass (FLUX
/// widths with few tokens, and awkward sizes), against the reference copy with the same activation
/// (the activations' tolerance, as tests/kernels_elementwise.rs); only F32 takes an activation.
#[test]
fn copy_with_an_activation_matches_reference() {
    let mut rng = Rng::new(43);
    for (dst_shape, src_shape, at, block) in [
        ((3, 15360), (3, 21504), (0, 3072), Block { row0: 0, col0: 9216, rows: 3, cols: 12288 }),
        ((5, 20), (7, 33), (1, 4), Block { row0: 2, col0: 5, rows: 4, cols: 13 }),
        ((1, 1), (1, 1), (0, 0), Block { row0: 0, col0: 0, rows: 1, cols: 1 }),
    ] {
        let d0 = rng.vec(dst_shape.0 * dst_shape.1, -1.0, 1.0);
        let s = rng.vec(src_shape.0 * src_shape.1, -8.0, 8.0);
        for act in [Activation::GeluTanh, Activation::Silu, Activation::None] {
            let mut expected = d0.clone();
            let b = (block.row0, block.col0, block.rows, block.cols);
            reference::copy_into_with(&mut expected, dst_shape.1, at, &s, src_shape.1, b, act);
            let got = run(|g, b| {
                let dst = g.upload_f32(&[dst_shape.0, dst_shape.1], &d0)?;
                kc::copy_into_with(g, b, &dst, at, &g.upload_f32(&[src_shape.0, src_shape.1], &s)?, block, act)?;
                Ok(dst)
            });
            let tol = if act == Activation::None { 0.0 } else { 1e-5 };
            assert_close(
                &format!("copy_into_with {act:?} {dst_shape:?} from {src_shape:?} {block:?}"),
                &got,
                &expected,
                tol,
            );
        }
    }
    let g = gpu();
    let u = g.upload_u32(&[2, 2], &[1, 2, 3, 4]).unwrap();
    let d = g.empty(&[2, 2], DType::U32).unwrap();
    let mut b = g.batch();
    let r = kc::copy_into_with(g, &mut b, &d, (0, 0), &u, Block::all(&u).unwrap(), Activation::GeluTanh);
    assert!(matches!(r, Err(Error::UnsupportedFormat { .. })), "{r:?}");
}
