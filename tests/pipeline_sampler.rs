//! The GPU sampler against diffusers' FluxPipeline (denoising loop, `output_type="latent"`) on
//! the tiny random-weight transformers (fixtures from tools/golden/make_sampler_steps.py):
//! latents after every step and the final latents, from the same seed with our own noise.
//! Tolerances (relative to max(|expected|, rms), `assert_close`): 1e-4 after each step (the
//! per-block bound), 1e-3 on the final latents (the bound); seeded noise to 1e-6 absolute.

mod common;

use common::{assert_close, gpu};
use iclora::gpu::Tensor;
use iclora::model::flux::FluxModel;
use iclora::pipeline::sampler::{noise_from_file, sample, SampleOptions, Sampler};
use iclora::pipeline::schedule::FluxVariant;
use iclora::pipeline::seed::flux_noise;
use iclora::weights::load::{read_header, FileSource};
use iclora::Error;
use safetensors::SafeTensors;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden");
const STEPS_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden/sampler_steps.safetensors");
const STEP_RTOL: f32 = 1e-4;
const FINAL_RTOL: f32 = 1e-3;

fn fixture(key: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(STEPS_FILE).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap_or_else(|_| panic!("fixture has no `{key}`"));
    (t.shape().to_vec(), t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn model(name: &str) -> FluxModel {
    let mut src = FileSource::open(format!("{DIR}/flux_{name}.safetensors")).unwrap();
    let header = read_header(&mut src).unwrap();
    FluxModel::load(gpu(), &mut src, &header, None).unwrap()
}

fn upload(key: &str) -> Tensor {
    let (shape, v) = fixture(key);
    gpu().upload_f32(&shape, &v).unwrap()
}

fn options(case: &str) -> SampleOptions {
    let p = fixture(&format!("{case}/params")).1;
    let variant = if case.starts_with("dev") { FluxVariant::Dev } else { FluxVariant::Schnell };
    let guidance = (p[4] != 0.0).then_some(p[4]);
    SampleOptions {
        height: p[1] as usize,
        width: p[2] as usize,
        steps: p[3] as usize,
        guidance,
        variant,
        step_cache: None,
    }
}

/// Runs `case` from `noise`, compares every step and the final latents with diffusers'.
fn check_case(model: &FluxModel, case: &str, noise: &[f32]) {
    let g = gpu();
    let opts = options(case);
    let (txt, pooled) = (upload(&format!("{case}/txt")), upload(&format!("{case}/pooled")));
    let mut steps = Vec::new();
    let mut sigmas = Vec::new();
    let out = sample(g, model, &txt, &pooled, noise, &opts, &mut |s| {
        assert_eq!((s.index, s.steps), (steps.len(), opts.steps));
        sigmas.push(s.sigma);
        steps.push(s.latents.clone());
    })
    .unwrap();
    assert_eq!(steps.len(), opts.steps);
    assert!(sigmas.windows(2).all(|w| w[1] < w[0]), "sigmas must fall: {sigmas:?}");
    for (i, t) in steps.iter().enumerate() {
        let got = g.read_f32_blocking(t).unwrap();
        assert_close(&format!("{case} step {i}"), &got, &fixture(&format!("{case}/step{i}")).1, STEP_RTOL);
    }
    let (shape, expected) = fixture(&format!("{case}/final"));
    assert_eq!(out.shape(), shape.as_slice());
    assert_close(&format!("{case} final"), &g.read_f32_blocking(&out).unwrap(), &expected, FINAL_RTOL);
}

fn our_noise(case: &str) -> Vec<f32> {
    let p = fixture(&format!("{case}/params")).1;
    let noise = flux_noise(p[0] as u64, p[1] as usize, p[2] as usize);
    let (_, theirs) = fixture(&format!("{case}/noise"));
    assert_eq!(noise.len(), theirs.len());
    let worst = noise.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst <= 1e-6, "{case}: seeded noise differs from FluxPipeline's by {worst}");
    noise
}

#[test]
fn dev_square_matches_diffusers_every_step() {
    check_case(&model("dev"), "dev_64x64", &our_noise("dev_64x64"));
}

#[test]
fn dev_non_square_matches_diffusers_every_step() {
    check_case(&model("dev"), "dev_48x80", &our_noise("dev_48x80"));
}

#[test]
fn schnell_like_without_guidance_matches_diffusers() {
    check_case(&model("odd"), "odd_80x48", &our_noise("odd_80x48"));
}

#[test]
fn noise_from_a_file_gives_the_same_run() {
    let noise = noise_from_file(STEPS_FILE, Some("dev_48x80/noise")).unwrap();
    assert_eq!(noise, fixture("dev_48x80/noise").1);
    check_case(&model("dev"), "dev_48x80", &noise);
}

#[test]
fn noise_file_errors_are_typed() {
    let e = noise_from_file(STEPS_FILE, Some("no/such")).unwrap_err();
    assert!(matches!(e, Error::MissingTensor { ref name, .. } if name == "no/such"), "{e}");
    let e = noise_from_file(STEPS_FILE, None).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(ref m) if m.contains("name the noise tensor")), "{e}");
}

#[test]
fn wrong_noise_length_and_bad_canvas_are_refused() {
    let m = model("odd");
    let (txt, pooled) = (upload("odd_80x48/txt"), upload("odd_80x48/pooled"));
    let opts = options("odd_80x48");
    let noise = our_noise("odd_80x48");
    let e = sample(gpu(), &m, &txt, &pooled, &noise[1..], &opts, &mut |_| {}).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "sampler noise", .. }), "{e}");
    let small = SampleOptions { height: 8, ..opts };
    let e = sample(gpu(), &m, &txt, &pooled, &noise, &small, &mut |_| {}).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    let none = SampleOptions { steps: 0, ..opts };
    assert!(sample(gpu(), &m, &txt, &pooled, &noise, &none, &mut |_| {}).is_err());
}

/// The stepper the browser drives ([`Sampler`]) against diffusers every step, and bit for bit
/// against [`sample`] (which is a loop over it).
#[test]
fn stepper_matches_diffusers_and_sample() {
    let (g, m, case) = (gpu(), model("dev"), "dev_48x80");
    let (opts, noise) = (options(case), our_noise(case));
    let (txt, pooled) = (upload(&format!("{case}/txt")), upload(&format!("{case}/pooled")));
    let mut looped = Vec::new();
    sample(g, &m, &txt, &pooled, &noise, &opts, &mut |s| looped.push(g.read_f32_blocking(s.latents).unwrap())).unwrap();
    let mut s = Sampler::new(g, &m, &txt, &pooled, &noise, &opts, None).unwrap();
    assert_eq!((s.steps(), s.done(), s.sigmas().len()), (opts.steps, 0, opts.steps + 1));
    while let Some(info) = s.step_blocking(g).unwrap() {
        assert_eq!((info.index, info.steps, s.done()), (s.done() - 1, opts.steps, info.index + 1));
        let got = g.read_f32_blocking(s.latents()).unwrap();
        assert_close(
            &format!("stepper step {}", info.index),
            &got,
            &fixture(&format!("{case}/step{}", info.index)).1,
            STEP_RTOL,
        );
        assert_eq!(got, looped[info.index], "step {}: the stepper must equal sample() bit for bit", info.index);
    }
    assert_eq!(s.done(), opts.steps);
    assert!(s.step_blocking(g).unwrap().is_none());
    assert_eq!(g.read_f32_blocking(&s.into_latents()).unwrap(), *looped.last().unwrap());
}
