// Numerically stable softmax over the last dim of a row-major (rows, n) f32 tensor:
// y = exp(x − max) / Σ exp(x − max), max and sum in f32 (as the references upcast, e.g.
// `softmax(scores.float())` in `T5Attention`, src/transformers/models/t5/modeling_t5.py @ 6b8b757).
// Reference: src/reference/softmax.rs. Wrapper: src/kernels/softmax.rs.
//
// One workgroup per row (2-D grid when rows exceed the per-dimension limit:
// row = wid.y * nwg.x + wid.x). Each invocation keeps an online (max, sum) pair over the
// elements lid, lid+WG, ...; the row max M is the workgroup max of the running maxima, and the sum
// the workgroup sum of l·exp(m − M) (prelude_reduce.wgsl or prelude_reduce_sg.wgsl, prepended by
// the wrapper); a second pass writes the probabilities. Two reads of the row instead of three.

override WG: u32 = 256u;   // invocations per workgroup, a power of two (the wrapper rounds down)

// Start value of the running max: finite (WGSL has no infinity literal). A row of all −inf
// then gives 0/0 = NaN, as torch does.
const NEG: f32 = -3.4028234663852886e38;  // -f32::MAX written exactly: Chromium (Tint) rejects literals that round past it

struct Params {
    rows: u32,
    n: u32,      // row length (last dim)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;        // (rows, n)
@group(0) @binding(2) var<storage, read_write> y: array<f32>;  // (rows, n)

@compute @workgroup_size(WG)
fn softmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                lane: Lane) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) { return; } // uniform: the 2-D grid may overshoot
    let base = row * p.n;
    let t = lane.li;

    var m = NEG;
    var l = 0.0;
    for (var j = t; j < p.n; j += WG) {
        let xv = x[base + j];
        let m2 = max(m, xv);
        l = l * exp(m - m2) + exp(xv - m2);
        m = m2;
    }
    let mx = wg_max(lane, m);
    let inv = 1.0 / wg_sum(lane, vec4<f32>(l * exp(m - mx), 0.0, 0.0, 0.0)).x;
    for (var j = t; j < p.n; j += WG) {
        y[base + j] = exp(x[base + j] - mx) * inv;
    }
}
