// Weight dequantization (a library: no entry points). Reference: src/reference/quant.rs.
//
// Contract with the kernel that includes it: the kernel declares
//   override FORMAT: u32;                       // DType::shader_id()
//   var<storage, read> W: array<u32>;           // the weight tensor in its GPU layout
// GPU layouts (src/gpu/dtype.rs, src/weights/repack.rs): F32 one value per word; F16/BF16 two per word,
// element e in word e/2, low half first; quantized formats keep GGUF's block contents, each block padded
// to whole words with the scales first (ggml's `block_*` structs, src/ggml-common.h @ d99724f):
//   Q8_0 9 words  [d | qs 32×i8]          Q4_0 5 words [d | qs 16×u8]      Q4_1 5 words [d,m | qs]
//   Q5_0 6 words  [d | qh u32 | qs]       Q5_1 6 words [d,m | qh | qs]
//   Q4_K 36 words [d,dmin | scales 12 B | qs 128 B]      Q5_K 44 words [d,dmin | scales | qh 32 B | qs 128 B]
//   Q6_K 53 words [d | ql 128 B | qh 64 B | scales 16×i8]

const F_F32: u32 = 0u;
const F_F16: u32 = 1u;
const F_BF16: u32 = 2u;
const F_Q8_0: u32 = 3u;
const F_Q4_0: u32 = 4u;
const F_Q4_1: u32 = 5u;
const F_Q5_0: u32 = 6u;
const F_Q5_1: u32 = 7u;
const F_Q4_K: u32 = 8u;
const F_Q5_K: u32 = 9u;
const F_Q6_K: u32 = 10u;

// Byte `i` of the byte string that starts at word `w`.
fn wbyte(w: u32, i: u32) -> u32 {
    return (W[w + i / 4u] >> ((i % 4u) * 8u)) & 0xffu;
}

fn half_lo(w: u32) -> f32 {
    return unpack2x16float(W[w]).x;
}

fn half_hi(w: u32) -> f32 {
    return unpack2x16float(W[w]).y;
}

// 6-bit scale and min of sub-block s of a Q4_K/Q5_K super-block (ggml get_scale_min_k4);
// `sw` is the word where the 12 scale bytes start.
fn scale_min_k4(sw: u32, s: u32) -> vec2<f32> {
    if (s < 4u) {
        return vec2<f32>(f32(wbyte(sw, s) & 63u), f32(wbyte(sw, s + 4u) & 63u));
    }
    let sc = (wbyte(sw, s + 4u) & 0xfu) | ((wbyte(sw, s - 4u) >> 6u) << 4u);
    let mn = (wbyte(sw, s + 4u) >> 4u) | ((wbyte(sw, s) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(mn));
}

// Element k of row `row` of a weight with `k_len` elements per row.
fn dq(row: u32, k: u32, k_len: u32) -> f32 {
    switch FORMAT {
        case 0u: {
            return bitcast<f32>(W[row * k_len + k]);
        }
        case 1u: {
            let e = row * k_len + k;
            let v = unpack2x16float(W[e / 2u]);
            return select(v.x, v.y, (e & 1u) == 1u);
        }
        case 2u: {
            let e = row * k_len + k;
            let w = W[e / 2u];
            return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (e & 1u) == 1u));
        }
        case 3u: {
            let base = (row * (k_len / 32u) + k / 32u) * 9u;
            let j = k % 32u;
            let q = extractBits(bitcast<i32>(W[base + 1u + j / 4u]), (j % 4u) * 8u, 8u);
            return half_lo(base) * f32(q);
        }
        case 4u, 5u: {
            let base = (row * (k_len / 32u) + k / 32u) * 5u;
            let j = k % 32u;
            let b = wbyte(base + 1u, j % 16u);
            let q = f32(select(b & 0xfu, b >> 4u, j >= 16u));
            if (FORMAT == F_Q4_0) {
                return half_lo(base) * (q - 8.0);
            }
            return half_lo(base) * q + half_hi(base);
        }
        case 6u, 7u: {
            let base = (row * (k_len / 32u) + k / 32u) * 6u;
            let j = k % 32u;
            let b = wbyte(base + 2u, j % 16u);
            // High bit: bit j of qh for both halves (j < 16 uses bit j, j >= 16 bit (j-16)+16 = j).
            let hb = (W[base + 1u] >> j) & 1u;
            let q = f32(select(b & 0xfu, b >> 4u, j >= 16u) | (hb << 4u));
            if (FORMAT == F_Q5_0) {
                return half_lo(base) * (q - 16.0);
            }
            return half_lo(base) * q + half_hi(base);
        }
        case 8u, 9u: {
            let words = select(36u, 44u, FORMAT == F_Q5_K);
            let base = (row * (k_len / 256u) + k / 256u) * words;
            let j = k % 256u;
            let c = j / 64u;            // 64-element chunk
            let hi = (j % 64u) >= 32u;  // second 32 of the chunk uses the high nibbles
            let l = j % 32u;
            let s = 2u * c + select(0u, 1u, hi);
            let sm = scale_min_k4(base + 1u, s);
            let qs_word = select(base + 4u, base + 12u, FORMAT == F_Q5_K);
            let b = wbyte(qs_word, 32u * c + l);
            var q = select(b & 0xfu, b >> 4u, hi);
            if (FORMAT == F_Q5_K) {
                q += 16u * ((wbyte(base + 4u, l) >> s) & 1u);
            }
            return half_lo(base) * sm.x * f32(q) - half_hi(base) * sm.y;
        }
        case 10u: {
            let base = (row * (k_len / 256u) + k / 256u) * 53u;
            let j = k % 256u;
            let n = j / 128u;
            let g = (j % 128u) / 32u;   // which of the four 32-element quarters
            let l = j % 32u;
            let ql = wbyte(base + 1u, 64u * n + l + 32u * (g & 1u));
            let qh = wbyte(base + 33u, 32u * n + l);
            let q = i32(((ql >> (4u * (g >> 1u))) & 0xfu) | (((qh >> (2u * g)) & 3u) << 4u)) - 32;
            let sb = 8u * n + l / 16u + 2u * g;
            let sc = extractBits(bitcast<i32>(W[base + 49u + sb / 4u]), (sb % 4u) * 8u, 8u);
            return half_lo(base) * f32(sc) * f32(q);
        }
        default: {
            return 0.0;
        }
    }
}

// --- Whole-block decoding for kernels that read W as 16-byte vectors (matmul_sg.wgsl) -------------
// Pure functions of words already loaded (no binding access), so every program may include them.

// GPU words per 32 consecutive elements of a row: the 32-element block formats and F32/F16/BF16
// (0 for the 256-element K-quants, which these helpers do not cover).
fn block_words() -> u32 {
    switch FORMAT {
        case 0u: { return 32u; }
        case 1u, 2u: { return 16u; }
        case 3u: { return 9u; }
        case 4u, 5u: { return 5u; }
        case 6u, 7u: { return 6u; }
        default: { return 0u; }
    }
}

// 16 consecutive words, u0.x first.
struct Words16 {
    u0: vec4<u32>,
    u1: vec4<u32>,
    u2: vec4<u32>,
    u3: vec4<u32>,
}

// The words from `s` (0..3) on of four 16-byte vectors that start at an aligned word: a block whose
// first word is not 16-byte aligned is loaded as the aligned vectors around it and shifted here, in
// two select stages (by 1, then by 2 words), rather than by per-word dynamic indexing.
fn realign(v: Words16, s: u32) -> Words16 {
    let z = vec4<u32>(0u);
    let o = (s & 1u) != 0u;
    let t0 = select(v.u0, vec4<u32>(v.u0.yzw, v.u1.x), o);
    let t1 = select(v.u1, vec4<u32>(v.u1.yzw, v.u2.x), o);
    let t2 = select(v.u2, vec4<u32>(v.u2.yzw, v.u3.x), o);
    let t3 = select(v.u3, vec4<u32>(v.u3.yzw, 0u), o);
    let h = (s & 2u) != 0u;
    return Words16(select(t0, vec4<u32>(t0.zw, t1.xy), h), select(t1, vec4<u32>(t1.zw, t2.xy), h),
                   select(t2, vec4<u32>(t2.zw, t3.xy), h), select(t3, vec4<u32>(t3.zw, z.xy), h));
}

fn word16(b: Words16, i: u32) -> u32 {
    let q = i / 4u;
    let v = select(select(b.u0, b.u1, q == 1u), select(b.u2, b.u3, q == 3u), q >= 2u);
    return v[i % 4u];
}

// Elements 4c..4c+3 of a block of 32 whose words (block_words() of them, aligned: word 0 first) are
// `b`. Same arithmetic per element as dq() above, so results are identical. F32 is not decoded here
// (its 32 words do not fit): the caller reads it directly.
fn dq_block4(b: Words16, c: u32) -> vec4<f32> {
    switch FORMAT {
        case 1u: {
            let w = word16(b, 2u * c);
            let w2 = word16(b, 2u * c + 1u);
            return vec4<f32>(unpack2x16float(w), unpack2x16float(w2));
        }
        case 2u: {
            let w = vec2<u32>(word16(b, 2u * c), word16(b, 2u * c + 1u));
            return bitcast<vec4<f32>>(vec4<u32>(w.x << 16u, w.x & 0xffff0000u, w.y << 16u, w.y & 0xffff0000u));
        }
        case 3u: {
            let q = bitcast<vec4<i32>>(vec4<u32>(word16(b, 1u + c)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
            return unpack2x16float(b.u0.x).x * vec4<f32>(q);
        }
        case 4u, 5u, 6u, 7u: {
            let five = FORMAT >= F_Q5_0;
            let dm = unpack2x16float(b.u0.x);
            let qs = word16(b, select(1u, 2u, five) + c % 4u);
            let sh = vec4<u32>(0u, 8u, 16u, 24u) + select(0u, 4u, c >= 4u);
            var q = (vec4<u32>(qs) >> sh) & vec4<u32>(0xfu);
            if (five) {
                q |= ((vec4<u32>(b.u0.y) >> (vec4<u32>(0u, 1u, 2u, 3u) + 4u * c)) & vec4<u32>(1u)) << vec4<u32>(4u);
            }
            let qf = vec4<f32>(q);
            switch FORMAT {
                case 4u: { return dm.x * (qf - 8.0); }
                case 6u: { return dm.x * (qf - 16.0); }
                default: { return dm.x * qf + dm.y; }
            }
        }
        default: {
            return vec4<f32>(0.0);
        }
    }
}
