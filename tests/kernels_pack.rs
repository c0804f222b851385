//! shaders/pack.wgsl against reference::pack (diffusers `_pack_latents`,
//! src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c). Exact copies: tolerance 0.

mod common;
use common::{assert_close, gpu, run, Rng};
use iclora::gpu::DType;
use iclora::kernels::pack as kp;
use iclora::reference::pack as reference;
use iclora::Error;

// (channels, h, w): the smallest latent, odd token grids, FLUX's 16 channels at a few canvas sizes
// (a 2048×1024 IC-LoRA canvas is a [16, 128, 256] latent: 8192 tokens, 524288 elements).
const SHAPES: &[(usize, usize, usize)] =
    &[(1, 2, 2), (3, 2, 14), (16, 6, 10), (16, 14, 2), (16, 64, 64), (16, 128, 256)];

#[test]
fn pack_and_unpack_match_reference_and_invert() {
    let mut rng = Rng::new(30);
    for &(c, h, w) in SHAPES {
        let latent = rng.vec(c * h * w, -3.0, 3.0);
        let tokens = (h / 2) * (w / 2);
        let packed = run(|g, b| {
            let y = kp::pack(g, b, &g.upload_f32(&[c, h, w], &latent)?)?;
            assert_eq!(y.shape(), [tokens, 4 * c]);
            Ok(y)
        });
        assert_close(&format!("pack [{c}, {h}, {w}]"), &packed, &reference::pack(&latent, c, h, w), 0.0);

        let other = rng.vec(c * h * w, -3.0, 3.0);
        let unpacked = run(|g, b| {
            let y = kp::unpack(g, b, &g.upload_f32(&[tokens, 4 * c], &other)?, c, h, w)?;
            assert_eq!(y.shape(), [c, h, w]);
            Ok(y)
        });
        assert_close(&format!("unpack [{c}, {h}, {w}]"), &unpacked, &reference::unpack(&other, c, h, w), 0.0);

        // Round trip on the GPU in one batch.
        let back = run(|g, b| {
            let p = kp::pack(g, b, &g.upload_f32(&[1, c, h, w], &latent)?)?;
            kp::unpack(g, b, &p, c, h, w)
        });
        assert_close(&format!("unpack(pack) [{c}, {h}, {w}]"), &back, &latent, 0.0);
    }
}

#[test]
fn reference_follows_the_formula() {
    // latent[ch, y, x] = ch·100 + y·10 + x on [2, 2, 4]: token 1 (r 0, c 1) holds, per channel,
    // (0, 2), (0, 3), (1, 2), (1, 3) — top-left, top-right, bottom-left, bottom-right (`_pack_latents`).
    let (c, h, w) = (2, 2, 4);
    let latent: Vec<f32> = (0..c * h * w).map(|i| ((i / 8) * 100 + (i / 4 % 2) * 10 + i % 4) as f32).collect();
    let packed = reference::pack(&latent, c, h, w);
    assert_eq!(&packed[8..16], &[2.0, 3.0, 12.0, 13.0, 102.0, 103.0, 112.0, 113.0]);
    assert_eq!(reference::unpack(&packed, c, h, w), latent);
}

#[test]
fn bad_shapes_and_formats_are_typed_errors() {
    let g = gpu();
    let mut b = g.batch();
    let shape_err = |r: iclora::Result<iclora::gpu::Tensor>| matches!(r, Err(Error::ShapeMismatch { .. }));
    let odd_h = g.upload_f32(&[16, 3, 4], &[0.0; 192]).unwrap();
    assert!(shape_err(kp::pack(g, &mut b, &odd_h)));
    let odd_w = g.upload_f32(&[16, 4, 5], &[0.0; 320]).unwrap();
    assert!(shape_err(kp::pack(g, &mut b, &odd_w)));
    let flat = g.upload_f32(&[64], &[0.0; 64]).unwrap();
    assert!(shape_err(kp::pack(g, &mut b, &flat)));
    let tokens = g.upload_f32(&[6, 64], &[0.0; 384]).unwrap();
    assert!(kp::unpack(g, &mut b, &tokens, 16, 4, 6).is_ok());
    assert!(shape_err(kp::unpack(g, &mut b, &tokens, 16, 6, 6))); // wrong token count
    assert!(shape_err(kp::unpack(g, &mut b, &tokens, 8, 4, 6))); // wrong feature count
    assert!(shape_err(kp::unpack(g, &mut b, &tokens, 16, 3, 8))); // odd h
    let half = g.upload_half(&[16, 2, 2], &[0.0; 64], DType::F16).unwrap();
    assert!(matches!(kp::pack(g, &mut b, &half), Err(Error::UnsupportedFormat { .. })));
}
