// Normalizations over groups of contiguous f32 elements (activations.wgsl is prepended for silu,
// and prelude_reduce.wgsl or prelude_reduce_sg.wgsl for the workgroup sums):
//   layer_norm  LayerNorm over the last dim, biased variance, optional affine, optional fused AdaLN
//               modulation `LN(x)·(1 + scale) + shift` (BFL blocks, src/flux/modules/layers.py @ 802fb47;
//               CLIP's affine LayerNorm, src/transformers/models/clip/modeling_clip.py @ 679021a)
//   rms_norm    `x / sqrt(mean(x²) + eps) · w` over groups of n consecutive elements inside a column
//               slice of each row: T5 RMSNorm (`T5LayerNorm`, src/transformers/models/t5/modeling_t5.py
//               @ 6b8b757) and FLUX's per-head QK norm (BFL `QKNorm`); optionally in place
//   group_norm  GroupNorm on (C, H, W), affine, optional fused SiLU (VAE, BFL `ResnetBlock`,
//               src/flux/modules/autoencoder.py @ 802fb47)
// Reference: src/reference/norm.rs. Wrapper: src/kernels/norm.rs.
//
// One workgroup per group (a row, a head of a row, a channel group); the workgroup id is 2-D when
// there are more groups than the per-dimension dispatch limit: g = wid.y * nwg.x + wid.x.
// Statistics are f32, "corrected two-pass": m0 = mean(x), then Σ(x − m0) and Σ(x − m0)² give the
// variance without cancellation and a correction to m0 that f32 rounding of a large mean lost.

override WG: u32 = 256;          // invocations per workgroup; a power of two (tree reduction)
override INPLACE: bool = false;  // rms_norm: read the input from y instead of x
override AFFINE: bool = false;   // layer_norm: apply weight w and bias b
override MODULATE: bool = false; // layer_norm: apply (1 + m[scale_off + i]) and m[shift_off + i]
override SILU: bool = false;     // group_norm: silu after the affine

struct Params {
    groups: u32,     // number of groups (workgroups with work)
    n: u32,          // elements per group
    eps: f32,
    per_row: u32,    // groups per row: group g is the (g % per_row)-th run of n elements of row g / per_row
    in_off: u32,     // element offset of row 0's first group in the input
    in_stride: u32,  // elements between rows of the input
    out_off: u32,    // the same for the output
    out_stride: u32,
    shift_off: u32,  // layer_norm + MODULATE: element offsets of shift and scale inside m
    scale_off: u32,
    hw: u32,         // group_norm: elements per channel (H·W)
    g0: u32,         // group_norm: first group of this dispatch (global, for the affine); split tensors
}

@group(0) @binding(0) var<uniform> p: Params;
// (rows, in_stride); when INPLACE a placeholder (WGSL cannot bind one buffer as read and read_write)
@group(0) @binding(1) var<storage, read> x: array<f32>;
// (rows, out_stride); when INPLACE also the input
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
// layer_norm: (n) if AFFINE; rms_norm: (n), shared by all groups; group_norm: (C)
@group(0) @binding(3) var<storage, read> w: array<f32>;
// layer_norm: (n) if AFFINE; group_norm: (C)
@group(0) @binding(4) var<storage, read> b: array<f32>;
// layer_norm + MODULATE: the modulation vector, e.g. (6 · 3072) from img_mod.lin; shift and scale are
// the n-element runs at shift_off and scale_off
@group(0) @binding(5) var<storage, read> m: array<f32>;

fn group_id(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

fn ld(i: u32) -> f32 {
    if (INPLACE) {
        return y[i];
    }
    return x[i];
}

// Statistics of the n elements at base: (m0, dm, rstd) so that the normalized value is
// ((x − m0) − dm) · rstd. center = false gives RMS: m0 = dm = 0, rstd = 1/sqrt(mean(x²) + eps).
fn moments(lane: Lane, base: u32, center: bool) -> vec3<f32> {
    let n = f32(p.n);
    var s = 0.0;
    if (center) {
        for (var i = lane.li; i < p.n; i += WG) {
            s += ld(base + i);
        }
    }
    let m0 = wg_sum(lane, vec4<f32>(s, 0.0, 0.0, 0.0)).x / n;
    var a = vec2<f32>(0.0);
    for (var i = lane.li; i < p.n; i += WG) {
        let d = ld(base + i) - m0;
        a += vec2<f32>(d, d * d);
    }
    let t = wg_sum(lane, vec4<f32>(a, 0.0, 0.0)).xy / n;
    if (!center) {
        return vec3<f32>(0.0, 0.0, inverseSqrt(t.y + p.eps));
    }
    let variance = max(t.y - t.x * t.x, 0.0);
    return vec3<f32>(m0, t.x, inverseSqrt(variance + p.eps));
}

// First input and output element of group g.
fn bases(g: u32) -> vec2<u32> {
    let row = g / p.per_row;
    let h = (g % p.per_row) * p.n;
    return vec2<u32>(p.in_off + row * p.in_stride + h, p.out_off + row * p.out_stride + h);
}

@compute @workgroup_size(WG)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              lane: Lane) {
    let g = group_id(wid, nwg);
    if (g >= p.groups) { return; }
    let io = bases(g);
    let st = moments(lane, io.x, true);
    for (var i = lane.li; i < p.n; i += WG) {
        var v = ((ld(io.x + i) - st.x) - st.y) * st.z;
        if (AFFINE) {
            v = v * w[i] + b[i];
        }
        if (MODULATE) {
            v = v * (1.0 + m[p.scale_off + i]) + m[p.shift_off + i];
        }
        y[io.y + i] = v;
    }
}

@compute @workgroup_size(WG)
fn rms_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            lane: Lane) {
    let g = group_id(wid, nwg);
    if (g >= p.groups) { return; }
    let io = bases(g);
    let st = moments(lane, io.x, false);
    // In place each invocation reads and then writes only its own elements, after the reductions.
    for (var i = lane.li; i < p.n; i += WG) {
        y[io.y + i] = ld(io.x + i) * st.z * w[i];
    }
}

@compute @workgroup_size(WG)
fn group_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              lane: Lane) {
    let g = group_id(wid, nwg);
    if (g >= p.groups) { return; }
    // A group is C/G whole channels of H·W elements: one contiguous run of n elements.
    let io = bases(g);
    let st = moments(lane, io.x, true);
    let first_channel = (p.g0 + g) * (p.n / p.hw);
    for (var i = lane.li; i < p.n; i += WG) {
        let c = first_channel + i / p.hw;
        var v = ((ld(io.x + i) - st.x) - st.y) * st.z * w[c] + b[c];
        if (SILU) {
            v = silu(v);
        }
        y[io.y + i] = v;
    }
}
