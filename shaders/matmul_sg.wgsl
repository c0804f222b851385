// The matmul of matmul.wgsl (same bindings, params and epilogue) for CPU adapters with subgroups,
// where the JIT runs each subgroup of 8 invocations as one 8-lane SIMD vector (lavapipe on AVX2).
// Program = precision_f32.wgsl + quant.wgsl + activations.wgsl + matmul.wgsl + this file; the
// wrapper (src/kernels/matmul.rs) picks it only on such adapters, with K a multiple of 32.
//
// Why a second kernel: on a CPU adapter every storage or workgroup-memory load whose address differs
// per invocation is one scalar load per lane (there are no gathers), while arithmetic is 8-wide. So
// the cost is the number of loads per FMA, not memory latency, and workgroup-memory tiles only add
// loads. Here nothing is staged: each subgroup owns an 8 × (8·4) output tile; lane l loads one
// 4-wide k chunk of x row m0 + l (one 16-byte load) and shares it with the other lanes through
// subgroupBroadcast (a register shuffle), and loads the weights of its own 4 output columns as whole
// 16-byte vectors (a 32-element block of Q4_0 is 2 loads, Q8_0 3, F16 4, F32 8), decoded once in
// registers (quant.wgsl: dq_block4). Each chunk is then 8 rows × 4 columns × 4 k of FMAs
// (acc_r += x_r · Wm, Wm = the 4 columns' vec4s) for 1 + 4·(loads per chunk) loads.
// Sums run over k in the same order as matmul.wgsl's, 4 products at a time.

override SGS: u32 = 4u;  // subgroups (of 8 rows) per workgroup, stacked along m

@group(0) @binding(9) var<storage, read> W4: array<vec4<u32>>;   // binding 2's buffer as 16-byte vectors
@group(0) @binding(10) var<storage, read> X4: array<vec4<u32>>;  // binding 1's buffer as 16-byte vectors

// 8 rows' accumulators for one lane's 4 columns.
struct Acc8 {
    a0: vec4<f32>,
    a1: vec4<f32>,
    a2: vec4<f32>,
    a3: vec4<f32>,
    a4: vec4<f32>,
    a5: vec4<f32>,
    a6: vec4<f32>,
    a7: vec4<f32>,
}

// x[row, k .. k+3]; rows past the end read the last row (their outputs are not stored).
fn x_chunk(row: u32, k: u32) -> vec4<f32> {
    let i = min(row, p.m - 1u) * p.x_stride + k;
    if (X_HALF) {
        return vec4<f32>(unpack2x16float(X[i / 2u]), unpack2x16float(X[i / 2u + 1u]));
    }
    return bitcast<vec4<f32>>(X4[i / 4u]);
}

// The words of 32-element block `b` of W row `row` (clamped like x_chunk), realigned to word 0.
fn w_block(row: u32, b: u32) -> Words16 {
    let base = (min(row, p.n - 1u) * (p.k / 32u) + b) * block_words();
    let q = base / 4u;
    var v = Words16(W4[q], vec4<u32>(0u), vec4<u32>(0u), vec4<u32>(0u));
    if (block_words() > 4u) { v.u1 = W4[q + 1u]; }
    if (block_words() > 5u) { v.u2 = W4[q + 2u]; }
    if (block_words() > 12u) { v.u3 = W4[q + 3u]; }
    return realign(v, base % 4u);
}

// Weights k0 + 4c .. +3 of row `row`, from its block `blk` (F32 and the K-quants read W directly).
fn w_chunk(blk: Words16, row: u32, k0: u32, c: u32) -> vec4<f32> {
    let r = min(row, p.n - 1u);
    let k = k0 + 4u * c;
    if (FORMAT == F_F32) {
        return bitcast<vec4<f32>>(W4[(r * p.k + k) / 4u]);
    }
    if (FORMAT >= F_Q4_K) {
        return vec4<f32>(dq(r, k, p.k), dq(r, k + 1u, p.k), dq(r, k + 2u, p.k), dq(r, k + 3u, p.k));
    }
    return dq_block4(blk, c);
}

// acc_r += x_r · wm for the 8 rows, x_r = lane r's chunk.
fn fma8(acc: Acc8, xv: vec4<f32>, wm: mat4x4<f32>) -> Acc8 {
    return Acc8(acc.a0 + subgroupBroadcast(xv, 0u) * wm, acc.a1 + subgroupBroadcast(xv, 1u) * wm,
                acc.a2 + subgroupBroadcast(xv, 2u) * wm, acc.a3 + subgroupBroadcast(xv, 3u) * wm,
                acc.a4 + subgroupBroadcast(xv, 4u) * wm, acc.a5 + subgroupBroadcast(xv, 5u) * wm,
                acc.a6 + subgroupBroadcast(xv, 6u) * wm, acc.a7 + subgroupBroadcast(xv, 7u) * wm);
}

@compute @workgroup_size(8 * SGS)
fn main_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32,
           @builtin(subgroup_invocation_id) lane: u32) {
    let n = wid.x * 32u + 4u * lane;            // this lane's 4 columns
    let m = (wid.y * SGS + li / 8u) * 8u;       // this subgroup's 8 rows
    let z = vec4<f32>(0.0);
    var acc = Acc8(z, z, z, z, z, z, z, z);
    let kq = FORMAT == F_F32 || FORMAT >= F_Q4_K;  // no block decoding
    for (var b = 0u; b < p.k / 32u; b++) {
        let k0 = b * 32u;
        var b0: Words16;
        var b1: Words16;
        var b2: Words16;
        var b3: Words16;
        if (!kq) {
            b0 = w_block(n, b);
            b1 = w_block(n + 1u, b);
            b2 = w_block(n + 2u, b);
            b3 = w_block(n + 3u, b);
        }
        for (var c = 0u; c < 8u; c++) {
            let wm = mat4x4<f32>(w_chunk(b0, n, k0, c), w_chunk(b1, n + 1u, k0, c),
                                 w_chunk(b2, n + 2u, k0, c), w_chunk(b3, n + 3u, k0, c));
            acc = fma8(acc, x_chunk(m + lane, k0 + 4u * c), wm);
        }
    }
    epilogue_row(m, n, acc.a0);
    epilogue_row(m + 1u, n, acc.a1);
    epilogue_row(m + 2u, n, acc.a2);
    epilogue_row(m + 3u, n, acc.a3);
    epilogue_row(m + 4u, n, acc.a4);
    epilogue_row(m + 5u, n, acc.a5);
    epilogue_row(m + 6u, n, acc.a6);
    epilogue_row(m + 7u, n, acc.a7);
}
