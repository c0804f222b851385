// Elementwise activations and binary ops on f32 tensors (activations.wgsl is prepended).
// Reference: src/reference/elementwise.rs. Wrapper: src/kernels/elementwise.rs.
//
// Each invocation handles one element; the grid is 2-D when the element count
// exceeds the per-dimension workgroup limit: index = (wid.y * nwg.x + wid.x) * WG + lid.x.

override WG: u32 = 256;
// unary: 0 = gelu_tanh, 1 = quick_gelu, 2 = silu, 3 = identity
// binary: 0 = add, 1 = mul, 2 = sub (b broadcast along rows)
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

@group(0) @binding(3) var<storage, read> b: array<f32>;        // binary: (b_len); gated_add: (n); masked_blend: target (rows, b_len)
@group(0) @binding(4) var<storage, read> gate: array<f32>;     // gated_add: (b_len); masked_blend: row thresholds (rows)

@compute @workgroup_size(WG)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let j = i % p.b_len;
    if (OP == 0u) {
        y[i] = a[i] + b[j];
    } else if (OP == 1u) {
        y[i] = a[i] * b[j];
    } else {
        y[i] = a[i] - b[j];
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

@group(0) @binding(5) var<storage, read> noise: array<f32>;    // masked_blend: (rows, b_len)
@group(0) @binding(6) var<storage, read> sigma: array<f32>;    // masked_blend: (1), the noise level to impose

// RePaint-style re-imposition of known content (IC-LoRA reference panels, `scale_noise` of
// src/diffusers/schedulers/scheduling_flow_match_euler_discrete.py @ 58eb52c:
// x_sigma = (1 − sigma)·x0 + sigma·noise): rows (tokens of b_len features) whose threshold is
// ≤ sigma are replaced by the target noised to sigma, the others keep a. A threshold of 0 imposes
// at every sigma (exactly the target at sigma = 0); one above 1 never imposes.
@compute @workgroup_size(WG)
fn masked_blend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let s = sigma[0];
    if (s >= gate[i / p.b_len]) {
        y[i] = (1.0 - s) * b[i] + s * noise[i];
    } else {
        y[i] = a[i];
    }
}
