//! Live previews on the tiny pipeline: through the linear latent→RGB map at latent resolution by
//! default, through the TAEF1 preview decoder (the width-16 golden fixture) at full resolution
//! when `ModelPaths::preview_decoder` is set; one per step but the last; never a change to the
//! result; the decoder loaded once per session; a decoder for other latents refused by name.

mod common;
use iclora::gpu::{Gpu, GpuOptions};
use iclora::pipeline::generate::{Event, GenerateOptions, ModelPaths, Observer, RgbImage, Session};
use iclora::pipeline::store::ModelStore;
use iclora::weights::load::Convert;
use iclora::weights::safetensors::{file_dtype, write_safetensors};
use iclora::weights::tensor_info::TensorData;
use iclora::Error;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web/demo/tiny-flux");
const TAEF1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden/taef1_tiny");
const STEPS: usize = 3;

fn opts() -> GenerateOptions {
    GenerateOptions {
        prompt: "[SCENE-1] a red fox".into(),
        width: 48,
        height: 32,
        steps: STEPS,
        guidance: 3.5,
        seed: 3,
        max_sequence_length: None,
        loras: Vec::new(),
        convert: Convert::Keep,
        layout: None,
        references: Vec::new(),
        merge_loras: false,
        f16: false,
        step_cache: None,
    }
}

/// Collects previews (step, width, height) and the log.
#[derive(Default)]
struct Collect {
    every: usize,
    previews: Vec<(usize, usize, usize)>,
    log: String,
}

impl Observer for Collect {
    fn event(&mut self, e: Event<'_>) {
        match e {
            Event::Preview { index, image } => {
                assert_eq!(image.pixels.len(), image.width * image.height * 3);
                self.previews.push((index, image.width, image.height));
            }
            Event::Line(l) | Event::Warning(l) => {
                self.log.push_str(l);
                self.log.push('\n');
            }
            _ => {}
        }
    }
    fn preview_every(&self) -> usize {
        self.every
    }
}

fn run(gpu: &Gpu, s: &mut Session, decoder: Option<&str>, every: usize) -> (iclora::Result<RgbImage>, Collect) {
    let paths =
        ModelPaths { root: Some(MODEL.into()), preview_decoder: decoder.map(String::from), ..Default::default() };
    let mut c = Collect { every, ..Default::default() };
    let img = pollster::block_on(s.run(gpu, &ModelStore::new(), &paths, &opts(), &mut c));
    (img, c)
}

#[test]
fn previews_are_linear_or_taef1_and_never_change_the_result() {
    let gpu = Gpu::new_blocking(&GpuOptions::default()).unwrap();
    let (plain, c) = run(&gpu, &mut Session::default(), None, 0);
    let plain = plain.unwrap();
    assert!(c.previews.is_empty());

    let (linear, c) = run(&gpu, &mut Session::default(), None, 1);
    assert_eq!(linear.unwrap(), plain);
    assert_eq!(c.previews, [(0, 6, 4), (1, 6, 4)], "linear previews at latent resolution, none after the last step");

    let mut s = Session::default();
    let (sharp, c) = run(&gpu, &mut s, Some(TAEF1), 1);
    assert_eq!(sharp.unwrap(), plain, "the preview decoder must not change the result");
    assert_eq!(c.previews, [(0, 48, 32), (1, 48, 32)], "TAEF1 previews at full resolution");
    assert!(
        c.log.contains("load: TAEF1 preview decoder (") && c.log.contains("preview: step 2 decoded by TAEF1 in "),
        "{}",
        c.log
    );

    // The session keeps it: a second run does not load it again.
    let (again, c) = run(&gpu, &mut s, Some(TAEF1), 1);
    assert_eq!(again.unwrap(), plain);
    assert!(!c.log.contains("load: TAEF1") && c.log.contains("preview: step 1 decoded by TAEF1"), "{}", c.log);
    // Without previews it is neither loaded nor used.
    let (_, c) = run(&gpu, &mut Session::default(), Some(TAEF1), 0);
    assert!(!c.log.contains("TAEF1"), "{}", c.log);
}

/// A one-level tiny decoder for `latent` channels, width 8, random weights, in a temp folder.
fn other_decoder(latent: usize) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("iclora-preview-{}-{latent}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = common::Rng::new(4);
    let f32s = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut tensors = Vec::new();
    let mut conv = |name: &str, o: usize, i: usize| {
        let w = rng.vec(o * i * 9, -0.1, 0.1);
        let b = rng.vec(o, -0.1, 0.1);
        tensors.push(TensorData {
            name: format!("{name}.weight"),
            shape: vec![o as u64, i as u64, 3, 3],
            dtype: file_dtype("F32").unwrap(),
            data: f32s(w),
        });
        tensors.push(TensorData {
            name: format!("{name}.bias"),
            shape: vec![o as u64],
            dtype: file_dtype("F32").unwrap(),
            data: f32s(b),
        });
    };
    conv("decoder.layers.0", 8, latent);
    for j in [0, 2, 4] {
        conv(&format!("decoder.layers.2.conv.{j}"), 8, 8);
    }
    conv("decoder.layers.3", 3, 8);
    std::fs::write(dir.join("diffusion_pytorch_model.safetensors"), write_safetensors(&[], &tensors).unwrap()).unwrap();
    let config =
        format!(r#"{{"latent_channels": {latent}, "decoder_block_out_channels": [8], "num_decoder_blocks": [1]}}"#);
    std::fs::write(dir.join("config.json"), config).unwrap();
    dir
}

#[test]
fn a_decoder_for_other_latents_or_a_missing_one_is_refused_by_name() {
    let gpu = Gpu::new_blocking(&GpuOptions::default()).unwrap();
    let mut s = Session::default();
    // The same structure for 16 channels works (the check is on channels, not on TAEF1's shape).
    let ok = other_decoder(16);
    let (img, c) = run(&gpu, &mut s, ok.to_str(), 1);
    assert!(img.is_ok() && c.previews == [(0, 6, 4), (1, 6, 4)], "{:?} {:?}", img.err(), c.previews);

    let four = other_decoder(4);
    let (img, _) = run(&gpu, &mut s, four.to_str(), 1);
    assert!(
        matches!(&img, Err(Error::Component { component, message, .. }) if component == "TAEF1 preview decoder" && message.contains("4-channel") && message.contains("16")),
        "{:?}",
        img.err()
    );
    let (img, _) = run(&gpu, &mut s, Some("/nonexistent/taef1.safetensors"), 1);
    assert!(
        matches!(&img, Err(e) if e.to_string().contains("TAEF1 preview decoder") && e.to_string().contains("/nonexistent/taef1.safetensors")),
        "{:?}",
        img.err()
    );
    // The session works again afterwards.
    let (img, _) = run(&gpu, &mut s, None, 1);
    assert!(img.is_ok(), "{:?}", img.err());
    for d in [ok, four] {
        let _ = std::fs::remove_dir_all(d);
    }
}
