// Whole-tensor reductions that end in one number read back by the CPU. Reference:
// src/reference/reduce.rs. Wrapper: src/kernels/reduce.rs.
//
// abs_diff_sums: for two f32 tensors a, b of n elements, the partial sums Σ|a − b| and Σ|b| of
// each workgroup: the step cache's relative L1 distance mean|a − b| / mean|b| between this step's
// first-block residual (a) and the last computed step's (b) is their ratio once the CPU adds the
// partials (in f64). A fixed, small number of workgroups strides over the tensor (grid-stride
// loop), each invocation accumulating its elements in f32; a workgroup sum (prelude_reduce.wgsl or
// prelude_reduce_sg.wgsl, prepended by the wrapper) merges them. The read-back is 2 · groups floats, however large the tensor.

override WG: u32 = 256u;   // invocations per workgroup, a power of two (the wrapper rounds down)

struct Params {
    n: u32,       // elements of a and b
    groups: u32,  // workgroups dispatched (the stride is groups · WG)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;            // (n)
@group(0) @binding(2) var<storage, read> b: array<f32>;            // (n)
@group(0) @binding(3) var<storage, read_write> sums: array<f32>;   // (groups, 2): Σ|a − b|, Σ|b|

@compute @workgroup_size(WG)
fn abs_diff_sums(@builtin(workgroup_id) wid: vec3<u32>, lane: Lane) {
    let t = lane.li;
    var d = 0.0;
    var s = 0.0;
    for (var i = wid.x * WG + t; i < p.n; i += p.groups * WG) {
        let bv = b[i];
        d += abs(a[i] - bv);
        s += abs(bv);
    }
    let r = wg_sum(lane, vec4<f32>(d, s, 0.0, 0.0));
    if (t == 0u) {
        sums[2u * wid.x] = r.x;
        sums[2u * wid.x + 1u] = r.y;
    }
}
