//! What the parsers beyond the weight headers promise for any input, checked by the cargo-fuzz
//! targets (one per function) and by the in-test mutation runs (`tests/fuzz_mutations.rs`
//! includes this file), so both check the same things. Any panic, including these asserts, is a
//! finding; an unbounded allocation is one too (libFuzzer's `-rss_limit_mb`, `-malloc_limit_mb`).
#![allow(dead_code)]

use iclora::lora::parse::LoraAdapter;
use iclora::model::flux::FluxConfig;
use iclora::recipe::png::recipe_from_png;
use iclora::recipe::share::{base64url_decode, base64url_encode, from_fragment, to_fragment};
use iclora::reference::quant::dequantize;
use iclora::weights::fp8::{f8_to_f16_scaled, weight_scale};
use iclora::weights::load::{gpu_layout, read_floats, read_header, ByteSource, Convert, MemSource, CHUNK_BYTES};
use iclora::weights::repack::repack;
use iclora::weights::tensor_info::FileDType;
use iclora::Error;

/// The name every input is opened under; typed errors must name it.
pub const FILE: &str = "fuzz";

/// A share link (any text): a validated recipe that survives a round trip, or a typed error.
pub fn share_link(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match from_fragment(&text) {
        Ok(recipe) => {
            let again = from_fragment(&to_fragment(&recipe).expect("a recipe read from a link writes a link"));
            assert_eq!(again.as_ref(), Ok(&recipe), "a link's recipe does not survive a round trip");
        }
        Err(Error::BadShareLink(_) | Error::RecipeVersion { .. } | Error::InvalidRecipe { .. }) => {}
        Err(e) => panic!("untyped error {e:?}"),
    }
    // The fragment codec alone: decoding is the inverse of encoding.
    let encoded = base64url_encode(data);
    assert_eq!(base64url_decode(&encoded).as_deref(), Ok(data));
}

/// A dropped PNG: a recipe, none, or a typed error (never a large allocation: `recipe_from_png`
/// checks the header's dimensions before decoding and decodes row by row).
pub fn png_recipe(data: &[u8]) {
    // Also with every chunk's CRC made right: random bytes almost never carry a valid CRC, and
    // without this the decoder would stop at the first chunk.
    for bytes in [data.to_vec(), with_png_crcs(data)] {
        match recipe_from_png(FILE, &bytes) {
            Ok(_) | Err(Error::BadImage { .. } | Error::InvalidRecipe { .. } | Error::RecipeVersion { .. }) => {}
            Err(e @ Error::FileLimit { .. }) => assert!(e.to_string().contains(FILE), "{e}"),
            Err(e) => panic!("untyped error {e:?}"),
        }
    }
}

/// `data` with the CRC of every complete chunk after the 8-byte signature recomputed (chunks are
/// length, type, data, CRC; a length past the end stops the walk).
pub fn with_png_crcs(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = 8usize;
    while let Some(len) = out.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) {
        let Some(end) = at.checked_add(8).and_then(|e| e.checked_add(len)).filter(|&e| e + 4 <= out.len()) else {
            break;
        };
        let crc = crc32fast::hash(&out[at + 4..end]);
        out[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
    out
}

/// A FLUX config with every block kind and tiny widths (hidden 16, MLP 64), so that mutated LoRA
/// files reach the shape checks and the factor decoding.
pub fn tiny_flux() -> FluxConfig {
    FluxConfig {
        in_channels: 4,
        out_channels: 4,
        heads: 2,
        head_dim: 8,
        double_blocks: 1,
        single_blocks: 1,
        mlp_hidden: 64,
        context_dim: 8,
        pooled_dim: 8,
        guidance: true,
        axes_dim: vec![2, 2, 4],
        theta: 10000.0,
    }
}

/// A LoRA file (any bytes) for [`tiny_flux`]: modules whose factors have the shapes their targets
/// need, or a typed error naming the file.
pub fn lora(data: &[u8]) {
    let mut src = MemSource { name: FILE.into(), bytes: data.to_vec() };
    match LoraAdapter::load(&mut src, &tiny_flux()) {
        Ok(a) => {
            for m in a.modules.iter().chain(&a.clip) {
                assert!(
                    m.rank > 0 && m.a.len() == m.rank * m.target.k && m.b.len() == m.target.len * m.rank,
                    "{}",
                    m.key
                );
            }
        }
        Err(
            e @ (Error::Lora { .. }
            | Error::TensorShape { .. }
            | Error::Malformed { .. }
            | Error::UnsupportedFormat { .. }
            | Error::FileLimit { .. }),
        ) => assert!(e.to_string().contains(FILE), "{e}"),
        Err(e) => panic!("untyped error {e:?}"),
    }
}

/// A weights file (any bytes) through the CPU side of the tensor loader, tensor by tensor as
/// `weights::load` does before its GPU writes: GPU layout, weight scale, conversion choice, reads
/// in whole-block chunks, repacking, F8 widening (scaled), and the CPU dequantizer on the same
/// bytes. Sizes must agree with the layout; errors must be typed.
pub fn tensor_data(data: &[u8]) {
    let mut src = MemSource { name: FILE.into(), bytes: data.to_vec() };
    let header = match read_header(&mut src) {
        Ok(h) => h,
        Err(Error::Malformed { .. } | Error::UnsupportedFormat { .. }) => return,
        Err(e) => panic!("untyped header error {e:?}"),
    };
    for info in &header.tensors {
        let typed = |e: &Error| {
            matches!(e, Error::UnsupportedFormat { .. } | Error::Malformed { .. } | Error::LimitExceeded { .. })
        };
        let (shape, _) = match gpu_layout(FILE, info) {
            Ok(l) => l,
            Err(e) if typed(&e) => continue,
            Err(e) => panic!("untyped layout error {e:?}"),
        };
        let numel = if shape.contains(&0) {
            0
        } else {
            shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)).unwrap_or(u64::MAX)
        };
        assert_eq!(numel, info.numel(), "`{}`: the GPU layout {shape:?} changes the element count", info.name);
        let _ = Convert::for_tensor(info, Convert::Q4_0);
        let scale = match weight_scale(&mut src, &header, info) {
            Ok(s) => s,
            Err(e) if typed(&e) => continue,
            Err(e) => panic!("untyped weight_scale error {e:?}"),
        };
        match read_floats(&mut src, info) {
            Ok(Some(v)) => assert_eq!(v.len() as u64, info.numel(), "`{}`", info.name),
            Ok(None) => {}
            Err(e) => panic!("read_floats of a tensor inside the file failed: {e:?}"),
        }
        // The loader's chunking: whole blocks (quantized), 2 bytes (F8), 4 bytes (else); a
        // small chunk here so that fuzz inputs cross chunk boundaries.
        let unit = match info.dtype {
            FileDType::Gpu(d) if d.is_quantized() => d.gguf_block_bytes(),
            FileDType::F8E4M3 | FileDType::F8E5M2 => 2,
            _ => 4,
        };
        let chunk = (64usize.min(CHUNK_BYTES) / unit).max(1) * unit;
        let (mut done, mut out_bytes) = (0u64, 0u64);
        while done < info.size {
            let n = chunk.min((info.size - done) as usize);
            let bytes = src.read_range(info.offset + done, n).expect("a range inside the file reads");
            let staged = match info.dtype {
                FileDType::Gpu(d) => match repack(d, &bytes) {
                    Ok(r) => {
                        if let Ok(v) = dequantize(d, &bytes) {
                            assert_eq!(
                                v.len() * d.gguf_block_bytes(),
                                bytes.len() * d.block_elems(),
                                "`{}`",
                                info.name
                            );
                        }
                        r
                    }
                    // A float tensor whose size is not whole elements (2-byte F16 in a 4-byte
                    // chunk is fine; an odd byte count is not) is refused by shape, not a panic.
                    Err(Error::ShapeMismatch { .. }) => break,
                    Err(e) => panic!("untyped repack error {e:?}"),
                },
                FileDType::F8E4M3 | FileDType::F8E5M2 => {
                    match f8_to_f16_scaled(info.dtype, &bytes, scale, &info.name) {
                        Ok(r) => r,
                        Err(e) if typed(&e) => break,
                        Err(e) => panic!("untyped f8 error {e:?}"),
                    }
                }
                FileDType::Other { .. } => unreachable!("gpu_layout refuses other formats"),
            };
            assert_eq!(staged.len() % 4, 0, "`{}`: staged chunk is not whole words", info.name);
            out_bytes += staged.len() as u64;
            done += n as u64;
        }
        if done == info.size {
            assert_eq!(out_bytes, expected_gpu_bytes(info.dtype, info.size, chunk as u64), "`{}`", info.name);
        }
    }
}

/// GPU bytes the loader writes for `size` file bytes read in `chunk`-byte pieces: quantized blocks
/// grow to whole words, F8 doubles to F16, floats pad each chunk to words.
fn expected_gpu_bytes(dtype: FileDType, size: u64, chunk: u64) -> u64 {
    let per_chunk = |n: u64| match dtype {
        FileDType::Gpu(d) if d.is_quantized() => n / d.gguf_block_bytes() as u64 * d.gpu_block_words() as u64 * 4,
        FileDType::F8E4M3 | FileDType::F8E5M2 => (n * 2).div_ceil(4) * 4,
        _ => n.div_ceil(4) * 4,
    };
    (size / chunk) * per_chunk(chunk) + per_chunk(size % chunk)
}
