//! shaders/attention.wgsl against reference::attention (f64 softmax attention).

mod common;
use common::{assert_close, gpu, run, Rng};
use iclora::gpu::DType;
use iclora::kernels::attention::{self as attn, AttnConfig, AttnInput, AttnOptions, MAX_WORKGROUP_BYTES};
use iclora::reference::attention::{self as reference, RefInput};
use iclora::Error;

// f32 accumulation over at most a few hundred keys × 512 dims stays well within 1e-5 of the f64
// reference relative to the output's RMS (see common::assert_close).
const RTOL: f32 = 1e-5;

/// A test matrix `[rows, cols]` whose heads start at `off`: the columns around them are noise the
/// kernel must not read.
struct Mat {
    rows: usize,
    cols: usize,
    off: usize,
    data: Vec<f32>,
}

impl Mat {
    fn new(rng: &mut Rng, rows: usize, cols: usize, off: usize, amp: f32) -> Mat {
        Mat { rows, cols, off, data: rng.vec(rows * cols, -amp, amp) }
    }
    fn at(&self, off: usize) -> RefInput<'_> {
        RefInput { data: &self.data, cols: self.cols, col_offset: off }
    }
}

struct Case<'a> {
    name: String,
    heads: usize,
    d: usize,
    q: &'a Mat,
    k: &'a Mat,
    v: &'a Mat,
    // Offsets override the matrices' own when q/k/v share one fused tensor.
    offs: [usize; 3],
    scale: f32,
    causal: bool,
    bias: Option<Vec<f32>>,
}

fn check(c: &Case) {
    let lq = c.q.rows;
    let lk = c.k.rows;
    let expected = reference::attention(
        c.q.at(c.offs[0]),
        c.k.at(c.offs[1]),
        c.v.at(c.offs[2]),
        c.heads,
        c.d,
        c.scale,
        c.causal,
        c.bias.as_deref(),
    );
    let got = run(|g, b| {
        let up = |m: &Mat| g.upload_f32(&[m.rows, m.cols], &m.data);
        let (q, k, v) = (up(c.q)?, up(c.k)?, up(c.v)?);
        let bias = match &c.bias {
            Some(bv) => Some(g.upload_f32(&[c.heads, lq, lk], bv)?),
            None => None,
        };
        let opts = AttnOptions { scale: c.scale, causal: c.causal, bias: bias.as_ref() };
        let out = attn::attention(
            g,
            b,
            AttnInput::new(&q, c.offs[0]),
            AttnInput::new(&k, c.offs[1]),
            AttnInput::new(&v, c.offs[2]),
            c.heads,
            c.d,
            &opts,
        )?;
        assert_eq!(out.shape(), [lq, c.heads * c.d]);
        assert_eq!(out.gpu_bytes(), attn::attention_bytes(lq, c.heads, c.d));
        Ok(out)
    });
    assert_close(&c.name, &got, &expected, RTOL);
}

/// Separate q, k, v tensors with some spare columns around the heads.
fn self_attention(rng: &mut Rng, heads: usize, d: usize, lq: usize, lk: usize, causal: bool, bias: bool) {
    let w = heads * d;
    let (oq, ok, ov) = (rng.below(5), rng.below(5), 0);
    let q = Mat::new(rng, lq, w + oq + 3, oq, 1.0);
    let k = Mat::new(rng, lk, w + ok, ok, 1.0);
    let v = Mat::new(rng, lk, w + 2, ov, 2.0);
    let scale = if bias { 1.0 } else { 1.0 / (d as f32).sqrt() };
    let bias = bias.then(|| rng.vec(heads * lq * lk, -3.0, 3.0));
    check(&Case {
        name: format!("heads {heads} × D {d}, Lq {lq}, Lk {lk}, causal {causal}, bias {}", bias.is_some()),
        heads,
        d,
        offs: [q.off, k.off, v.off],
        q: &q,
        k: &k,
        v: &v,
        scale,
        causal,
        bias,
    });
}

#[test]
fn head_dims_and_awkward_lengths_match_reference() {
    let mut rng = Rng::new(11);
    // L = 1, 7 (< one tile), 77 (CLIP), 130 (tile + 2), 333 (odd, several tiles).
    for l in [1, 7, 77, 130, 333] {
        self_attention(&mut rng, 3, 64, l, l, false, false);
        self_attention(&mut rng, 2, 128, l, l, false, false);
        self_attention(&mut rng, 1, 512, l, l, false, false);
    }
}

#[test]
fn other_head_counts_and_an_odd_head_dim() {
    let mut rng = Rng::new(12);
    for (heads, d, l) in [(5, 64, 33), (12, 64, 9), (7, 128, 17), (2, 40, 21), (1, 3, 50)] {
        self_attention(&mut rng, heads, d, l, l, false, false);
    }
}

#[test]
fn cross_attention_lq_differs_from_lk() {
    let mut rng = Rng::new(13);
    for (lq, lk) in [(7, 130), (130, 7), (1, 77), (33, 1)] {
        self_attention(&mut rng, 4, 64, lq, lk, false, false);
        self_attention(&mut rng, 2, 128, lq, lk, false, false);
    }
    self_attention(&mut rng, 1, 512, 9, 40, false, false);
}

#[test]
fn t5_bias_and_clip_causal_mask() {
    let mut rng = Rng::new(14);
    // T5: additive relative-position bias, no scaling (`T5Attention`,
    // src/transformers/models/t5/modeling_t5.py @ 6b8b757).
    for (heads, l) in [(64, 7), (8, 77), (3, 130)] {
        self_attention(&mut rng, heads, 64, l, l, false, true);
    }
    // CLIP: causal, 12 heads × 64 at L = 77 (`CLIPAttention`,
    // src/transformers/models/clip/modeling_clip.py @ 679021a).
    for l in [1, 7, 77] {
        self_attention(&mut rng, 12, 64, l, l, true, false);
    }
    self_attention(&mut rng, 2, 128, 130, 130, true, false);
    self_attention(&mut rng, 1, 512, 33, 33, true, false);
    // Both at once, and causal with Lq != Lk (j <= i in absolute indices).
    self_attention(&mut rng, 4, 64, 40, 40, true, true);
    self_attention(&mut rng, 2, 64, 20, 45, true, false);
    self_attention(&mut rng, 2, 64, 45, 20, true, true);
}

#[test]
fn flux_fused_qkv_double_and_single_block() {
    let mut rng = Rng::new(15);
    let scale = 1.0 / (128f32).sqrt();
    // Double block: qkv [L, 9216] = q | k | v, 24 heads × 128 each (BFL `SelfAttention`,
    // src/flux/modules/layers.py @ 802fb47).
    let qkv = Mat::new(&mut rng, 64, 9216, 0, 1.5);
    check(&Case {
        name: "FLUX double block, qkv [64, 9216]".into(),
        heads: 24,
        d: 128,
        q: &qkv,
        k: &qkv,
        v: &qkv,
        offs: [0, 3072, 6144],
        scale,
        causal: false,
        bias: None,
    });
    // Single block: linear1 output [L, 21504] = q | k | v | mlp (BFL `SingleStreamBlock`,
    // src/flux/modules/layers.py @ 802fb47).
    let lin1 = Mat::new(&mut rng, 12, 21504, 0, 1.5);
    check(&Case {
        name: "FLUX single block, linear1 [12, 21504]".into(),
        heads: 24,
        d: 128,
        q: &lin1,
        k: &lin1,
        v: &lin1,
        offs: [0, 3072, 6144],
        scale,
        causal: false,
        bias: None,
    });
}

#[test]
fn large_scores_rescale_stably() {
    // Scores up to ~70 that grow along the keys, so the running max moves in every tile and the
    // old accumulators are rescaled each time; exp must neither overflow nor lose the early keys.
    // The size comes from the bias, added exactly: large q·k (|q|,|k| ~ 4) would instead carry an
    // f32 dot-product rounding of ~1e-5 absolute into the exponent, a property of f32 scores, not
    // of the kernel.
    let mut rng = Rng::new(16);
    let (lq, lk) = (40, 150);
    let q = Mat::new(&mut rng, lq, 64, 0, 1.0);
    let k = Mat::new(&mut rng, lk, 64, 0, 1.0);
    let v = Mat::new(&mut rng, lk, 64, 0, 1.0);
    let bias: Vec<f32> = (0..lq * lk).map(|e| 0.4 * (e % lk) as f32 + rng.uniform(-3.0, 3.0)).collect();
    check(&Case {
        name: "large growing scores".into(),
        heads: 1,
        d: 64,
        q: &q,
        k: &k,
        v: &v,
        offs: [0, 0, 0],
        scale: 1.0,
        causal: false,
        bias: Some(bias),
    });
}

#[test]
fn memory_is_linear_in_tokens() {
    // The wrapper allocates only the output (checked against real tensors in `check`), so the
    // bytes for n tokens grow linearly even at IC-LoRA canvas sizes.
    for n in [77, 1024, 4608, 12288] {
        let (a, b) = (attn::attention_bytes(n, 24, 128), attn::attention_bytes(2 * n, 24, 128));
        assert!(b as f64 <= 2.2 * a as f64, "{n}: {a} -> {b}");
        assert_eq!(a, (n * 3072 * 4) as u64);
    }
    // Workgroup memory does not depend on the length at all and stays within WebGPU's default.
    for d in [64, 128, 512] {
        for wg in [64, 128, 256] {
            let c = AttnConfig::choose(d, wg, MAX_WORKGROUP_BYTES).unwrap();
            assert!(c.workgroup_bytes() <= MAX_WORKGROUP_BYTES, "{c:?}");
            assert!(c.wg <= 256 && (c.bq * c.head_dim) as usize <= 8 * c.wg as usize, "{c:?}");
        }
    }
    assert!(matches!(AttnConfig::choose(4096, 256, MAX_WORKGROUP_BYTES), Err(Error::LimitExceeded { .. })));
}

#[test]
fn bad_shapes_and_formats_are_typed_errors() {
    let g = gpu();
    let mut b = g.batch();
    let t = |rows: usize, cols: usize| g.upload_f32(&[rows, cols], &vec![0.0; rows * cols]).unwrap();
    let (q, k, v) = (t(5, 256), t(9, 256), t(9, 256));
    let opts = AttnOptions::for_head_dim(64);
    let shape_err = |r: iclora::Result<_>| matches!(r, Err(Error::ShapeMismatch { .. }));
    let mut go = |q: AttnInput, k: AttnInput, v: AttnInput, heads, opts: &AttnOptions| {
        attn::attention(g, &mut b, q, k, v, heads, 64, opts)
    };
    let i = AttnInput::new;
    assert!(go(i(&q, 0), i(&k, 0), i(&v, 0), 4, &opts).is_ok());
    // heads*head_dim + offset > columns
    assert!(shape_err(go(i(&q, 0), i(&k, 0), i(&v, 0), 5, &opts)));
    assert!(shape_err(go(i(&q, 1), i(&k, 0), i(&v, 0), 4, &opts)));
    assert!(shape_err(go(i(&q, 0), i(&k, 64), i(&v, 0), 4, &opts)));
    assert!(shape_err(go(i(&q, 0), i(&k, 0), i(&v, 200), 1, &opts))); // 200 + 64 > 256
                                                                      // k and v with different lengths
    let v8 = t(8, 256);
    assert!(shape_err(go(i(&q, 0), i(&k, 0), i(&v8, 0), 4, &opts)));
    // no keys, zero heads, not 2-D
    let k0 = t(0, 256);
    assert!(shape_err(go(i(&q, 0), i(&k0, 0), i(&k0, 0), 4, &opts)));
    assert!(shape_err(go(i(&q, 0), i(&k, 0), i(&v, 0), 0, &opts)));
    let q3 = g.upload_f32(&[1, 5, 256], &[0.0; 1280]).unwrap();
    assert!(shape_err(go(i(&q3, 0), i(&k, 0), i(&v, 0), 4, &opts)));
    // wrong bias shape: [heads, Lk, Lq] instead of [heads, Lq, Lk]
    let bias = g.upload_f32(&[4, 9, 5], &[0.0; 180]).unwrap();
    let with_bias = AttnOptions { bias: Some(&bias), ..opts };
    assert!(shape_err(go(i(&q, 0), i(&k, 0), i(&v, 0), 4, &with_bias)));
    // non-F32 inputs and bias
    let half = g.upload_half(&[9, 256], &[0.0; 2304], DType::F16).unwrap();
    let unsupported = |r: iclora::Result<_>| matches!(r, Err(Error::UnsupportedFormat { .. }));
    assert!(unsupported(go(i(&q, 0), i(&half, 0), i(&v, 0), 4, &opts)));
    assert!(unsupported(go(i(&q, 0), i(&k, 0), i(&half, 0), 4, &opts)));
    let hbias = g.upload_half(&[4, 5, 9], &[0.0; 180], DType::F16).unwrap();
    assert!(unsupported(go(i(&q, 0), i(&k, 0), i(&v, 0), 4, &AttnOptions { bias: Some(&hbias), ..opts })));
    // a non-finite scale
    assert!(matches!(
        go(i(&q, 0), i(&k, 0), i(&v, 0), 4, &AttnOptions { scale: f32::NAN, ..opts }),
        Err(Error::InvalidArgument(_))
    ));
}

/// `check` through an explicit kernel choice: the register-tiled path (head dims 64/128, no bias,
/// no mask) where `Auto` applies, and the general kernel forced on the same inputs.
fn check_paths(c: &Case) {
    for path in [attn::AttnPath::Auto, attn::AttnPath::General] {
        let expected = reference::attention(
            c.q.at(c.offs[0]),
            c.k.at(c.offs[1]),
            c.v.at(c.offs[2]),
            c.heads,
            c.d,
            c.scale,
            false,
            None,
        );
        let got = run(|g, b| {
            let up = |m: &Mat| g.upload_f32(&[m.rows, m.cols], &m.data);
            let (q, k, v) = (up(c.q)?, up(c.k)?, up(c.v)?);
            let opts = AttnOptions { scale: c.scale, causal: false, bias: None };
            assert!(attn::tiled_applies(g, c.d, &opts), "{}: the tiled path should apply on lavapipe", c.name);
            let out = attn::attention_with(
                g,
                b,
                AttnInput::new(&q, c.offs[0]),
                AttnInput::new(&k, c.offs[1]),
                AttnInput::new(&v, c.offs[2]),
                c.heads,
                c.d,
                &opts,
                path,
            )?;
            assert_eq!(out.shape(), [c.q.rows, c.heads * c.d]);
            Ok(out)
        });
        assert_close(&format!("{} ({path:?})", c.name), &got, &expected, RTOL);
    }
}

#[test]
fn tiled_path_awkward_lengths_cross_and_fused_views() {
    let mut rng = Rng::new(17);
    // Lengths around the 64-query block and 32-key tile: 1, 7, 63, 65, 130, 333; Lq != Lk too.
    let lens = [(1, 1), (7, 7), (63, 63), (65, 65), (130, 130), (333, 333), (65, 7), (7, 65), (1, 130), (130, 33)];
    for (heads, d) in [(3, 64), (2, 128)] {
        for (lq, lk) in lens {
            let (oq, ok) = (rng.below(5), rng.below(5));
            let q = Mat::new(&mut rng, lq, heads * d + oq + 3, oq, 1.0);
            let k = Mat::new(&mut rng, lk, heads * d + ok, ok, 1.0);
            let v = Mat::new(&mut rng, lk, heads * d + 2, 0, 2.0);
            check_paths(&Case {
                name: format!("tiled: heads {heads} × D {d}, Lq {lq}, Lk {lk}"),
                heads,
                d,
                offs: [q.off, k.off, v.off],
                q: &q,
                k: &k,
                v: &v,
                scale: 1.0 / (d as f32).sqrt(),
                causal: false,
                bias: None,
            });
        }
    }
    // Fused qkv views at FLUX width (24 × 128) with an awkward length, and T5/CLIP width (12 × 64).
    for (heads, d, l) in [(24, 128, 70), (12, 64, 77)] {
        let w = heads * d;
        let qkv = Mat::new(&mut rng, l, 3 * w + 5, 0, 1.5);
        check_paths(&Case {
            name: format!("tiled: fused qkv [{l}, {}], {heads} × {d}", 3 * w + 5),
            heads,
            d,
            offs: [1, w + 2, 2 * w + 5],
            q: &qkv,
            k: &qkv,
            v: &qkv,
            scale: 1.0 / (d as f32).sqrt(),
            causal: false,
            bias: None,
        });
    }
}

#[test]
fn tiled_path_only_where_it_applies() {
    let g = gpu();
    let plain = AttnOptions::for_head_dim(64);
    assert!(attn::tiled_applies(g, 64, &plain) && attn::tiled_applies(g, 128, &plain));
    // Other head dims, a mask or a bias go to the general kernel.
    for d in [3, 40, 512] {
        assert!(!attn::tiled_applies(g, d, &plain), "{d}");
    }
    assert!(!attn::tiled_applies(g, 64, &AttnOptions { causal: true, ..plain }));
    let bias = g.upload_f32(&[1, 1, 1], &[0.0]).unwrap();
    assert!(!attn::tiled_applies(g, 64, &AttnOptions { bias: Some(&bias), ..plain }));
    const { assert!(attn::TILED_WORKGROUP_BYTES <= MAX_WORKGROUP_BYTES) };
}
