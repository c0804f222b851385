//! shaders/conv2d.wgsl against reference::conv2d (the VAE convs of BFL
//! src/flux/modules/autoencoder.py @ 802fb47). Tolerance: 1e-5 relative (assert_close: to max(|expected|,
//! rms)) for F32 weights; F16 weights are
//! compared with the reference run on the same f16-rounded weights, so the same tolerance holds.

mod common;
use common::{assert_close, gpu, Rng};
use half::f16;
use iclora::gpu::DType;
use iclora::gpu::{Batch, Gpu, GpuOptions, Tensor};
use iclora::kernels::conv2d::{self as kc, Conv2d, Padding};
use iclora::reference::conv2d as reference;
use iclora::Error;

const RTOL: f32 = 1e-5;

struct Case {
    chw: (usize, usize, usize),
    out: usize,
    k: (usize, usize),
    conv: Conv2d,
    residual: bool,
}

const fn case(chw: (usize, usize, usize), out: usize, k: usize, conv: Conv2d, residual: bool) -> Case {
    Case { chw, out, k: (k, k), conv, residual }
}

const CASES: &[Case] = &[
    case((3, 16, 16), 8, 3, Conv2d::same(1), false), // conv_in-like: 3 input channels
    case((16, 9, 7), 32, 3, Conv2d::same(1), false), // odd sizes, pixels not a multiple of the tile
    case((24, 5, 6), 16, 1, Conv2d::same(0), false), // 1×1 shortcut conv
    case((24, 5, 6), 16, 1, Conv2d::same(0), true),  // 1×1 shortcut fused with the residual add
    case((8, 9, 10), 12, 3, Conv2d::DOWNSAMPLE, false), // stride 2, pad (0, 1, 0, 1)
    case((8, 10, 9), 8, 3, Conv2d::DOWNSAMPLE, true),
    case((1, 1, 1), 1, 3, Conv2d::same(1), false), // smallest: only the centre tap sees data
    case((7, 1, 13), 5, 3, Conv2d::same(1), true), // one row, few output channels (narrow tile)
    case((5, 3, 4), 7, 3, Conv2d::UPSAMPLE, false), // fused nearest ×2 then 3×3
    case(
        (33, 6, 5),
        40,
        3,
        Conv2d { stride: 2, padding: Padding { left: 1, right: 0, top: 2, bottom: 1 }, upsample: false, relu: false },
        false,
    ),
    case((512, 4, 4), 512, 3, Conv2d::same(1), true), // real VAE width (mid-block resnet)
    case((128, 8, 8), 3, 3, Conv2d::same(1), false),  // decoder conv_out
    // The tiny preview decoder's convs: ReLU after bias, and after the residual add.
    case((16, 5, 7), 64, 3, Conv2d::same(1).then_relu(), false),
    case((64, 6, 5), 64, 3, Conv2d::same(1).then_relu(), true),
    // Kernel sizes other than 1 and 3 take the shader's run-time-size path.
    Case { chw: (6, 5, 7), out: 9, k: (2, 3), conv: Conv2d::same(1), residual: false },
    Case {
        chw: (3, 11, 4),
        out: 20,
        k: (5, 1),
        conv: Conv2d { stride: 2, padding: Padding::DOWNSAMPLE, upsample: true, relu: true },
        residual: true,
    },
];

fn check(rng: &mut Rng, c: &Case, format: DType) {
    check_on(gpu(), rng, c, format)
}

fn check_on(g: &Gpu, rng: &mut Rng, c: &Case, format: DType) {
    let (ch, h, w) = c.chw;
    let (kh, kw) = c.k;
    let kdim = ch * kh * kw;
    let scale = 1.0 / (kdim as f32).sqrt();
    let x = rng.vec(ch * h * w, -1.0, 1.0);
    let mut wt = rng.vec(c.out * kdim, -scale, scale);
    if format == DType::F16 {
        wt.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32());
    }
    let bias = rng.vec(c.out, -0.5, 0.5);
    let (ho, wo) = c.conv.output_size(h, w, kh, kw).expect("valid case");
    let res = rng.vec(c.out * ho * wo, -1.0, 1.0);
    let res_ref = c.residual.then_some(res.as_slice());
    let (expected, eh, ew) = reference::conv2d(&x, c.chw, &wt, (c.out, kh, kw), &bias, c.conv, res_ref);
    assert_eq!((eh, ew), (ho, wo));
    let got = run_on(g, |g, b| {
        let xt = g.upload_f32(&[ch, h, w], &x)?;
        let wshape = [c.out, ch, kh, kw];
        let wt =
            if format == DType::F16 { g.upload_half(&wshape, &wt, DType::F16)? } else { g.upload_f32(&wshape, &wt)? };
        let bt = g.upload_f32(&[c.out], &bias)?;
        let rt = if c.residual { Some(g.upload_f32(&[c.out, ho, wo], &res)?) } else { None };
        let y = kc::conv2d(g, b, &xt, &wt, &bt, c.conv, rt.as_ref())?;
        // Over the binding limit the wrapper must split (several dispatches), not bind whole.
        let wbytes = wt.numel() * if format == DType::F16 { 2 } else { 4 };
        let largest = [xt.numel() * 4, wbytes, y.numel() * 4].into_iter().max().unwrap_or(0);
        assert_eq!(b.dispatches() > 1, largest as u64 > g.info().max_storage_binding, "split dispatches");
        assert_eq!(y.shape(), [c.out, ho, wo]);
        Ok(y)
    });
    let pad = c.conv.padding;
    let what = format!(
        "conv2d {:?}→{} k{kh}×{kw} s{} pad({},{},{},{}) up {} residual {} relu {} {format}",
        c.chw, c.out, c.conv.stride, pad.left, pad.right, pad.top, pad.bottom, c.conv.upsample, c.residual, c.conv.relu
    );
    assert_close(&what, &got, &expected, RTOL);
}

/// `common::run` on a given device.
fn run_on(g: &Gpu, f: impl FnOnce(&Gpu, &mut Batch) -> iclora::Result<Tensor>) -> Vec<f32> {
    let mut b = g.batch();
    let t = f(g, &mut b).unwrap_or_else(|e| panic!("kernel failed: {e}"));
    g.submit(b).unwrap_or_else(|e| panic!("submit failed: {e}"));
    g.read_f32_blocking(&t).unwrap_or_else(|e| panic!("readback failed: {e}"))
}

/// Storage bindings capped at 64 KiB: these cases' inputs, outputs, residuals and weights exceed
/// one binding and are split into channel runs (input chunks accumulating), at unaligned offsets.
const SPLIT_CASES: &[Case] = &[
    case((40, 23, 19), 37, 3, Conv2d::same(1), true), // input 70 KB, weight 53 KB, odd planes
    case((24, 13, 11), 30, 3, Conv2d::UPSAMPLE, false), // output 68 KB, fused ×2 upsample
    case((33, 25, 21), 64, 1, Conv2d::same(0), true), // weight rows of 33 (odd in f16), output 134 KB
    case((70, 17, 15), 9, 3, Conv2d::DOWNSAMPLE, false), // 70 input channels in 4 chunks, few outputs
    // ReLU over input chunks: applied once, to the full sum (a ReLU per partial sum fails this).
    case((70, 17, 15), 24, 3, Conv2d::same(1).then_relu(), true),
];

#[test]
fn conv2d_split_over_small_bindings_matches_reference() {
    let opts = GpuOptions { max_storage_binding: Some(64 << 10), ..GpuOptions::default() };
    let g = Gpu::new_blocking(&opts).expect("a GPU adapter");
    assert_eq!(g.info().max_storage_binding, 64 << 10);
    let mut rng = Rng::new(12);
    for c in SPLIT_CASES {
        for format in [DType::F32, DType::F16] {
            check_on(&g, &mut rng, c, format);
        }
    }
}

#[test]
fn conv2d_f32_weights_match_reference() {
    let mut rng = Rng::new(10);
    for c in CASES {
        check(&mut rng, c, DType::F32);
    }
}

#[test]
fn conv2d_f16_weights_match_reference() {
    let mut rng = Rng::new(11);
    for c in CASES {
        check(&mut rng, c, DType::F16);
    }
}

#[test]
fn output_size_follows_the_formula() {
    // (H + top + bottom − kh) / stride + 1; the VAE Downsample halves even sizes.
    assert_eq!(Conv2d::DOWNSAMPLE.output_size(64, 32, 3, 3), Some((32, 16)));
    assert_eq!(Conv2d::same(1).output_size(9, 7, 3, 3), Some((9, 7)));
    assert_eq!(Conv2d::UPSAMPLE.output_size(9, 7, 3, 3), Some((18, 14)));
    assert_eq!(Conv2d::same(0).output_size(2, 2, 3, 3), None);
    assert_eq!(Conv2d { stride: 0, ..Conv2d::same(1) }.output_size(4, 4, 3, 3), None);
}

#[test]
fn rank4_batch1_input_keeps_its_rank() {
    let mut rng = Rng::new(12);
    let (x, wt, bias) = (rng.vec(4 * 5 * 6, -1.0, 1.0), rng.vec(6 * 4 * 9, -0.3, 0.3), rng.vec(6, -1.0, 1.0));
    let (expected, _, _) = reference::conv2d(&x, (4, 5, 6), &wt, (6, 3, 3), &bias, Conv2d::same(1), None);
    let got = run_on(gpu(), |g, b| {
        let y = kc::conv2d(
            g,
            b,
            &g.upload_f32(&[1, 4, 5, 6], &x)?,
            &g.upload_f32(&[6, 4, 3, 3], &wt)?,
            &g.upload_f32(&[6], &bias)?,
            Conv2d::same(1),
            None,
        )?;
        assert_eq!(y.shape(), [1, 6, 5, 6]);
        Ok(y)
    });
    assert_close("conv2d [1, 4, 5, 6]", &got, &expected, RTOL);
}

#[test]
fn bad_shapes_and_formats_are_typed_errors() {
    let g = gpu();
    let mut b = g.batch();
    let zeros = |n: usize| vec![0f32; n];
    let x = g.upload_f32(&[4, 5, 6], &zeros(120)).unwrap();
    let w = g.upload_f32(&[8, 4, 3, 3], &zeros(288)).unwrap();
    let bias = g.upload_f32(&[8], &zeros(8)).unwrap();
    let same = Conv2d::same(1);
    let shape_err = |r: iclora::Result<iclora::gpu::Tensor>| matches!(r, Err(Error::ShapeMismatch { .. }));
    let format_err = |r: iclora::Result<iclora::gpu::Tensor>| matches!(r, Err(Error::UnsupportedFormat { .. }));
    assert!(kc::conv2d(g, &mut b, &x, &w, &bias, same, None).is_ok());
    // Input channels differ from the weight's.
    let w5 = g.upload_f32(&[8, 5, 3, 3], &zeros(360)).unwrap();
    assert!(shape_err(kc::conv2d(g, &mut b, &x, &w5, &bias, same, None)));
    // Bias of the wrong length.
    let b7 = g.upload_f32(&[7], &zeros(7)).unwrap();
    assert!(shape_err(kc::conv2d(g, &mut b, &x, &w, &b7, same, None)));
    // Not an image / not a 4-D weight.
    let flat = g.upload_f32(&[120], &zeros(120)).unwrap();
    assert!(shape_err(kc::conv2d(g, &mut b, &flat, &w, &bias, same, None)));
    let w2d = g.upload_f32(&[8, 36], &zeros(288)).unwrap();
    assert!(shape_err(kc::conv2d(g, &mut b, &x, &w2d, &bias, same, None)));
    // Kernel larger than the padded input; stride 0.
    let tiny = g.upload_f32(&[4, 1, 2], &zeros(8)).unwrap();
    assert!(shape_err(kc::conv2d(g, &mut b, &tiny, &w, &bias, Conv2d::same(0), None)));
    assert!(shape_err(kc::conv2d(g, &mut b, &x, &w, &bias, Conv2d { stride: 0, ..same }, None)));
    // Residual of the wrong shape.
    let r = g.upload_f32(&[8, 5, 5], &zeros(200)).unwrap();
    assert!(shape_err(kc::conv2d(g, &mut b, &x, &w, &bias, same, Some(&r))));
    // Formats: BF16 weights, F16 activations, F16 bias.
    let wbf = g.upload_half(&[8, 4, 3, 3], &zeros(288), DType::BF16).unwrap();
    assert!(format_err(kc::conv2d(g, &mut b, &x, &wbf, &bias, same, None)));
    let xh = g.upload_half(&[4, 5, 6], &zeros(120), DType::F16).unwrap();
    assert!(format_err(kc::conv2d(g, &mut b, &xh, &w, &bias, same, None)));
    let bh = g.upload_half(&[8], &zeros(8), DType::F16).unwrap();
    assert!(format_err(kc::conv2d(g, &mut b, &x, &w, &bh, same, None)));
}
