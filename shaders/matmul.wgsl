// y = epilogue(x · Wᵀ + b + Σᵢ sᵢ·(x·Aᵢᵀ)·Bᵢᵀ)   (PyTorch Linear: W is [N, K]; `torch.nn.Linear` stores
// weight as (out_features, in_features), pytorch/pytorch torch/nn/modules/linear.py @ f2889c8)
// Program = precision_{f32,f16}.wgsl + quant.wgsl + activations.wgsl + this file.
// Wrapper: src/kernels/matmul.rs. Reference: src/reference/matmul.rs.
// CPU adapters with 8-lane subgroups (lavapipe) run matmul_sg.wgsl instead, appended to this file:
// there loads cost one per lane and workgroup-memory tiles only add loads (BENCHMARKS.md).
//
// Tiling: a 16×16 workgroup computes a 64×64 output tile; invocation (tx, ty) owns the 4×4 register
// block rows 4ty..4ty+3 × columns 4tx..4tx+3 (so one invocation owns both halves of every output word
// when y is stored as f16 pairs). K is walked in steps of 32: the x tile and the dequantized W tile are
// staged k-major in workgroup memory as vec4 of `tile_t` along m / n (each weight dequantized once per
// tile), and each k step is an outer product: 2 vec4 loads, 4 vec4 FMAs. Accumulators are named vec4s,
// not an array, so drivers keep them in registers.
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

// A dispatch may cover only a block of rows of x/y and of W when a tensor is larger than one storage
// binding: X, W, Y and R are then bound as ranges and indexed locally, everything indexed by output
// feature (bias, gate, LoRA, the y column) uses the global n = n_base + n, and T the global m.
struct Params {
    m: u32,         // rows of x / y in this dispatch
    n: u32,         // rows of W (output features) in this dispatch
    k: u32,
    x_stride: u32,  // elements between rows of x
    y_stride: u32,  // elements between rows of y (and r)
    y_col0: u32,    // first output column written in y
    t_stride: u32,  // columns of T
    gate_off: u32,  // offset of the gate vector in G
    m_base: u32,    // global row of this dispatch's first x row
    n_base: u32,    // global output feature of this dispatch's first W row
    _pad0: u32,
    _pad1: u32,
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

var<workgroup> xs: array<vec4<tile_t>, 512>;  // (BK, TILE/4): x[m0 + 4i .. 4i+3, k0 + k]
var<workgroup> ws: array<vec4<tile_t>, 512>;  // (BK, TILE/4): W[n0 + 4j .. 4j+3, k0 + k], dequantized

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

fn epilogue(m: u32, n_local: u32, acc: f32) {
    if (m >= p.m || n_local >= p.n) { return; }
    let n = p.n_base + n_local;
    var v = acc;
    if (HAS_BIAS) { v += BIAS[n]; }
    if (ADAPTERS > 0u) { v += lora(p.m_base + m, n); }
    v = activate(v, ACT);
    let yi = m * p.y_stride + p.y_col0 + n;
    if (GATED) { v = load_r(yi) + G[p.gate_off + n] * v; }
    store_y(yi, v);
}

fn epilogue_row(m: u32, n: u32, acc: vec4<f32>) {
    epilogue(m, n, acc.x);
    epilogue(m, n + 1u, acc.y);
    epilogue(m, n + 2u, acc.z);
    epilogue(m, n + 3u, acc.w);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let n0 = wid.x * TILE;
    let m0 = wid.y * TILE;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // 512 vec4 slots per operand tile, 256 invocations: two each.
        for (var s = li; s < 512u; s += 256u) {
            let k = k0 + s / 16u;
            let r = (s % 16u) * 4u;
            xs[s] = vec4<tile_t>(vec4<f32>(x_at(m0 + r, k), x_at(m0 + r + 1u, k),
                                           x_at(m0 + r + 2u, k), x_at(m0 + r + 3u, k)));
            ws[s] = vec4<tile_t>(vec4<f32>(w_at(n0 + r, k), w_at(n0 + r + 1u, k),
                                           w_at(n0 + r + 2u, k), w_at(n0 + r + 3u, k)));
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k++) {
            let a = xs[k * 16u + lid.y];
            let b = ws[k * 16u + lid.x];
            acc0 += vec4<f32>(a.x * b);
            acc1 += vec4<f32>(a.y * b);
            acc2 += vec4<f32>(a.z * b);
            acc3 += vec4<f32>(a.w * b);
        }
        workgroupBarrier();
    }
    let m = m0 + 4u * lid.y;
    let n = n0 + 4u * lid.x;
    epilogue_row(m, n, acc0);
    epilogue_row(m + 1u, n, acc1);
    epilogue_row(m + 2u, n, acc2);
    epilogue_row(m + 3u, n, acc3);
}

fn store_y(i: u32, v: f32) {
    if (X_HALF) {
        // Two outputs share a word. The wrapper keeps y_stride and y_col0 even, and each invocation
        // owns 4 consecutive columns, so this read-modify-write does not race.
        let w = Y[i / 2u];
        let old = unpack2x16float(w);
        let nv = select(vec2<f32>(v, old.y), vec2<f32>(old.x, v), (i & 1u) == 1u);
        Y[i / 2u] = pack2x16float(nv);
        return;
    }
    Y[i] = bitcast<u32>(v);
}
