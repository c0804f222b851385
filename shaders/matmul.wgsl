// y = epilogue(x · Wᵀ + b + Σᵢ sᵢ·(x·Aᵢᵀ)·Bᵢᵀ)   (PyTorch Linear: W is [N, K], FLUX_REFERENCE.md notation)
// Program = precision_{f32,f16}.wgsl + quant.wgsl + activations.wgsl + this file.
// Wrapper: src/kernels/matmul.rs. Reference: src/reference/matmul.rs.
//
// Tiling: a 16×16 workgroup computes a 64×64 output tile, each invocation a 4×4 register block:
// rows ty+16i and columns col(tx, j) = 2tx + (j&1) + 32(j>>1), so one invocation owns both halves of
// every output word when y is stored as f16 pairs. K is walked in steps of 32: the x tile and the dequantized W tile are
// staged in workgroup memory (each weight is dequantized once per tile), as vec4 of `tile_t`.
// Epilogue order: + bias, + LoRA up-projection, activation, then gated residual r + gate ⊙ y.
// The LoRA down-projections T = x·Aᵢᵀ are computed beforehand by this same kernel (FORMAT F32, no
// epilogue) into the columns of one [M, R] tensor; the epilogue adds sᵢ·T[m, rᵢ..]·Bᵢ[n − n0ᵢ, :]
// for outputs inside adapter i's row slice [n0ᵢ, n0ᵢ + lenᵢ) (e.g. only q of a fused qkv).

override FORMAT: u32 = 0u;      // weight format, DType::shader_id()
override X_HALF: bool = false;  // x, y and r stored as packed f16 pairs instead of f32
override HAS_BIAS: bool = false;
override ACT: u32 = 3u;         // activations.wgsl id; 3 = none
override GATED: bool = false;   // y = r + gate ⊙ y
override ADAPTERS: u32 = 0u;    // number of LoRA adapters in the epilogue (<= MAX_ADAPTERS)

const TILE: u32 = 64u;
const BK: u32 = 32u;
const BK4: u32 = 8u;            // BK / 4
const MAX_ADAPTERS: u32 = 8u;

struct Adapter {
    n0: u32,        // first output column (row of W) the adapter touches
    len: u32,       // number of output columns
    t_col: u32,     // first column of this adapter's rank block in T
    rank: u32,
    b_off: u32,     // offset of this adapter's B [len, rank] in LB (elements)
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

struct Params {
    m: u32,
    n: u32,
    k: u32,
    x_stride: u32,  // elements between rows of x
    y_stride: u32,  // elements between rows of y (and r)
    y_col0: u32,    // first output column written in y
    t_stride: u32,  // columns of T
    gate_off: u32,  // offset of the gate vector in G
    adapters: array<Adapter, MAX_ADAPTERS>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> X: array<u32>;        // (M, x_stride) f32 bits or f16 pairs
@group(0) @binding(2) var<storage, read> W: array<u32>;        // (N, K) in FORMAT's layout
@group(0) @binding(3) var<storage, read> BIAS: array<f32>;     // (N)
@group(0) @binding(4) var<storage, read_write> Y: array<u32>;  // (M, y_stride), like X
@group(0) @binding(5) var<storage, read> R: array<u32>;        // (M, y_stride) residual, like Y
@group(0) @binding(6) var<storage, read> G: array<f32>;        // (gate_off + N) gate
@group(0) @binding(7) var<storage, read> T: array<f32>;        // (M, t_stride) LoRA down outputs
@group(0) @binding(8) var<storage, read> LB: array<f32>;       // concatenated LoRA B matrices

var<workgroup> xs: array<vec4<tile_t>, 512>;  // (TILE rows, BK4) of x
var<workgroup> ws: array<vec4<tile_t>, 512>;  // (TILE rows, BK4) of W, dequantized

fn load_act(buf_index: u32) -> f32 {
    if (X_HALF) {
        let v = unpack2x16float(X[buf_index / 2u]);
        return select(v.x, v.y, (buf_index & 1u) == 1u);
    }
    return bitcast<f32>(X[buf_index]);
}

fn load_r(i: u32) -> f32 {
    if (X_HALF) {
        let v = unpack2x16float(R[i / 2u]);
        return select(v.x, v.y, (i & 1u) == 1u);
    }
    return bitcast<f32>(R[i]);
}

fn x_at(row: u32, k: u32) -> f32 {
    if (row >= p.m || k >= p.k) { return 0.0; }
    return load_act(row * p.x_stride + k);
}

fn w_at(row: u32, k: u32) -> f32 {
    if (row >= p.n || k >= p.k) { return 0.0; }
    return dq(row, k, p.k);
}

fn col(tx: u32, j: u32) -> u32 {
    return 2u * tx + (j & 1u) + 32u * (j >> 1u);
}

fn lora(m: u32, n: u32) -> f32 {
    var sum = 0.0;
    for (var a = 0u; a < ADAPTERS; a++) {
        let ad = p.adapters[a];
        if (n >= ad.n0 && n < ad.n0 + ad.len) {
            var s = 0.0;
            let b_row = ad.b_off + (n - ad.n0) * ad.rank;
            for (var r = 0u; r < ad.rank; r++) {
                s += T[m * p.t_stride + ad.t_col + r] * LB[b_row + r];
            }
            sum += ad.scale * s;
        }
    }
    return sum;
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let n0 = wid.x * TILE;
    let m0 = wid.y * TILE;
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // 512 vec4 slots per tile, 256 invocations: two each.
        for (var s = li; s < 512u; s += 256u) {
            let r = s / BK4;
            let kk = k0 + (s % BK4) * 4u;
            xs[s] = vec4<tile_t>(vec4<f32>(x_at(m0 + r, kk), x_at(m0 + r, kk + 1u),
                                           x_at(m0 + r, kk + 2u), x_at(m0 + r, kk + 3u)));
            ws[s] = vec4<tile_t>(vec4<f32>(w_at(n0 + r, kk), w_at(n0 + r, kk + 1u),
                                           w_at(n0 + r, kk + 2u), w_at(n0 + r, kk + 3u)));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK4; kk++) {
            var a: array<vec4<tile_t>, 4>;
            var b: array<vec4<tile_t>, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[(lid.y + 16u * i) * BK4 + kk];
                b[i] = ws[col(lid.x, i) * BK4 + kk];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] += f32(dot(a[i], b[j]));
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + lid.y + 16u * i;
        if (m >= p.m) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + col(lid.x, j);
            if (n >= p.n) { continue; }
            var v = acc[i][j];
            if (HAS_BIAS) { v += BIAS[n]; }
            if (ADAPTERS > 0u) { v += lora(m, n); }
            v = activate(v, ACT);
            let yi = m * p.y_stride + p.y_col0 + n;
            if (GATED) { v = load_r(yi) + G[p.gate_off + n] * v; }
            store_y(yi, v);
        }
    }
}

fn store_y(i: u32, v: f32) {
    if (X_HALF) {
        // Two outputs share a word. The wrapper keeps y_stride and y_col0 even, and col() gives both
        // columns of a pair to one invocation, so this read-modify-write does not race.
        let w = Y[i / 2u];
        let old = unpack2x16float(w);
        let nv = select(vec2<f32>(v, old.y), vec2<f32>(old.x, v), (i & 1u) == 1u);
        Y[i / 2u] = pack2x16float(nv);
        return;
    }
    Y[i] = bitcast<u32>(v);
}
