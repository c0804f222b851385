// y = epilogue(x · Wᵀ + b) on cooperative matrices (tensor cores / simdgroup matrices).
// Same contract as matmul.wgsl (PyTorch Linear, W is [N, K]) minus LoRA, which stays on the FMA kernel
// (src/kernels/matmul_coop.rs says why).
// Program = coop_{f16x16,f32x8}.wgsl (operand type ab_t, tile side CS, coop_a/b/c) + quant.wgsl
// + activations.wgsl + this file.
// Wrapper: src/kernels/matmul_coop.rs. Reference: src/reference/matmul.rs.
//
// One workgroup is exactly one subgroup (WG = the adapter's fixed subgroup size): cooperative matrices
// have subgroup scope, so the whole workgroup takes part in every coop op, in uniform control flow.
// It owns a T×T output tile (T = 2·CS) held as 2×2 CS×CS accumulators. K is walked in steps of BK:
// the x tile and the dequantized W tile (each weight dequantized once per tile) are staged in
// workgroup memory as ab_t, then each CS-wide k slice is 4 loads and 4 multiply-adds.
// Accumulation is in f32 (coop_c). The accumulators go through workgroup memory (cs) so the epilogue
// can be applied per element with bounds checks: tiles at the edges of M and N are partial.
// Every coop load/store offset and stride is a multiple of 16 bytes (Vulkan's coop-matrix pointer rule
// on some drivers): strides BK·sizeof(ab_t) ≥ 32 B and T·4 ≥ 64 B, offsets multiples of CS elements.
// Epilogue order (as matmul.wgsl): + bias, activation, then gated residual r + gate ⊙ y.

override FORMAT: u32 = 0u;      // weight format, DType::shader_id()
override X_HALF: bool = false;  // x, y and r stored as packed f16 pairs instead of f32
override HAS_BIAS: bool = false;
override ACT: u32 = 3u;         // activations.wgsl id; 3 = none
override GATED: bool = false;   // y = r + gate ⊙ y
override WG: u32 = 32u;         // invocations per workgroup = the subgroup size

const T: u32 = 2u * CS;         // output tile side
const BK: u32 = 2u * CS;        // k per staged tile

struct Params {
    m: u32,         // rows of x / y
    n: u32,         // rows of W (output features)
    k: u32,
    gate_off: u32,  // offset of the gate vector in G
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> X: array<u32>;        // (M, K) f32 bits or f16 pairs
@group(0) @binding(2) var<storage, read> W: array<u32>;        // (N, K) in FORMAT's layout
@group(0) @binding(3) var<storage, read> BIAS: array<f32>;     // (N)
@group(0) @binding(4) var<storage, read_write> Y: array<u32>;  // (M, N), like X
@group(0) @binding(5) var<storage, read> R: array<u32>;        // (M, N) residual, like Y
@group(0) @binding(6) var<storage, read> G: array<f32>;        // (gate_off + N) gate

var<workgroup> xs: array<ab_t, T * BK>;  // (T, BK) row-major: x[m0 + i, k0 + k] = A, loaded row-major
var<workgroup> ws: array<ab_t, T * BK>;  // (T, BK): W[n0 + j, k0 + k] = B[k, j], i.e. B column-major
var<workgroup> cs: array<f32, T * T>;    // (T, T) row-major: the accumulators, for the epilogue

fn x_at(row: u32, k: u32) -> f32 {
    if (row >= p.m || k >= p.k) { return 0.0; }
    if (X_HALF) {
        let i = row * p.k + k;
        let v = unpack2x16float(X[i / 2u]);
        return select(v.x, v.y, (i & 1u) == 1u);
    }
    return bitcast<f32>(X[row * p.k + k]);
}

fn w_at(row: u32, k: u32) -> f32 {
    if (row >= p.n || k >= p.k) { return 0.0; }
    return dq(row, k, p.k);
}

fn r_at(i: u32) -> f32 {
    if (X_HALF) {
        let v = unpack2x16float(R[i / 2u]);
        return select(v.x, v.y, (i & 1u) == 1u);
    }
    return bitcast<f32>(R[i]);
}

fn finish(m: u32, n: u32, acc: f32) -> f32 {
    var v = acc;
    if (HAS_BIAS) { v += BIAS[n]; }
    v = activate(v, ACT);
    if (GATED) { v = r_at(m * p.n + n) + G[p.gate_off + n] * v; }
    return v;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let n0 = wid.x * T;
    let m0 = wid.y * T;
    var c00 = coop_c();
    var c01 = coop_c();
    var c10 = coop_c();
    var c11 = coop_c();
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var s = li; s < T * BK; s += WG) {
            let r = s / BK;
            let k = k0 + s % BK;
            xs[s] = ab_t(x_at(m0 + r, k));
            ws[s] = ab_t(w_at(n0 + r, k));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += CS) {
            let a0 = coopLoadT<coop_a>(&xs[kk], BK);
            let a1 = coopLoadT<coop_a>(&xs[CS * BK + kk], BK);
            let b0 = coopLoad<coop_b>(&ws[kk], BK);
            let b1 = coopLoad<coop_b>(&ws[CS * BK + kk], BK);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    coopStoreT(c00, &cs[0], T);
    coopStoreT(c01, &cs[CS], T);
    coopStoreT(c10, &cs[CS * T], T);
    coopStoreT(c11, &cs[CS * T + CS], T);
    workgroupBarrier();
    // Column pairs, so that f16 outputs are written as whole words (the wrapper keeps N even then).
    for (var e = li; e < T * T / 2u; e += WG) {
        let row = e / (T / 2u);
        let col = (e % (T / 2u)) * 2u;
        let m = m0 + row;
        let n = n0 + col;
        if (m < p.m && n < p.n) {
            let yi = m * p.n + n;
            let v0 = finish(m, n, cs[row * T + col]);
            if (X_HALF) {
                Y[yi / 2u] = pack2x16float(vec2<f32>(v0, finish(m, n + 1u, cs[row * T + col + 1u])));
            } else {
                Y[yi] = bitcast<u32>(v0);
                if (n + 1u < p.n) {
                    Y[yi + 1u] = bitcast<u32>(finish(m, n + 1u, cs[row * T + col + 1u]));
                }
            }
        }
    }
}
