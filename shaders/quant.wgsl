// Weight dequantization (a library: no entry points). Reference: src/reference/quant.rs.
//
// Contract with the kernel that includes it: the kernel declares
//   override FORMAT: u32;                       // DType::shader_id()
//   var<storage, read> W: array<u32>;           // the weight tensor in its GPU layout
// GPU layouts (src/gpu/dtype.rs, src/weights/repack.rs): F32 one value per word; F16/BF16 two per word,
// element e in word e/2, low half first; quantized formats keep GGUF's block contents, each block padded
// to whole words with the scales first (FLUX_REFERENCE.md §7.3):
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
