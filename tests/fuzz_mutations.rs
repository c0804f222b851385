//! Short in-test fuzz runs of the parsers beyond the weight headers (share links, PNG recipes,
//! LoRA files, the CPU side of the tensor loader), with the same checks as the cargo-fuzz targets
//! (`fuzz/fuzz_targets/checks.rs`), and the committed seed corpus (`fuzz/seeds/<target>/`, with
//! the regression files of what the fuzzers found) run through them on every test run.
//! `write_fuzz_seeds` (ignored) rewrites the generated seeds from the same valid inputs.

#[path = "../fuzz/fuzz_targets/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

use iclora::gpu::DType;
use iclora::lora::parse::LoraAdapter;
use iclora::recipe::png::{encode_png, recipe_from_png, KEYWORD};
use iclora::recipe::presets::task_preset;
use iclora::recipe::share::to_fragment;
use iclora::recipe::{ModelSource, Recipe};
use iclora::reference::random::{weight_bytes, Rng};
use iclora::weights::gguf::write_gguf;
use iclora::weights::load::MemSource;
use iclora::weights::safetensors::write_safetensors;
use iclora::weights::tensor_info::{FileDType, MetaValue, TensorData};

type Check = fn(&[u8]);

/// The fuzz targets: name (= seed folder), check.
const TARGETS: [(&str, Check); 4] = [
    ("share_link", checks::share_link),
    ("png_recipe", checks::png_recipe),
    ("lora", checks::lora),
    ("tensor_data", checks::tensor_data),
];

fn recipe() -> Recipe {
    let mut r = task_preset("film-storyboard").unwrap().example_recipe(ModelSource::Preset("tiny".into()), 42);
    r.captions.overall = "Ein Fest 🎆 «天空»".into();
    r
}

fn tensor(rng: &mut Rng, name: &str, shape: &[u64], dtype: FileDType) -> TensorData {
    let numel: u64 = shape.iter().product();
    let data = match dtype {
        FileDType::Gpu(d) => weight_bytes(rng, d, numel as usize, 0.5, 0.05),
        _ => rng.bytes(numel as usize),
    };
    TensorData { name: name.into(), shape: shape.to_vec(), dtype, data }
}

/// A LoRA for `checks::tiny_flux` (hidden 16, MLP 64) in three key formats, with a CLIP module.
fn lora_file(rng: &mut Rng) -> Vec<u8> {
    let (f16, r) = (FileDType::Gpu(DType::F16), 2);
    let tensors = [
        tensor(rng, "transformer.transformer_blocks.0.attn.to_q.lora_A.weight", &[r, 16], f16),
        tensor(rng, "transformer.transformer_blocks.0.attn.to_q.lora_B.weight", &[16, r], f16),
        tensor(rng, "lora_unet_single_blocks_0_linear1.lora_down.weight", &[r, 16], FileDType::Gpu(DType::BF16)),
        tensor(rng, "lora_unet_single_blocks_0_linear1.lora_up.weight", &[112, r], FileDType::Gpu(DType::BF16)),
        tensor(rng, "lora_unet_single_blocks_0_linear1.alpha", &[], FileDType::Gpu(DType::F32)),
        tensor(rng, "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", &[r, 8], f16),
        tensor(rng, "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", &[8, r], f16),
    ];
    write_safetensors(&[], &tensors).unwrap()
}

/// Weights files with every format the loader reads: a GGUF of block formats and floats, and a
/// ComfyUI scaled-fp8 safetensors file.
fn weights_files(rng: &mut Rng) -> Vec<Vec<u8>> {
    let g = |d: DType| FileDType::Gpu(d);
    let quant = [DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q4K, DType::Q5K, DType::Q6K];
    let mut gguf: Vec<TensorData> =
        quant.iter().map(|&d| tensor(rng, &format!("q.{d}.weight"), &[2, d.block_elems() as u64], g(d))).collect();
    gguf.push(tensor(rng, "f.bias", &[3], g(DType::F32)));
    gguf.push(tensor(rng, "h.weight", &[2, 3], g(DType::F16)));
    let meta = [("general.architecture".to_string(), MetaValue::Str("flux".into()))];
    let st = [
        tensor(rng, "l.weight", &[3, 5], FileDType::F8E4M3),
        TensorData {
            name: "l.scale_weight".into(),
            shape: vec![],
            dtype: g(DType::F32),
            data: 0.5f32.to_le_bytes().to_vec(),
        },
        tensor(rng, "m.weight", &[2, 3], FileDType::F8E5M2),
        tensor(rng, "n.weight", &[3], g(DType::BF16)),
    ];
    vec![write_gguf(&meta, &gguf).unwrap(), write_safetensors(&[], &st).unwrap()]
}

/// Valid inputs of each target, from which mutations start (and the generated seeds).
fn bases(target: &str) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(7);
    match target {
        "share_link" => vec![to_fragment(&recipe()).unwrap().into_bytes()],
        "png_recipe" => {
            let rgb = rng.bytes(4 * 4 * 3);
            vec![encode_png(4, 4, &rgb, Some(&recipe())).unwrap(), encode_png(2, 1, &rgb[..6], None).unwrap()]
        }
        "lora" => vec![lora_file(&mut rng)],
        "tensor_data" => weights_files(&mut rng),
        other => panic!("no target {other}"),
    }
}

/// One to four random edits: a byte set, a bit flipped, an 8-byte field set to a value parsers
/// find interesting, or the input cut short.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
    let interesting = [0u64, 1, 7, 0x7fff_ffff, 1 << 31, 1 << 32, 1 << 60, u64::MAX, u64::MAX / 2];
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            return;
        }
        let at = rng.below(b.len());
        match rng.below(5) {
            0 => b[at] = rng.next_u64() as u8,
            1 => b[at] ^= 1 << rng.below(8),
            2 if at + 8 <= b.len() => {
                let v = interesting[rng.below(interesting.len())].wrapping_add(rng.below(3) as u64);
                b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            3 if at + 4 <= b.len() => {
                b[at..at + 4].copy_from_slice(&(rng.next_u64() as u32 >> rng.below(32)).to_be_bytes())
            }
            _ => b.truncate(at),
        }
    }
}

#[test]
fn the_bases_are_valid_inputs() {
    let recipe = recipe();
    assert_eq!(
        iclora::recipe::share::from_fragment(std::str::from_utf8(&bases("share_link")[0]).unwrap()).unwrap(),
        recipe
    );
    assert_eq!(recipe_from_png("base.png", &bases("png_recipe")[0]).unwrap(), Some(recipe));
    let mut src = MemSource { name: "base".into(), bytes: bases("lora").remove(0) };
    let lora = LoraAdapter::load(&mut src, &checks::tiny_flux()).unwrap();
    assert_eq!((lora.modules.len(), lora.clip.len()), (2, 1), "{}", lora.report.summary());
    for b in bases("tensor_data") {
        let h = iclora::weights::load::read_header(&mut MemSource { name: "base".into(), bytes: b }).unwrap();
        assert!(h.tensors.len() >= 4);
    }
}

/// 3,000 mutated inputs per target (and the bases themselves) through the fuzz targets' checks.
#[test]
fn mutated_inputs_never_panic() {
    for (target, check) in TARGETS {
        let bases = bases(target);
        let mut rng = Rng::new(11);
        for b in &bases {
            check(b);
        }
        for iter in 0..3000 {
            let mut b = bases[iter % bases.len()].clone();
            mutate(&mut rng, &mut b);
            let caught = std::panic::catch_unwind(|| check(&b));
            assert!(
                caught.is_ok(),
                "{target}: iteration {iter} panicked on {} bytes: {:02x?}",
                b.len(),
                &b[..b.len().min(256)]
            );
        }
    }
}

/// PNG mutations that keep every CRC right reach the decoder and the recipe JSON; a recipe text
/// that is mutated (and re-encoded) reaches the recipe parser.
#[test]
fn mutated_recipe_text_in_pngs_is_refused_or_valid() {
    let json = iclora::recipe::png::ascii_json(&recipe().to_json().unwrap()).into_bytes();
    let mut rng = Rng::new(12);
    for _ in 0..1000 {
        let mut text = json.clone();
        mutate(&mut rng, &mut text);
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, 1, 1);
        enc.set_color(png::ColorType::Rgb);
        // tEXt is Latin-1: any byte is a character.
        enc.add_text_chunk(KEYWORD.into(), text.iter().map(|&c| c as char).collect()).unwrap();
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(&[1, 2, 3]).unwrap();
        wr.finish().unwrap();
        checks::png_recipe(&out);
    }
}

fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target)
}

/// Every committed seed and regression file passes its target's checks, and each file listed in
/// a folder's `EXPECTED` gives an error whose message contains its text.
#[test]
fn committed_seeds_pass_the_checks() {
    for (target, check) in TARGETS {
        let dir = seeds_dir(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() != "EXPECTED" {
                check(&std::fs::read(&path).unwrap());
                n += 1;
            }
        }
        assert!(n > 0, "no seeds in {}", dir.display());
        let Ok(expected) = std::fs::read_to_string(dir.join("EXPECTED")) else { continue };
        for (file, needle) in expected.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once('\t')) {
            let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{target}/{file}: {e}"));
            let message = match target {
                "png_recipe" => recipe_from_png(file, &bytes).map(|_| ()),
                "share_link" => iclora::recipe::share::from_fragment(&String::from_utf8_lossy(&bytes)).map(|_| ()),
                "lora" => {
                    LoraAdapter::load(&mut MemSource { name: file.into(), bytes }, &checks::tiny_flux()).map(|_| ())
                }
                _ => iclora::weights::load::read_header(&mut MemSource { name: file.into(), bytes }).map(|_| ()),
            }
            .expect_err(file)
            .to_string();
            assert!(message.contains(needle), "{target}/{file}: `{message}` does not contain `{needle}`");
        }
    }
}

/// Writes the bases as `fuzz/seeds/<target>/base-<i>` (run by hand after changing them:
/// `cargo test --release --test fuzz_mutations -- --ignored`).
#[test]
#[ignore]
fn write_fuzz_seeds() {
    for (target, _) in TARGETS {
        std::fs::create_dir_all(seeds_dir(target)).unwrap();
        for (i, b) in bases(target).iter().enumerate() {
            std::fs::write(seeds_dir(target).join(format!("base-{i}")), b).unwrap();
        }
    }
}
