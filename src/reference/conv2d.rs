//! CPU reference for `shaders/conv2d.wgsl`: direct convolution with f64 accumulation.

use crate::kernels::conv2d::Conv2d;

/// Output `[O, Ho, Wo]` of `conv(x) + bias (+ residual)`, then ReLU when `conv.relu`, for `x`
/// `[C, H, W]` and `weight` `[O, C, kh, kw]` (F16 weights: pass them already rounded to f16). Returns `(out, ho, wo)`;
/// an impossible geometry gives an empty output of size 0 × 0.
pub fn conv2d(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    weight: &[f32],
    (o, kh, kw): (usize, usize, usize),
    bias: &[f32],
    conv: Conv2d,
    residual: Option<&[f32]>,
) -> (Vec<f32>, usize, usize) {
    if conv.upsample {
        let up = crate::reference::upsample::nearest2x(x, c, h, w);
        let plain = Conv2d { upsample: false, ..conv };
        return conv2d(&up, (c, 2 * h, 2 * w), weight, (o, kh, kw), bias, plain, residual);
    }
    let Some((ho, wo)) = conv.output_size(h, w, kh, kw) else {
        return (Vec::new(), 0, 0);
    };
    let pad = conv.padding;
    let mut out = vec![0f32; o * ho * wo];
    for oc in 0..o {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = bias[oc] as f64;
                for ic in 0..c {
                    for ky in 0..kh {
                        // Position in the unpadded input; outside it the padded input is zero.
                        let iy = (oy * conv.stride + ky) as isize - pad.top as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix = (ox * conv.stride + kx) as isize - pad.left as isize;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let xv = x[(ic * h + iy as usize) * w + ix as usize] as f64;
                            let wv = weight[((oc * c + ic) * kh + ky) * kw + kx] as f64;
                            acc += xv * wv;
                        }
                    }
                }
                let idx = (oc * ho + oy) * wo + ox;
                if let Some(r) = residual {
                    acc += r[idx] as f64;
                }
                if conv.relu {
                    acc = acc.max(0.0);
                }
                out[idx] = acc as f32;
            }
        }
    }
    (out, ho, wo)
}
