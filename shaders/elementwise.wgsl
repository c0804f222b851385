// Elementwise activations and binary ops on f32 tensors (activations.wgsl is prepended).
// Reference: src/reference/elementwise.rs. Wrapper: src/kernels/elementwise.rs.
//
// Each invocation handles one element; the grid is 2-D when the element count
// exceeds the per-dimension workgroup limit: index = (wid.y * nwg.x + wid.x) * WG + lid.x.

override WG: u32 = 256;
// unary: 0 = gelu_tanh, 1 = quick_gelu, 2 = silu, 3 = identity
// binary: 0 = add, 1 = mul (b broadcast along rows)
override OP: u32 = 0;

struct Params {
    n: u32,      // number of output elements
    b_len: u32,  // elements of b (and c); b is repeated every b_len elements (row broadcast)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;        // (n)
@group(0) @binding(2) var<storage, read_write> y: array<f32>;  // (n)

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(WG)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    y[i] = activate(a[i], OP);
}

@group(0) @binding(3) var<storage, read> b: array<f32>;        // binary: (b_len); gated_add: (n)
@group(0) @binding(4) var<storage, read> gate: array<f32>;     // gated_add: (b_len)

@compute @workgroup_size(WG)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let j = i % p.b_len;
    if (OP == 0u) {
        y[i] = a[i] + b[j];
    } else {
        y[i] = a[i] * b[j];
    }
}

// Gated residual `a + gate ⊙ b` (FLUX: x + gate · block(x)), gate broadcast along rows.
@compute @workgroup_size(WG)
fn gated_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    y[i] = a[i] + gate[i % p.b_len] * b[i];
}
