//! The TAEF1 preview decoder (src/model/taef1.rs) against diffusers' `AutoencoderTiny` on a
//! random-weight config with TAEF1's structure at width 16 (fixtures from
//! tools/golden/make_taef1_fixtures.py): decodes of a 4×4 and a 5×3 latent and of a large-valued
//! latent (the tanh clamp), in diffusers names and in the original `taef1_decoder` names; the
//! config reader; typed errors for missing or mis-shaped tensors and unsupported configs.
//!
//! Tolerance (`assert_close`: relative to max(|expected|, rms)): 1e-4. f32 throughout on the same
//! f16-rounded weights, so only summation order differs; through 20 convolutions the observed
//! error is ~1e-6.

mod common;

use common::{assert_close, gpu};
use iclora::gpu::Tensor;
use iclora::model::taef1::{TinyDecoder, TinyDecoderConfig};
use iclora::weights::load::{read_header, FileSource, MemSource};
use iclora::weights::safetensors::{file_dtype, write_safetensors};
use iclora::weights::tensor_info::{TensorData, WeightsHeader};
use iclora::Error;
use safetensors::SafeTensors;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden");
const RTOL: f32 = 1e-4;

fn io(key: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(format!("{DIR}/taef1_tiny.io.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap_or_else(|_| panic!("fixture has no `{key}`"));
    let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    (t.shape().to_vec(), v)
}

fn config() -> TinyDecoderConfig {
    let file = format!("{DIR}/taef1_tiny/config.json");
    TinyDecoderConfig::from_diffusers_json(&file, &std::fs::read(&file).unwrap()).unwrap()
}

fn decode(dec: &TinyDecoder, key: &str) -> (Vec<usize>, Vec<f32>) {
    let g = gpu();
    let (shape, z) = io(key);
    let z: Tensor = g.upload_f32(&shape, &z).unwrap();
    let mut b = g.batch();
    let y = dec.decode(g, &mut b, &z).unwrap();
    g.submit(b).unwrap();
    (y.shape().to_vec(), g.read_f32_blocking(&y).unwrap())
}

fn check_all(dec: &TinyDecoder, what: &str) {
    for (h, w, key) in [(4, 4, "dec4x4"), (5, 3, "dec5x3"), (4, 5, "big")] {
        let (shape, got) = decode(dec, &format!("{key}/z"));
        assert_eq!(shape, [3, 8 * h, 8 * w]);
        assert_close(&format!("{what}: {key}"), &got, &io(&format!("{key}/image")).1, RTOL);
    }
}

#[test]
fn config_reads_diffusers_json_with_taef1_defaults() {
    let c = config();
    assert_eq!(c, TinyDecoderConfig { latent_channels: 16, channels: 16, blocks: vec![3, 3, 3, 1], out_channels: 3 });
    assert_eq!(c.upscale(), 8);
    assert_eq!(TinyDecoderConfig::from_diffusers_json("c", b"{}").unwrap(), TinyDecoderConfig::taef1());
    for (json, needle) in [
        (r#"{"act_fn": "silu"}"#, "act_fn"),
        (r#"{"upsample_fn": "bilinear"}"#, "upsample_fn"),
        (r#"{"upsampling_scaling_factor": 4}"#, "upsampling_scaling_factor"),
        (r#"{"decoder_block_out_channels": [64, 32, 64, 64]}"#, "one width per level"),
        (r#"{"decoder_block_out_channels": [64, 64], "num_decoder_blocks": [3, 3, 1]}"#, "one width per level"),
        (r#"{"num_decoder_blocks": "three"}"#, "not a list"),
        ("not json", "not JSON"),
    ] {
        let r = TinyDecoderConfig::from_diffusers_json("c.json", json.as_bytes());
        assert!(
            matches!(&r, Err(Error::InvalidArgument(m)) if m.contains(needle) && m.contains("c.json")),
            "{json}: {r:?}"
        );
    }
    // Counts from a file are capped before anything is allocated from them.
    let huge = format!(r#"{{"num_decoder_blocks": [3, 3, 3, {}]}}"#, 1u64 << 40);
    let r = TinyDecoderConfig::from_diffusers_json("c.json", huge.as_bytes());
    assert!(matches!(r, Err(Error::FileLimit { .. })), "{r:?}");
}

#[test]
fn decode_matches_diffusers() {
    let mut src = FileSource::open(format!("{DIR}/taef1_tiny/diffusion_pytorch_model.safetensors")).unwrap();
    let header = read_header(&mut src).unwrap();
    let dec = TinyDecoder::load(gpu(), &mut src, &header, Some(config())).unwrap();
    check_all(&dec, "diffusers names");
}

/// The fixture's decoder tensors rewritten by `rename` (`None`: dropped); `reshape` changes one
/// tensor's shape (its data cut or padded to fit).
fn rewritten(rename: impl Fn(&str) -> Option<String>, reshape: Option<(&str, Vec<u64>)>) -> (MemSource, WeightsHeader) {
    let bytes = std::fs::read(format!("{DIR}/taef1_tiny/diffusion_pytorch_model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        let Some(name) = rename(&name) else { continue };
        let dtype = file_dtype(&format!("{:?}", view.dtype())).unwrap();
        let mut shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
        let mut data = view.data().to_vec();
        if let Some((target, s)) = &reshape {
            if name == *target {
                let elem = data.len() / shape.iter().product::<u64>() as usize;
                data.resize(s.iter().product::<u64>() as usize * elem, 0);
                shape = s.clone();
            }
        }
        tensors.push(TensorData { name, shape, dtype, data });
    }
    let mut src = MemSource { name: "rewritten.safetensors".into(), bytes: write_safetensors(&[], &tensors).unwrap() };
    let header = read_header(&mut src).unwrap();
    (src, header)
}

/// `decoder.layers.{i}.rest` → `{i + 1}.rest` (the original taef1_decoder file: its Sequential
/// starts with the clamp); encoder tensors dropped (that file has none).
fn original_name(k: &str) -> Option<String> {
    let rest = k.strip_prefix("decoder.layers.")?;
    let (i, tail) = rest.split_once('.')?;
    Some(format!("{}.{tail}", i.parse::<usize>().ok()? + 1))
}

#[test]
fn original_decoder_file_names_decode_the_same() {
    let (mut src, header) = rewritten(original_name, None);
    assert!(header.tensor("1.weight").is_some() && header.tensor("19.weight").is_some());
    // The fixture is 16 wide, so its config is passed (TAEF1's own file needs none).
    let dec = TinyDecoder::load(gpu(), &mut src, &header, Some(config())).unwrap();
    check_all(&dec, "original names");
}

#[test]
fn missing_and_misshapen_tensors_are_typed_errors() {
    let load =
        |(mut src, header): (MemSource, WeightsHeader)| TinyDecoder::load(gpu(), &mut src, &header, Some(config()));
    // A block's middle conv missing.
    let r = load(rewritten(|k| (k != "decoder.layers.8.conv.2.weight").then(|| k.to_string()), None));
    assert!(
        matches!(&r, Err(Error::MissingModelTensor { name, .. }) if name.contains("decoder.layers.8.conv.2.weight")),
        "{:?}",
        r.err()
    );
    // The final conv with 4 output channels.
    let r = load(rewritten(|k| Some(k.to_string()), Some(("decoder.layers.18.weight", vec![4, 16, 3, 3]))));
    assert!(matches!(&r, Err(Error::TensorShape { name, .. }) if name == "decoder.layers.18.weight"), "{:?}", r.err());
    // Not a tiny autoencoder at all (encoder only): names both schemes.
    let r = load(rewritten(|k| k.starts_with("encoder.").then(|| k.to_string()), None));
    assert!(
        matches!(&r, Err(Error::MissingModelTensor { name, .. }) if name.contains("decoder.layers.0.weight") && name.contains("1.weight")),
        "{:?}",
        r.err()
    );
    // TAEF1's default width (64) against this width-16 file: a shape error, not a wrong image.
    let (mut src, header) = rewritten(|k| Some(k.to_string()), None);
    let r = TinyDecoder::load(gpu(), &mut src, &header, None);
    assert!(matches!(&r, Err(Error::TensorShape { .. })), "{:?}", r.err());
}

#[test]
fn a_latent_of_the_wrong_shape_is_refused() {
    let mut src = FileSource::open(format!("{DIR}/taef1_tiny/diffusion_pytorch_model.safetensors")).unwrap();
    let header = read_header(&mut src).unwrap();
    let dec = TinyDecoder::load(gpu(), &mut src, &header, Some(config())).unwrap();
    let g = gpu();
    let mut b = g.batch();
    for shape in [&[4usize, 4, 4][..], &[16, 4]] {
        let z = g.upload_f32(shape, &vec![0.0; shape.iter().product()]).unwrap();
        assert!(matches!(dec.decode(g, &mut b, &z), Err(Error::ShapeMismatch { .. })), "{shape:?}");
    }
}
