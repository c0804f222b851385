// 2-D convolution for the FLUX VAE (BFL `ResnetBlock` convs, `Downsample`, `Upsample`,
// src/flux/modules/autoencoder.py @ 802fb47), batch 1, with bias, optional fused nearest ×2 upsampling of the
// input, optional fused residual add
// and optional ReLU (the tiny preview decoder, src/model/taef1.rs).
// Reference: src/reference/conv2d.rs. Wrapper: src/kernels/conv2d.rs.
//
// Computed as an implicit GEMM: out[o, p] = Σ_k W[o, k] · X̂[k, p] + bias[o], where k = (ci, ky, kx)
// runs over the weight's own row layout (PyTorch [O, I, kh, kw] is [O, K] row-major) and X̂ is the
// im2col matrix, never materialised: each workgroup stages a TK-deep slice of its W rows and of X̂'s
// columns in workgroup memory, gathering X̂ on the fly with zero padding. A workgroup owns a tile of
// TO = 4·WGO output channels × TP = 4·WGP output pixels (pixels flattened row-major, so a tile may span
// image rows and no pixels are wasted at row ends); each invocation accumulates 4 channels × 4 adjacent
// pixels in four vec4 registers (named, not an array: private arrays indexed in loops can land in slow
// local memory), reading one vec4 of each staged slice per reduction step: 16 FMAs per 2 loads.
//
// The wrapper keeps WGO ≥ 4, so the invocation count is a multiple of TP: each invocation then
// gathers X̂ for one fixed pixel (its coordinates are computed once) and TK / (WGO / 4) values of k.
// KH / KW (0 = read them from the uniforms) make the k → (ci, ky, kx) split a division by constants.

override WGO: u32 = 8;      // invocations along output channels (4 channels each; ≥ 4)
override WGP: u32 = 16;     // invocations along output pixels (4 pixels each)
override TK: u32 = 16;      // reduction depth (input channel × kernel tap) staged per step
override FORMAT: u32 = 0;   // weight format, DType::shader_id: 0 = F32, 1 = F16 (two per u32, low half first)
override RESIDUAL: bool = false; // add `res` to the output (ResnetBlock's `shortcut(x) + h`)
override KH: u32 = 0;       // kernel height if fixed at compile time, else 0
override KW: u32 = 0;       // kernel width if fixed at compile time, else 0

struct Params {
    cin: u32,       // input channels
    h: u32,         // stored input height
    w: u32,         // stored input width
    cout: u32,      // output channels
    ho: u32,        // output height
    wo: u32,        // output width
    kh: u32,        // kernel height
    kw: u32,        // kernel width
    stride: u32,
    pad_left: u32,  // zero columns before the (upsampled) input; right/bottom padding is implied by ho/wo
    pad_top: u32,   // zero rows above the (upsampled) input
    up_shift: u32,  // 1: the input is upsampled ×2 nearest first (read at coordinate >> 1); 0: as is
    // Split dispatches (tensors over one storage binding; see the wrapper): this dispatch sees input
    // channels [ci0, ci0 + cin) and output channels [o0, o0 + cout), each bound as its own range.
    k0: u32,        // ci0 · kh · kw: first weight column of these input channels
    ktot: u32,      // weight row length (all input channels · kh · kw)
    o0: u32,        // first output channel (indexes bias)
    x_off: u32,     // element offsets of the data inside each bound range (ranges start aligned)
    w_off: u32,     // in weight elements (f16: halves)
    res_off: u32,
    y_off: u32,
    accumulate: u32, // 1: add to y (a later input-channel chunk); 0: write bias (+ residual) + sum
    relu: u32,       // 1: max(·, 0) on the stored value (the wrapper sets it on the last input chunk only)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (cin, h, w) from x_off
@group(0) @binding(2) var<storage, read> wt: array<u32>;         // (cout, ktot) from w_off: f32 bits, or f16 pairs
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // (all output channels), from o0
@group(0) @binding(4) var<storage, read> res: array<f32>;        // (cout, ho, wo) from res_off if RESIDUAL, else unused
@group(0) @binding(5) var<storage, read_write> y: array<f32>;    // (cout, ho, wo) from y_off

var<workgroup> ws: array<vec4<f32>, TK * WGO>;  // (TK, TO / 4): weight slice, transposed
var<workgroup> xs: array<vec4<f32>, TK * WGP>;  // (TK, TP / 4): im2col slice

// W[o, k0 + k] (k < kdim), or 0 past the last output channel.
fn weight(o: u32, k: u32, kdim: u32) -> f32 {
    if (o >= p.cout) {
        return 0.0;
    }
    let e = p.w_off + o * p.ktot + p.k0 + k;
    if (FORMAT == 1u) {
        return unpack2x16float(wt[e >> 1u])[e & 1u];
    }
    return bitcast<f32>(wt[e]);
}

@compute @workgroup_size(WGO * WGP)
fn conv2d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let to = 4u * WGO;
    let tp = 4u * WGP;
    let nt = WGO * WGP;
    let kh = select(p.kh, KH, KH != 0u);
    let kw = select(p.kw, KW, KW != 0u);
    let taps = kh * kw;
    let kdim = p.cin * taps;
    let npix = p.ho * p.wo;
    let o0 = wid.y * to;
    let p0 = wid.x * tp;
    let lp = lid % WGP;   // compute: pixels p0 + 4·lp .. + 3
    let lo = lid / WGP;   // compute: channels o0 + 4·lo .. + 3

    // Gather role: one pixel, every (nt / tp)-th k of a slice, starting at gk.
    let gp = lid % tp;
    let gk = lid / tp;
    let gpix = p0 + gp;
    let goy = gpix / p.wo;
    let gox = gpix - goy * p.wo;
    // Top-left tap of this pixel in the padded (possibly upsampled) input, as i32: padding makes it negative.
    let gy0 = i32(goy * p.stride) - i32(p.pad_top);
    let gx0 = i32(gox * p.stride) - i32(p.pad_left);
    let hu = i32(p.h << p.up_shift);
    let wu = i32(p.w << p.up_shift);

    var acc0 = vec4<f32>(0.0);  // channel 4·lo + 0, four pixels
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < kdim; k0 += TK) {
        // Weight rows are contiguous along k: consecutive invocations take consecutive k.
        for (var e = lid; e < TK * WGO; e += nt) {
            let kk = e % TK;
            let q = e / TK;
            let k = k0 + kk;
            let o = o0 + 4u * q;
            var v = vec4<f32>(0.0);
            if (k < kdim) {
                v = vec4<f32>(weight(o, k, kdim), weight(o + 1u, k, kdim), weight(o + 2u, k, kdim), weight(o + 3u, k, kdim));
            }
            ws[kk * WGO + q] = v;
        }
        // Consecutive invocations take consecutive pixels of one k.
        for (var kk = gk; kk < TK; kk += nt / tp) {
            let k = k0 + kk;
            var v = 0.0;
            if (gpix < npix && k < kdim) {
                let ci = k / taps;
                let t = k - ci * taps;
                let ky = t / kw;
                let iy = gy0 + i32(ky);
                let ix = gx0 + i32(t - ky * kw);
                if (iy >= 0 && iy < hu && ix >= 0 && ix < wu) {
                    v = x[p.x_off + (ci * p.h + (u32(iy) >> p.up_shift)) * p.w + (u32(ix) >> p.up_shift)];
                }
            }
            xs[kk * WGP + gp / 4u][gp % 4u] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let wv = ws[kk * WGO + lo];
            let xv = xs[kk * WGP + lp];
            acc0 = fma(vec4<f32>(wv.x), xv, acc0);
            acc1 = fma(vec4<f32>(wv.y), xv, acc1);
            acc2 = fma(vec4<f32>(wv.z), xv, acc2);
            acc3 = fma(vec4<f32>(wv.w), xv, acc3);
        }
        workgroupBarrier();
    }

    store(o0 + 4u * lo, p0 + 4u * lp, npix, acc0);
    store(o0 + 4u * lo + 1u, p0 + 4u * lp, npix, acc1);
    store(o0 + 4u * lo + 2u, p0 + 4u * lp, npix, acc2);
    store(o0 + 4u * lo + 3u, p0 + 4u * lp, npix, acc3);
}

// Writes four adjacent output pixels of channel o, with bias and the optional residual.
fn store(o: u32, pix: u32, npix: u32, v: vec4<f32>) {
    if (o >= p.cout) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (pix + j < npix) {
            let idx = o * npix + pix + j;
            var r = v[j];
            if (p.accumulate != 0u) {
                r += y[p.y_off + idx];
            } else {
                r += bias[p.o0 + o];
                if (RESIDUAL) {
                    r += res[p.res_off + idx];
                }
            }
            if (p.relu != 0u) {
                r = max(r, 0.0);
            }
            y[p.y_off + idx] = r;
        }
    }
}
