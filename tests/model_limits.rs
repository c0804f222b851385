//! Hostile numbers in the files the loaders read (`crate::limits`): a `config.json` with
//! `num_layers: 4000000000`, tensor names that claim block 3999999999, a LoRA of rank 2000 or of
//! gigabytes of factors, an oversized config or tokenizer file. Each must be a typed
//! `Error::FileLimit` naming the file, before anything is allocated from the number (without the
//! caps these allocate per layer, e.g. `Vec::with_capacity(num_layers)`, and abort).

mod common;

use common::gpu;
use iclora::error::Error;
use iclora::lora::parse::LoraAdapter;
use iclora::model::clip::{ClipConfig, ClipTextEncoder};
use iclora::model::flux::{FluxConfig, FluxModel};
use iclora::model::t5::{T5Config, T5Encoder};
use iclora::model::vae::{Vae, VaeConfig, VaeParts};
use iclora::pipeline::components::{resolve, resolve_tokenizer};
use iclora::pipeline::store::ModelStore;
use iclora::weights::load::{read_header, ByteSource, FileSource};
use iclora::weights::safetensors::write_safetensors;
use iclora::weights::tensor_info::{FileDType, TensorData, WeightsHeader};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden");

fn text(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/{name}")).unwrap()
}

fn open(name: &str) -> (FileSource, WeightsHeader) {
    let mut src = FileSource::open(format!("{DIR}/{name}")).unwrap();
    let header = read_header(&mut src).unwrap();
    (src, header)
}

/// The golden config `name` with `key` set to `value` (a JSON literal).
fn hostile(name: &str, key: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&text(name)).unwrap();
    v[key] = serde_json::from_str(value).unwrap();
    v.to_string()
}

/// Asserts a `FileLimit` error about `what` naming `file`.
#[track_caller]
fn assert_limit<T>(result: iclora::Result<T>, file: &str, what: &str) {
    match result.map(|_| ()) {
        Err(e @ Error::FileLimit { .. }) => {
            let message = e.to_string();
            assert!(message.contains(file) && message.contains(what), "{message}");
        }
        other => panic!("expected FileLimit about {what} in {file}, got {other:?}"),
    }
}

#[test]
fn hostile_t5_configs_are_refused() {
    let file = "t5/config.json";
    assert_limit(
        T5Config::from_json(file, &hostile("t5_text.config.json", "num_layers", "4000000000")),
        file,
        "num_layers",
    );
    assert_limit(T5Config::from_json(file, &hostile("t5_text.config.json", "num_heads", "100000")), file, "num_heads");
    assert_limit(
        T5Config::from_json(file, &hostile("t5_text.config.json", "d_ff", "18446744073709551615")),
        file,
        "d_ff",
    );
    // A config built in code reaches the loader's own check.
    let (mut src, header) = open("t5_text.safetensors");
    let mut c = T5Config::from_json(file, &text("t5_text.config.json")).unwrap();
    c.layers = 4_000_000_000;
    assert_limit(T5Encoder::load(gpu(), &mut src, &header, Some(c)), "t5_text.safetensors", "num_layers");
}

#[test]
fn hostile_clip_configs_are_refused() {
    let file = "clip/config.json";
    assert_limit(
        ClipConfig::from_json(file, &hostile("clip_text.config.json", "num_hidden_layers", "4000000000")),
        file,
        "num_hidden_layers",
    );
    assert_limit(
        ClipConfig::from_json(file, &hostile("clip_text.config.json", "max_position_embeddings", "4000000000")),
        file,
        "max_position",
    );
    let (mut src, header) = open("clip_text.safetensors");
    let mut c = ClipConfig::from_json(file, &text("clip_text.config.json")).unwrap();
    c.layers = 4_000_000_000;
    assert_limit(
        ClipTextEncoder::load(gpu(), &mut src, &header, Some(c)),
        "clip_text.safetensors",
        "num_hidden_layers",
    );
}

#[test]
fn hostile_vae_configs_are_refused() {
    assert_limit(
        VaeConfig::from_diffusers_json(&hostile("vae_tiny.config.json", "layers_per_block", "4000000000")),
        "VAE config.json",
        "layers_per_block",
    );
    let levels = format!("[{}]", vec!["32"; 1000].join(","));
    assert_limit(
        VaeConfig::from_diffusers_json(&hostile("vae_tiny.config.json", "block_out_channels", &levels)),
        "VAE config.json",
        "levels",
    );
    let (mut src, header) = open("vae_tiny.safetensors");
    let mut c = VaeConfig::from_diffusers_json(&text("vae_tiny.config.json")).unwrap();
    c.layers_per_block = 4_000_000_000;
    assert_limit(
        Vae::load(gpu(), &mut src, &header, Some(c), VaeParts::BOTH),
        "vae_tiny.safetensors",
        "layers_per_block",
    );
}

#[test]
fn hostile_flux_configs_are_refused() {
    let name = "flux_dev.config.json";
    assert_limit(
        FluxConfig::from_diffusers_json(&hostile(name, "num_layers", "4000000000")),
        "FLUX config.json",
        "double blocks",
    );
    assert_limit(
        FluxConfig::from_diffusers_json(&hostile(name, "num_single_layers", "4000000000")),
        "FLUX config.json",
        "single blocks",
    );
    // Heads × head dim used to overflow into a small MLP width.
    assert_limit(
        FluxConfig::from_diffusers_json(&hostile(name, "num_attention_heads", "4611686018427387904")),
        "FLUX config.json",
        "num_attention_heads",
    );
    let (mut src, mut header) = open("flux_dev.safetensors");
    let mut c = FluxConfig::from_diffusers_json(&text(name)).unwrap();
    c.single_blocks = 4_000_000_000;
    assert_limit(FluxModel::load(gpu(), &mut src, &header, Some(c)), "flux_dev.safetensors", "single blocks");
    // Without a config the block count comes from the highest block index in the tensor names.
    let mut t = header.tensors[0].clone();
    let prefix = header.tensors.iter().find_map(|t| t.name.strip_suffix("x_embedder.weight")).unwrap().to_string();
    t.name = format!("{prefix}transformer_blocks.3999999999.norm1.linear.bias");
    t.size = 0;
    t.shape = vec![0];
    header.tensors.push(t);
    assert_limit(FluxConfig::infer(&header), "flux_dev.safetensors", "double blocks");
}

/// A LoRA file in memory: `tensors` as a safetensors header, reads past it return zeros, and the
/// file claims `len` bytes (so a header can describe gigabytes without the test holding them).
struct Sparse {
    head: Vec<u8>,
    len: u64,
}

impl ByteSource for Sparse {
    fn name(&self) -> &str {
        "sparse.safetensors"
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_range(&mut self, offset: u64, len: usize) -> iclora::Result<Vec<u8>> {
        let mut out = vec![0u8; len];
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.head.get(offset as usize + i).copied().unwrap_or(0);
        }
        Ok(out)
    }
}

/// A LoRA of `modules` single-block `linear1` modules of `rank` in F8 (one byte per weight) for
/// FLUX.1-dev, as a sparse file (header only).
fn sparse_lora(modules: usize, rank: u64) -> Sparse {
    let c = FluxConfig::flux1_dev();
    let (k, n) = (c.hidden() as u64, (3 * c.hidden() + c.mlp_hidden) as u64);
    let mut names = Vec::new();
    for i in 0..modules {
        names.push((format!("lora_unet_single_blocks_{i}_linear1.lora_down.weight"), vec![rank, k]));
        names.push((format!("lora_unet_single_blocks_{i}_linear1.lora_up.weight"), vec![n, rank]));
    }
    // Write the header with one-byte stand-ins, then patch the shapes and offsets in the JSON.
    let small: Vec<TensorData> = names
        .iter()
        .map(|(name, _)| TensorData { name: name.clone(), shape: vec![1], dtype: FileDType::F8E4M3, data: vec![0] })
        .collect();
    let file = write_safetensors(&[], &small).unwrap();
    let n_json = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let mut json: serde_json::Value = serde_json::from_slice(&file[8..8 + n_json]).unwrap();
    let mut offset = 0u64;
    for (name, shape) in &names {
        let size: u64 = shape.iter().product();
        json[name] = serde_json::json!({ "dtype": "F8_E4M3", "shape": shape, "data_offsets": [offset, offset + size] });
        offset += size;
    }
    let json = json.to_string().into_bytes();
    let mut head = (json.len() as u64).to_le_bytes().to_vec();
    head.extend_from_slice(&json);
    let len = head.len() as u64 + offset;
    Sparse { head, len }
}

#[test]
fn hostile_lora_ranks_and_sizes_are_refused() {
    let c = FluxConfig::flux1_dev();
    // Rank 2000: a few MB of file, but over the rank cap.
    let mut src = sparse_lora(1, 2000);
    assert_limit(LoraAdapter::load(&mut src, &c), "sparse.safetensors", "LoRA rank");
    // 24 modules of rank 1024 on FLUX's widest Linear: 600 MB of F8 that would decode to 2.4 GB of
    // f32; refused before the first factor is read.
    let mut src = sparse_lora(24, 1024);
    assert_limit(LoraAdapter::load(&mut src, &c), "sparse.safetensors", "decoded to f32");
    // Under both caps, the same layout loads (the zeros are valid F8).
    let mut src = sparse_lora(1, 16);
    assert_eq!(LoraAdapter::load(&mut src, &c).unwrap().modules[0].rank, 16);
}

#[test]
fn oversized_config_and_tokenizer_files_are_refused() {
    let dir = std::env::temp_dir().join(format!("iclora-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(format!("{DIR}/vae_tiny.safetensors"), dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    // A config padded past 1 MiB with whitespace (valid JSON, so only the size cap refuses it).
    let mut config = text("vae_tiny.config.json");
    config.push_str(&" ".repeat(1 << 20));
    std::fs::write(dir.join("config.json"), &config).unwrap();
    let d = dir.display().to_string();
    let err = resolve(&ModelStore::new(), "VAE", Some(&d), None, "diffusion_pytorch_model")
        .err()
        .expect("an oversized config.json is refused");
    assert!(err.to_string().contains("size of a config file") && err.to_string().contains("config.json"), "{err}");
    std::fs::write(dir.join("config.json"), text("vae_tiny.config.json")).unwrap();
    assert!(resolve(&ModelStore::new(), "VAE", Some(&d), None, "diffusion_pytorch_model").is_ok());
    // A tokenizer.json over 64 MiB (sparse on disk: nothing is written but its length).
    std::fs::File::create(dir.join("tokenizer.json")).unwrap().set_len(65 << 20).unwrap();
    let err = resolve_tokenizer(&ModelStore::new(), "CLIP tokenizer", Some(&d), None)
        .err()
        .expect("an oversized tokenizer.json is refused");
    assert!(err.to_string().contains("size of a tokenizer file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn too_many_tensors_in_a_safetensors_header_are_refused() {
    // 70,000 one-byte tensors: a 3 MB header, under the header cap, over the tensor cap.
    let tensors: Vec<TensorData> = (0..70_000)
        .map(|i| TensorData { name: format!("t{i}"), shape: vec![1], dtype: FileDType::F8E4M3, data: vec![0] })
        .collect();
    let bytes = write_safetensors(&[], &tensors).unwrap();
    let result = iclora::weights::safetensors::parse_safetensors_header(&bytes, bytes.len() as u64, "many.safetensors");
    match result {
        Err(e @ Error::Malformed { .. }) => assert!(e.to_string().contains("more than 65536 tensors"), "{e}"),
        other => panic!("expected Malformed, got {:?}", other.map(|_| ())),
    }
}
