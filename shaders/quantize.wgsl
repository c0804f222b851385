// Weight conversion on the GPU while loading: F32/F16/BF16 elements → F16, Q8_0 or Q4_0 in our GPU
// layout (quant.wgsl is prepended; its `dq` decodes the input `W`). Reference: src/reference/quantize.rs.
// Wrapper: src/kernels/quantize.rs. Output layouts (src/gpu/dtype.rs, src/weights/repack.rs):
//   F16  two elements per word, low half first
//   Q8_0 9 words per 32 elements  [d f16, pad | qs 32×i8]
//   Q4_0 5 words per 32 elements  [d f16, pad | qs 16×u8, byte j = q[j] | q[j+16] << 4]
//
// Quantization is ggml's `quantize_row_q8_0_ref` / `quantize_row_q4_0_ref` (ggml src/ggml-quants.c,
// layouts in src/ggml-common.h, both @ d99724f), reproduced bit for bit: WGSL only promises correctly
// rounded +, −, ×, while ggml divides (d = amax/127, id = 1/d) and rounds f32 → f16 with
// round-to-nearest-even. So divisions and the f16 rounding are done in integer arithmetic here
// (`div_rn`, `f16_bits`), and everything after the one
// product `x · id` reads that product's bits (`round_away`, `trunc_plus_8_5`): no float add follows a
// multiply, so a compiler cannot fuse them into an fma and change a rounding.
// Blocks whose largest magnitude is below TINY = 2^-100 are written as d = 0 with the codes of an all-zero
// block (ggml's 1/d would overflow for the smallest of them; any d below 2^-25 is 0 in f16 anyway).
//
// One invocation per output word (F16) or per 32-element block; 2-D grid for large tensors:
// index = (wid.y * nwg.x + wid.x) * WG + lid.x.

override WG: u32 = 256;
// FORMAT (the input's DType::shader_id, 0 F32 / 1 F16 / 2 BF16) is declared by quant.wgsl's contract:
override FORMAT: u32 = 0u;

struct Params {
    items: u32,     // output words (to_f16) or blocks (to_q8_0, to_q4_0) in this dispatch
    n: u32,         // input elements
    dst_word: u32,  // first word of the output within the bound range of Y
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;         // (n) input elements in FORMAT's GPU layout
@group(0) @binding(2) var<storage, read_write> Y: array<u32>;   // (dst_word + output words) target layout

const TINY: f32 = 7.888609052210118e-31;  // 2^-100

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// Input element e (float formats index flat, so row 0 with any row length).
fn x_at(e: u32) -> f32 {
    return dq(0u, e, 0u);
}

// f32 → f16 bits, round to nearest even (what ggml's GGML_FP32_TO_FP16 and Rust's `half` do), overflow to
// ±inf, f16 subnormals kept; f32 subnormals become ±0. Integer-only, so no driver rounding mode is involved.
fn f16_bits(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    let sign = (b >> 16u) & 0x8000u;
    let ef = (b >> 23u) & 0xffu;
    let m = b & 0x7fffffu;
    if (ef == 255u) {
        return sign | 0x7c00u | select(0u, 0x200u | (m >> 13u), m != 0u);
    }
    let e = i32(ef) - 127;
    if (e > 15) {
        return sign | 0x7c00u;
    }
    if (e >= -14) {
        // Normal: a carry out of the mantissa correctly bumps the exponent (up to inf).
        var h = (u32(e + 15) << 10u) | (m >> 13u);
        let rest = m & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) == 1u)) {
            h = h + 1u;
        }
        return sign | h;
    }
    if (e < -25 || ef == 0u) {
        return sign;
    }
    // Subnormal f16: units of 2^-24; the value is mf · 2^(e-23), i.e. mf >> s units.
    let mf = m | 0x800000u;
    let s = u32(-(e + 1));  // 14..24
    var h = mf >> s;
    let rest = mf & ((1u << s) - 1u);
    let half = 1u << (s - 1u);
    if (rest > half || (rest == half && (h & 1u) == 1u)) {
        h = h + 1u;
    }
    return sign | h;
}

// a / b correctly rounded (IEEE round to nearest even) for positive normal a, b with a normal quotient:
// 24 quotient bits by long division of the mantissas, the remainder decides the rounding.
fn div_rn(a: f32, b: f32) -> f32 {
    let ab = bitcast<u32>(a);
    let bb = bitcast<u32>(b);
    var ma = (ab & 0x7fffffu) | 0x800000u;
    let mb = (bb & 0x7fffffu) | 0x800000u;
    var e = i32((ab >> 23u) & 0xffu) - i32((bb >> 23u) & 0xffu);
    if (ma < mb) {
        ma = ma << 1u;
        e = e - 1;
    }
    var q = 0u;
    var r = ma;
    for (var i = 0u; i < 24u; i = i + 1u) {
        q = q << 1u;
        if (r >= mb) {
            r = r - mb;
            q = q | 1u;
        }
        r = r << 1u;
    }
    // r is twice the remainder: above mb means more than half an ulp.
    if (r > mb || (r == mb && (q & 1u) == 1u)) {
        q = q + 1u;
    }
    if (q == 0x1000000u) {
        q = q >> 1u;
        e = e + 1;
    }
    return bitcast<f32>((u32(e + 127) << 23u) | (q & 0x7fffffu));
}

// C's roundf (halves away from zero) of a product's bits, clamped to the i8 range.
fn round_away(v: f32) -> i32 {
    let b = bitcast<u32>(v);
    let e = i32((b >> 23u) & 0xffu) - 127;
    var r = 0u;
    if (e >= 7) {
        r = 127u;
    } else if (e >= -1) {
        let m = (b & 0x7fffffu) | 0x800000u;
        let s = u32(23 - e);  // 17..24
        r = min((m >> s) + ((m >> (s - 1u)) & 1u), 127u);
    }
    return select(i32(r), -i32(r), (b >> 31u) == 1u);
}

// ggml's Q4_0 code MIN(15, (int8_t)(v + 8.5f)) for v in about [-8, 8]: the f32 sum rounded to nearest even,
// then truncated — in integers. S = floor((v + 8.5) · 2^25) plus a sticky bit for what lies below.
fn trunc_plus_8_5(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    let ef = (b >> 23u) & 0xffu;
    let e = i32(ef) - 127;
    let neg = (b >> 31u) == 1u;
    if (e >= 4) {
        return select(15u, 0u, neg);  // |v| ≥ 16: far outside the code range
    }
    let m = select((b & 0x7fffffu) | 0x800000u, 0u, ef == 0u);
    // |v| · 2^25 = m · 2^(e+2)
    var a = 0u;
    var sticky = false;
    let sh = e + 2;
    if (sh >= 0) {
        a = m << u32(sh);
    } else if (sh > -32) {
        a = m >> u32(-sh);
        sticky = (m & ((1u << u32(-sh)) - 1u)) != 0u;
    } else {
        sticky = m != 0u;
    }
    let h = 285212672u;  // 8.5 · 2^25
    if (neg && a + select(0u, 1u, sticky) > h) {
        return 0u;  // v < -8.5
    }
    var s = h + a;
    if (neg) {
        s = h - a - select(0u, 1u, sticky);
    }
    if (s < 0x1000000u) {
        return 0u;  // v + 8.5 < 0.5
    }
    // Keep 24 significant bits of S (plus sticky), rounding to nearest even like the f32 addition.
    let k = firstLeadingBit(s) + 1u - 24u;
    let dropped = s & ((1u << k) - 1u);
    let half = 1u << (k - 1u);
    var r = s >> k;
    if (dropped > half || (dropped == half && (sticky || (r & 1u) == 1u))) {
        r = r + 1u;
    }
    return min((r << k) >> 25u, 15u);
}

@compute @workgroup_size(WG)
fn to_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.items) { return; }
    let lo = f16_bits(x_at(2u * i));
    var hi = 0u;
    if (2u * i + 1u < p.n) {
        hi = f16_bits(x_at(2u * i + 1u));
    }
    Y[p.dst_word + i] = lo | (hi << 16u);
}

@compute @workgroup_size(WG)
fn to_q8_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let blk = index(wid, nwg, lid);
    if (blk >= p.items) { return; }
    var x: array<f32, 32>;
    var amax = 0.0;
    for (var j = 0u; j < 32u; j = j + 1u) {
        x[j] = x_at(blk * 32u + j);
        amax = max(amax, abs(x[j]));
    }
    var d = 0.0;
    var id = 0.0;
    if (amax >= TINY) {
        d = div_rn(amax, 127.0);
        id = div_rn(1.0, d);
    }
    let base = p.dst_word + blk * 9u;
    Y[base] = f16_bits(d);
    for (var w = 0u; w < 8u; w = w + 1u) {
        var word = 0u;
        for (var c = 0u; c < 4u; c = c + 1u) {
            let q = round_away(x[4u * w + c] * id);
            word = word | ((bitcast<u32>(q) & 0xffu) << (8u * c));
        }
        Y[base + 1u + w] = word;
    }
}

@compute @workgroup_size(WG)
fn to_q4_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let blk = index(wid, nwg, lid);
    if (blk >= p.items) { return; }
    var x: array<f32, 32>;
    // The signed value of largest magnitude, the first one on ties (ggml: `if (amax < fabsf(v))`).
    var amax = 0.0;
    var mx = 0.0;
    for (var j = 0u; j < 32u; j = j + 1u) {
        x[j] = x_at(blk * 32u + j);
        if (amax < abs(x[j])) {
            amax = abs(x[j]);
            mx = x[j];
        }
    }
    var d = 0.0;
    var id = 0.0;
    if (amax >= TINY) {
        d = mx * -0.125;  // = max / -8, exact
        let r = div_rn(1.0, abs(d));
        id = select(r, -r, d < 0.0);
    }
    let base = p.dst_word + blk * 5u;
    Y[base] = f16_bits(d);
    for (var w = 0u; w < 4u; w = w + 1u) {
        var word = 0u;
        for (var c = 0u; c < 4u; c = c + 1u) {
            let j = 4u * w + c;
            let lo = trunc_plus_8_5(x[j] * id);
            let hi = trunc_plus_8_5(x[j + 16u] * id);
            word = word | ((lo | (hi << 4u)) << (8u * c));
        }
        Y[base + 1u + w] = word;
    }
}
