// Scaled dot-product attention, softmax(scale · q·kᵀ + bias) · v per head, with an online
// (flash-style) softmax: the [Lq, Lk] score matrix is never materialized, so memory is linear
// in the token count (FLUX at 1024² has 4608 tokens, 512 T5 tokens + 64² packed latents as diffusers'
// `FluxPipeline` builds them, src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c; IC-LoRA canvases
// 12k+). Reference: src/reference/attention.rs. Wrapper: src/kernels/attention.rs.
// Two entries: `attention` (any D, bias, causal mask) and `attention_tiled` (register-tiled, D = 64
// or 128, no bias or mask; chosen by the wrapper where it applies, see the end of this file).
//
// Layout (as BFL `SelfAttention` splits `B L (K H D)`, src/flux/modules/layers.py @ 802fb47): q, k, v are
// row-major [L, cols] matrices holding the heads side by side; head h of q is columns
// q_off + h*D .. q_off + h*D + D-1. The offsets and row strides let q/k/v be read straight out of a
// fused qkv [L, 9216] or linear1 [L, 21504] tensor.
//
// One workgroup = one head × BQ consecutive queries. It walks the keys in tiles of BK rows staged
// in workgroup memory, four barrier-separated phases per tile:
//   1. K tile -> kv;
//   2. partial dot products: score (i, j) is split into P strided slices of the head dim so that
//      all WG invocations have work even when BQ·BK < WG (D = 512 has BQ·BK = 8);
//   3. one invocation per query row sums the slices, applies scale/bias/mask, updates the running
//      max m and denominator l and leaves p = exp(s − m) in sp (V tile loads into kv meanwhile);
//   4. every invocation updates its outputs: acc = acc·exp(m_old − m_new) + Σ_j p_j·v_j.
// Rows in workgroup memory are padded to D+1 floats so that invocations reading different rows at
// the same column hit different banks.

override D: u32 = 128u;      // head dim (64 CLIP/T5, 128 FLUX, 512 VAE)
override BQ: u32 = 16u;      // queries per workgroup; BQ*D <= ACC*WG (checked by the wrapper)
override BK: u32 = 8u;       // keys per tile
override WG: u32 = 256u;     // invocations per workgroup (device limited)
override P: u32 = 2u;        // slices per score: max(1, WG / (BQ*BK))
override HAS_BIAS: bool = false; // add bias[h, i, j] to the scaled scores (T5 relative position bias)
override CAUSAL: bool = false;   // key j visible to query i iff j <= i (CLIP)

override DS: u32 = D + 1u;   // padded row stride in workgroup memory
override NS: u32 = BQ * BK;  // scores per tile
override R: u32 = (BQ * D + WG - 1u) / WG; // outputs owned by one invocation (<= ACC)

const ACC: u32 = 8u;
// Start value of the running max. Finite (WGSL has no infinity literal); a score equal to it still
// contributes exp(0)·..., so a row whose bias is finfo.min everywhere stays a uniform softmax as in torch.
const NEG: f32 = -3.4028234663852886e38;  // -f32::MAX written exactly: Chromium (Tint) rejects literals that round past it

struct Params {
    lq: u32,        // query rows
    lk: u32,        // key/value rows
    heads: u32,
    qblocks: u32,   // ceil(lq / BQ)
    q_stride: u32,  // row stride of q, in elements
    q_off: u32,     // first column of head 0 in q
    k_stride: u32,
    k_off: u32,
    v_stride: u32,
    v_off: u32,
    scale: f32,     // 1/sqrt(D) for FLUX/CLIP/VAE, 1 for T5
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;        // (lq, q_stride), heads at q_off + h*D
@group(0) @binding(2) var<storage, read> k: array<f32>;        // (lk, k_stride), heads at k_off + h*D
@group(0) @binding(3) var<storage, read> v: array<f32>;        // (lk, v_stride), heads at v_off + h*D
@group(0) @binding(4) var<storage, read_write> o: array<f32>;  // (lq, heads*D), head-major columns
@group(0) @binding(5) var<storage, read> bias: array<f32>;     // (heads, lq, lk); unread unless HAS_BIAS

var<workgroup> qs: array<f32, BQ * DS>;   // (BQ, D) queries of this block, rows padded
var<workgroup> kv: array<f32, BK * DS>;   // (BK, D) K tile, then V tile
var<workgroup> sp: array<f32, NS * P>;    // (P, BQ, BK) partial dots; then (BQ, BK) probabilities
var<workgroup> row_m: array<f32, BQ>;     // running max per query
var<workgroup> row_l: array<f32, BQ>;     // running denominator per query
var<workgroup> row_a: array<f32, BQ>;     // rescale factor of this tile, exp(m_old - m_new)

fn visible(qi: u32, kj: u32) -> bool {
    return kj < p.lk && (!CAUSAL || kj <= qi);
}

// Rows key0 .. key0+BK-1 of `src` (k or v) for head h into kv; rows past lk become zeros.
fn load_tile(tid: u32, key0: u32, h: u32, is_v: bool) {
    for (var e = tid; e < BK * D; e += WG) {
        let j = e / D;
        let d = e % D;
        let kj = key0 + j;
        var x = 0.0;
        if (kj < p.lk) {
            if (is_v) {
                x = v[kj * p.v_stride + p.v_off + h * D + d];
            } else {
                x = k[kj * p.k_stride + p.k_off + h * D + d];
            }
        }
        kv[j * DS + d] = x;
    }
}

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let blk = wid.y * nwg.x + wid.x;
    if (blk >= p.qblocks * p.heads) { return; } // uniform: the 2-D grid may overshoot
    let h = blk / p.qblocks;   // consecutive workgroups share a head, hence its K/V in cache
    let q0 = (blk % p.qblocks) * BQ;
    let tid = lid.x;

    for (var e = tid; e < BQ * D; e += WG) {
        let i = e / D;
        let d = e % D;
        var x = 0.0;
        if (q0 + i < p.lq) {
            x = q[(q0 + i) * p.q_stride + p.q_off + h * D + d];
        }
        qs[i * DS + d] = x;
    }
    for (var i = tid; i < BQ; i += WG) {
        row_m[i] = NEG;
        row_l[i] = 0.0;
    }
    var acc: array<f32, ACC>;
    for (var r = 0u; r < R; r++) {
        acc[r] = 0.0;
    }

    // With a causal mask, keys past the block's last query are invisible to all of its rows.
    var kend = p.lk;
    if (CAUSAL) {
        kend = min(p.lk, q0 + BQ);
    }
    for (var key0 = 0u; key0 < kend; key0 += BK) {
        load_tile(tid, key0, h, false);
        workgroupBarrier();

        for (var e = tid; e < NS * P; e += WG) {
            let s = e % NS;
            let part = e / NS;
            let qrow = (s / BK) * DS;
            let krow = (s % BK) * DS;
            var dot = 0.0;
            for (var d = part; d < D; d += P) {
                dot += qs[qrow + d] * kv[krow + d];
            }
            sp[e] = dot;
        }
        workgroupBarrier();

        load_tile(tid, key0, h, true); // kv is free: phase 2 was its last reader
        for (var i = tid; i < BQ; i += WG) {
            let qi = q0 + i;
            let m_old = row_m[i];
            var m_new = m_old;
            for (var j = 0u; j < BK; j++) {
                var s = 0.0;
                for (var part = 0u; part < P; part++) {
                    s += sp[part * NS + i * BK + j];
                }
                s *= p.scale;
                if (HAS_BIAS && qi < p.lq && key0 + j < p.lk) {
                    s += bias[(h * p.lq + qi) * p.lk + key0 + j];
                }
                // Slot (i, j) is read only by this invocation; slices part > 0 are no longer needed.
                sp[i * BK + j] = s;
                if (visible(qi, key0 + j)) {
                    m_new = max(m_new, s);
                }
            }
            var sum = 0.0;
            for (var j = 0u; j < BK; j++) {
                var pj = 0.0;
                if (visible(qi, key0 + j)) {
                    pj = exp(sp[i * BK + j] - m_new);
                }
                sp[i * BK + j] = pj;
                sum += pj;
            }
            let alpha = exp(m_old - m_new);
            row_a[i] = alpha;
            row_l[i] = row_l[i] * alpha + sum;
            row_m[i] = m_new;
        }
        workgroupBarrier();

        for (var r = 0u; r < R; r++) {
            let e = tid + r * WG;
            if (e < BQ * D) {
                let i = e / D;
                let d = e % D;
                var a = acc[r] * row_a[i];
                for (var j = 0u; j < BK; j++) {
                    a += sp[i * BK + j] * kv[j * DS + d];
                }
                acc[r] = a;
            }
        }
        workgroupBarrier(); // the next tile overwrites kv and sp
    }

    let o_stride = p.heads * D;
    for (var r = 0u; r < R; r++) {
        let e = tid + r * WG;
        let i = e / D;
        let qi = q0 + i;
        if (e < BQ * D && qi < p.lq) {
            let l = row_l[i];
            // l > 0 whenever a key is visible (the wrapper rejects lk = 0; causal rows see key 0).
            o[qi * o_stride + h * D + e % D] = select(0.0, acc[r] / l, l > 0.0);
        }
    }
}

// ---- Register-tiled path for D ∈ {64, 128} without bias or mask (FLUX joint attention) ----
// The general kernel above does about one FMA per workgroup-memory load. Here a 16×16 workgroup
// owns TQ = 64 queries; invocation (tx, ty) holds queries 4ty..4ty+3 against keys tx and tx+16 of
// each TK = 32-key tile as two vec4 score accumulators (named vectors, not arrays: arrays of
// accumulators spill on NVIDIA), and the O block of its 4 queries × columns 4tx.. (+64 for D = 128)
// as named vec4s. Per tile:
//   1. S = Q·Kᵀ over the head dim in chunks of DC: Q and K chunks staged in xs as vec4 rows, so one
//      pass of the inner loop is 6 vec4 loads for 32 FMAs;
//   2. scaled scores -> ps (key-major: the 4 queries of one invocation are one vec4); every
//      invocation reads its rows' scores and updates its own copy of the running max m (identical
//      across the 16 invocations of a row, so no reduction pass is needed) and rescales O and l;
//   3. p = exp(s − m) -> ps; V in chunks of KV keys through xs; O += p·V and l += p.
// One workgroup array xs serves every phase: the Q and K chunks (864 vec4) during 1, then the
// scores/probabilities (ps, 512 vec4 at the start) and a V chunk (256 vec4 after them): 13.5 KiB.
const TQ: u32 = 64u;                // queries per workgroup (16 invocation rows × 4)
const TK: u32 = 32u;                // keys per tile (16 invocation columns × 2)
const DC: u32 = 32u;                // head-dim chunk of Q and K staged per step
const CS: u32 = DC / 4u + 1u;       // chunk row stride in vec4, padded against bank conflicts
const XS: u32 = (TQ + TK) * CS;     // Q chunk + K chunk, or ps + V chunk (512 + KV*D/4 = 768 <= XS)
const PS: u32 = 0u;                 // ps: (TK, TQ/4) scores, then probabilities, of key j for queries 4t..4t+3 at PS + j*16 + t
const VS: u32 = TK * TQ / 4u;       // V chunk: (KV, D/4) after ps
override KV: u32 = 1024u / D;       // keys per staged V chunk (8 for D = 128, 16 for D = 64)

var<workgroup> xs: array<vec4<f32>, XS>;

fn store4(qi: u32, col: u32, x: vec4<f32>) {
    if (qi < p.lq) {
        let base = qi * p.heads * D + col;
        o[base] = x.x;
        o[base + 1u] = x.y;
        o[base + 2u] = x.z;
        o[base + 3u] = x.w;
    }
}

@compute @workgroup_size(256) // 16×16 logical: tx = tid % 16, ty = tid / 16
fn attention_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) tid: u32) {
    let blk = wid.y * nwg.x + wid.x;
    if (blk >= p.qblocks * p.heads) { return; } // uniform: the 2-D grid may overshoot
    let h = blk / p.qblocks;
    let q0 = (blk % p.qblocks) * TQ;
    let tx = tid % 16u;
    let ty = tid / 16u;
    let hq = p.q_off + h * D;
    let hk = p.k_off + h * D;
    let hv = p.v_off + h * D;
    let vs = D / 4u; // V chunk row stride in vec4

    var m = vec4<f32>(NEG);  // running max of queries 4ty..4ty+3
    var l = vec4<f32>(0.0);  // running denominators
    var o0 = vec4<f32>(0.0); // query 4ty+r, columns 4tx..4tx+3 (o0..o3) and 64+4tx.. (o4..o7, D = 128)
    var o1 = vec4<f32>(0.0);
    var o2 = vec4<f32>(0.0);
    var o3 = vec4<f32>(0.0);
    var o4 = vec4<f32>(0.0);
    var o5 = vec4<f32>(0.0);
    var o6 = vec4<f32>(0.0);
    var o7 = vec4<f32>(0.0);

    for (var key0 = 0u; key0 < p.lk; key0 += TK) {
        let kn = min(TK, p.lk - key0); // keys of this tile; later ones are never read from ps
        var s0 = vec4<f32>(0.0); // key tx
        var s1 = vec4<f32>(0.0); // key tx + 16
        for (var d0 = 0u; d0 < D; d0 += DC) {
            for (var e = tid; e < (TQ + TK) * DC; e += 256u) {
                let row = e / DC;
                let d = e % DC;
                var x = 0.0;
                if (row < TQ) {
                    if (q0 + row < p.lq) { x = q[(q0 + row) * p.q_stride + hq + d0 + d]; }
                } else if (key0 + row - TQ < p.lk) {
                    x = k[(key0 + row - TQ) * p.k_stride + hk + d0 + d];
                }
                xs[row * CS + d / 4u][d % 4u] = x;
            }
            workgroupBarrier();
            for (var c = 0u; c < DC / 4u; c++) {
                let qa = xs[(4u * ty) * CS + c];
                let qb = xs[(4u * ty + 1u) * CS + c];
                let qc = xs[(4u * ty + 2u) * CS + c];
                let qd = xs[(4u * ty + 3u) * CS + c];
                let ka = xs[(TQ + tx) * CS + c];
                let kb = xs[(TQ + tx + 16u) * CS + c];
                s0 += vec4<f32>(dot(qa, ka), dot(qb, ka), dot(qc, ka), dot(qd, ka));
                s1 += vec4<f32>(dot(qa, kb), dot(qb, kb), dot(qc, kb), dot(qd, kb));
            }
            workgroupBarrier(); // the next chunk (or ps) overwrites xs
        }
        s0 *= p.scale;
        s1 *= p.scale;
        xs[PS + tx * 16u + ty] = s0;
        xs[PS + (tx + 16u) * 16u + ty] = s1;
        workgroupBarrier();

        var mn = m;
        for (var j = 0u; j < kn; j++) {
            mn = max(mn, xs[PS + j * 16u + ty]);
        }
        let alpha = exp(m - mn);
        m = mn;
        l *= alpha;
        o0 *= alpha.x;
        o1 *= alpha.y;
        o2 *= alpha.z;
        o3 *= alpha.w;
        if (D > 64u) {
            o4 *= alpha.x;
            o5 *= alpha.y;
            o6 *= alpha.z;
            o7 *= alpha.w;
        }
        workgroupBarrier(); // all maxima read before ps is overwritten
        xs[PS + tx * 16u + ty] = exp(s0 - m);
        xs[PS + (tx + 16u) * 16u + ty] = exp(s1 - m);

        for (var j0 = 0u; j0 < kn; j0 += KV) {
            let jn = min(KV, kn - j0);
            for (var e = tid; e < KV * D; e += 256u) {
                let j = e / D;
                let d = e % D;
                var x = 0.0;
                if (j < jn) { x = v[(key0 + j0 + j) * p.v_stride + hv + d]; }
                xs[VS + j * vs + d / 4u][d % 4u] = x;
            }
            workgroupBarrier(); // also publishes the probabilities in ps
            for (var j = 0u; j < jn; j++) {
                let pj = xs[PS + (j0 + j) * 16u + ty];
                l += pj;
                let va = xs[VS + j * vs + tx];
                o0 += pj.x * va;
                o1 += pj.y * va;
                o2 += pj.z * va;
                o3 += pj.w * va;
                if (D > 64u) {
                    let vb = xs[VS + j * vs + 16u + tx];
                    o4 += pj.x * vb;
                    o5 += pj.y * vb;
                    o6 += pj.z * vb;
                    o7 += pj.w * vb;
                }
            }
            workgroupBarrier(); // the next V chunk, or the next tile's Q/K chunk, overwrites xs
        }
    }

    // l > 0: the wrapper rejects lk = 0 and every row sees all keys.
    let qi = q0 + 4u * ty;
    let col = h * D + 4u * tx;
    store4(qi, col, o0 / l.x);
    store4(qi + 1u, col, o1 / l.y);
    store4(qi + 2u, col, o2 / l.z);
    store4(qi + 3u, col, o3 / l.w);
    if (D > 64u) {
        store4(qi, col + 64u, o4 / l.x);
        store4(qi + 1u, col + 64u, o5 / l.y);
        store4(qi + 2u, col + 64u, o6 / l.z);
        store4(qi + 3u, col + 64u, o7 / l.w);
    }
}
