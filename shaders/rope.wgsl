// FLUX rotary position embedding, 3 axes, INTERLEAVED pairs (FLUX_REFERENCE.md §1.6; not the
// GPT-NeoX rotate-half layout): within each head, pair p = (v[2p], v[2p+1]) is rotated by the angle
// whose cos/sin are at table column p of the token's row:
//   out[2p]   = v[2p]·cos − v[2p+1]·sin
//   out[2p+1] = v[2p]·sin + v[2p+1]·cos
// The tables (built on the CPU in f64, `kernels::rope::rope_tables`) already hold the per-axis
// frequencies, so this kernel is axis-agnostic.
// Reference: src/reference/rope.rs. Wrapper: src/kernels/rope.rs.
//
// Input and output are column slices of row-major matrices (e.g. q|k of a fused (L, 9216) qkv, or
// of linear1's (L, 21504) output); every head of the slice is rotated. One invocation per pair;
// index = (wid.y * nwg.x + wid.x) * WG + lid.x.

override WG: u32 = 256;
override INPLACE: bool = true;  // read the input from y instead of x

struct Params {
    pairs: u32,       // rows · half_width: number of pairs to rotate
    half_width: u32,  // pairs per row of the slice (slice width / 2)
    half_dim: u32,    // pairs per head = columns of the cos/sin tables (head_dim / 2)
    pos_off: u32,     // table row of input row 0 (text rows come first in the joint sequence, §2)
    in_off: u32,      // first column of the slice in the input
    in_stride: u32,   // elements between input rows
    out_off: u32,     // the same for the output
    out_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// (rows, in_stride); when INPLACE a placeholder (WGSL cannot bind one buffer as read and read_write)
@group(0) @binding(1) var<storage, read> x: array<f32>;
// (rows, out_stride); when INPLACE also the input
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> cos_t: array<f32>;  // (positions, half_dim)
@group(0) @binding(4) var<storage, read> sin_t: array<f32>;  // (positions, half_dim)

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
