// FLUX rotary position embedding, 3 axes, INTERLEAVED pairs (BFL `rope` / `apply_rope`,
// src/flux/math.py @ 802fb47; not the GPT-NeoX rotate-half layout): within each head,
// pair p = (v[2p], v[2p+1]) is rotated by the angle whose cos/sin are at table column p of the token's row:
//   out[2p]   = v[2p]·cos − v[2p+1]·sin
//   out[2p+1] = v[2p]·sin + v[2p+1]·cos
// The tables (built on the CPU in f64, `kernels::rope::rope_tables`) already hold the per-axis
// frequencies, so this kernel is axis-agnostic.
// Reference: src/reference/rope.rs. Wrapper: src/kernels/rope.rs.
//
// Input and output are column slices of row-major matrices (e.g. q|k of a fused (L, 9216) qkv, or
// of linear1's (L, 21504) output); every head of the slice is rotated. One invocation per pair;
// index = (wid.y * nwg.x + wid.x) * WG + lid.x.
//
// qk_norm_rope fuses FLUX's QK norm (per-head RMSNorm `v / sqrt(mean(v²) + eps) · w`, BFL `QKNorm`,
// src/flux/modules/layers.py @ 802fb47) with this rotation: one workgroup per (row, head) of q and of k, in
// place on the fused qkv, so q
// and k are read and written once instead of twice each. The same f32 operations as rms_norm
// (norm.wgsl) followed by rope, in the same order; only the sum of squares is reduced in another
// order. Group g: row g / (2·heads); (g % (2·heads)) < heads is a q head, else a k head. Its sum
// comes from prelude_reduce.wgsl or prelude_reduce_sg.wgsl, prepended by the wrapper.

override WG: u32 = 256;
override INPLACE: bool = true;  // read the input from y instead of x

struct Params {
    pairs: u32,       // rows · half_width: number of pairs to rotate
    half_width: u32,  // pairs per row of the slice (slice width / 2)
    half_dim: u32,    // pairs per head = columns of the cos/sin tables (head_dim / 2)
    pos_off: u32,     // table row of input row 0 (text rows first, BFL src/flux/model.py @ 802fb47)
    in_off: u32,      // first column of the slice in the input
    in_stride: u32,   // elements between input rows
    out_off: u32,     // the same for the output
    out_stride: u32,
    // qk_norm_rope only (with half_dim, pos_off, in_stride = row stride of the fused qkv):
    groups: u32,      // rows · 2 · heads: workgroups with work
    heads: u32,       // heads of q (and of k)
    q_off: u32,       // first column of q and of k in each row
    k_off: u32,
    eps: f32,         // RMSNorm eps (FLUX: 1e-6)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// (rows, in_stride); when INPLACE a placeholder (WGSL cannot bind one buffer as read and read_write)
@group(0) @binding(1) var<storage, read> x: array<f32>;
// (rows, out_stride); when INPLACE also the input
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> cos_t: array<f32>;  // (positions, half_dim)
@group(0) @binding(4) var<storage, read> sin_t: array<f32>;  // (positions, half_dim)
@group(0) @binding(5) var<storage, read> norm_q: array<f32>; // qk_norm_rope: (2 · half_dim) q weight
@group(0) @binding(6) var<storage, read> norm_k: array<f32>; // qk_norm_rope: (2 · half_dim) k weight

fn ld(i: u32) -> f32 {
    if (INPLACE) {
        return y[i];
    }
    return x[i];
}

@compute @workgroup_size(WG)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.pairs) { return; }
    let row = i / p.half_width;
    let j = i % p.half_width;              // pair index within the slice row
    let t = (p.pos_off + row) * p.half_dim + j % p.half_dim;
    let c = cos_t[t];
    let s = sin_t[t];
    let src = p.in_off + row * p.in_stride + 2u * j;
    let dst = p.out_off + row * p.out_stride + 2u * j;
    let a = ld(src);
    let b = ld(src + 1u);
    y[dst] = a * c - b * s;
    y[dst + 1u] = a * s + b * c;
}

@compute @workgroup_size(WG)
fn qk_norm_rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                lane: Lane) {
    let g = wid.y * nwg.x + wid.x;
    if (g >= p.groups) { return; }  // uniform per workgroup
    let row = g / (2u * p.heads);
    let r = g % (2u * p.heads);
    let is_k = r >= p.heads;
    let base = row * p.in_stride + select(p.q_off, p.k_off, is_k) + (r % p.heads) * 2u * p.half_dim;
    var ss = 0.0;
    for (var j = lane.li; j < p.half_dim; j += WG) {
        let a = ld(base + 2u * j);
        let b = ld(base + 2u * j + 1u);
        ss += a * a + b * b;
    }
    let rstd = inverseSqrt(wg_sum(lane, vec4<f32>(ss, 0.0, 0.0, 0.0)).x / f32(2u * p.half_dim) + p.eps);
    // Each invocation rewrites only the pairs it read, after the reduction.
    let trow = (p.pos_off + row) * p.half_dim;
    for (var j = lane.li; j < p.half_dim; j += WG) {
        var wa = norm_q[2u * j];
        var wb = norm_q[2u * j + 1u];
        if (is_k) {
            wa = norm_k[2u * j];
            wb = norm_k[2u * j + 1u];
        }
        let a = ld(base + 2u * j) * rstd * wa;
        let b = ld(base + 2u * j + 1u) * rstd * wb;
        let c = cos_t[trow + j];
        let s = sin_t[trow + j];
        y[base + 2u * j] = a * c - b * s;
        y[base + 2u * j + 1u] = a * s + b * c;
    }
}
