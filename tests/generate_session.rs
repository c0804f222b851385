//! A `Session` keeps the transformer, the VAE and the last prompt's embeddings between runs
//! (what a browser tab does): a second run with the same prompt reuses them and gives exactly
//! the image a fresh run gives; a new prompt encodes again (dropping the transformer first,
//! the default memory policy); a failed run leaves an empty session that works again.

mod common;
use iclora::gpu::{Gpu, GpuOptions};
use iclora::pipeline::generate::{GenerateOptions, Lines, ModelPaths, RgbImage, Session};
use iclora::pipeline::store::ModelStore;
use iclora::weights::load::Convert;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web/demo/tiny-flux");

fn opts(prompt: &str, seed: u64) -> GenerateOptions {
    GenerateOptions {
        prompt: prompt.into(),
        width: 48,
        height: 32,
        steps: 2,
        guidance: 3.5,
        seed,
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

fn run(gpu: &Gpu, session: &mut Session, o: &GenerateOptions) -> (iclora::Result<RgbImage>, String) {
    run_with(gpu, session, &ModelPaths { root: Some(MODEL.into()), ..Default::default() }, o)
}

fn run_with(
    gpu: &Gpu,
    session: &mut Session,
    paths: &ModelPaths,
    o: &GenerateOptions,
) -> (iclora::Result<RgbImage>, String) {
    let mut log = String::new();
    let img = pollster::block_on(session.run(
        gpu,
        &ModelStore::new(),
        paths,
        o,
        &mut Lines(|l: &str| {
            log.push_str(l);
            log.push('\n');
        }),
    ));
    (img, log)
}

fn fresh(gpu: &Gpu, o: &GenerateOptions) -> RgbImage {
    run(gpu, &mut Session::default(), o).0.unwrap()
}

#[test]
fn a_session_reuses_models_and_embeddings_without_changing_the_image() {
    let gpu = Gpu::new_blocking(&GpuOptions::default()).unwrap();
    let mut s = Session::default();
    let (a, log) = run(&gpu, &mut s, &opts("[SCENE-1] a red fox", 1));
    assert!(log.contains("load: transformer (") && log.contains("load: text encoders"), "{log}");
    assert_eq!(a.unwrap(), fresh(&gpu, &opts("[SCENE-1] a red fox", 1)));

    // Same prompt, new seed: nothing reloads, and the image is a fresh run's.
    let (b, log) = run(&gpu, &mut s, &opts("[SCENE-1] a red fox", 2));
    assert!(log.contains("reusing its embeddings") && log.contains("already loaded"), "{log}");
    assert!(!log.contains("load: text encoders") && !log.contains("load: VAE"), "{log}");
    let b = b.unwrap();
    assert_eq!(b, fresh(&gpu, &opts("[SCENE-1] a red fox", 2)));
    assert_ne!(b.pixels, fresh(&gpu, &opts("[SCENE-1] a red fox", 1)).pixels, "the seed must matter");

    // A new prompt: encoders run again and, by default, the transformer is reloaded after them.
    let (c, log) = run(&gpu, &mut s, &opts("[SCENE-1] a blue whale", 2));
    assert!(log.contains("load: text encoders") && log.contains("load: transformer ("), "{log}");
    assert_eq!(c.unwrap(), fresh(&gpu, &opts("[SCENE-1] a blue whale", 2)));

    // Keeping the transformer while encoding (when memory allows) gives the same image.
    s.keep_transformer_while_encoding = true;
    let (d, log) = run(&gpu, &mut s, &opts("[SCENE-1] a green owl", 3));
    assert!(log.contains("load: text encoders") && log.contains("already loaded"), "{log}");
    assert_eq!(d.unwrap(), fresh(&gpu, &opts("[SCENE-1] a green owl", 3)));

    // A failing run (zero steps) clears the session; the next run loads again and works.
    let mut bad = opts("[SCENE-1] a green owl", 3);
    bad.steps = 0;
    assert!(run(&gpu, &mut s, &bad).0.is_err());
    assert!(!s.has_transformer());
    let (e, log) = run(&gpu, &mut s, &opts("[SCENE-1] a green owl", 3));
    assert!(log.contains("load: transformer ("), "{log}");
    assert_eq!(e.unwrap(), fresh(&gpu, &opts("[SCENE-1] a green owl", 3)));
}

/// The step cache lives in one sampler run: in a session, a run after another (new seed, new LoRA
/// scale) gives exactly what a fresh session gives with the same settings, and each run reports its
/// own counts.
#[test]
fn the_step_cache_never_crosses_runs() {
    let gpu = Gpu::new_blocking(&GpuOptions::default()).unwrap();
    let lora = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden/pipe_lora_a_diffusers.safetensors");
    let cached = |seed: u64, scale: f32| GenerateOptions {
        steps: 5,
        loras: vec![(lora.to_string(), scale)],
        step_cache: Some(iclora::pipeline::step_cache::StepCache { threshold: 10.0, max_reuse: None }),
        ..opts("[SCENE-1] a red fox", seed)
    };
    let mut s = Session::default();
    let mut last = None;
    for (seed, scale) in [(1, 1.0), (2, 1.0), (2, 0.5), (2, 1.0)] {
        let (img, log) = run(&gpu, &mut s, &cached(seed, scale));
        assert!(log.lines().any(|l| l == "step cache: computed 2 of 5 steps"), "{log}");
        let img = img.unwrap();
        assert_eq!(
            img,
            fresh(&gpu, &cached(seed, scale)),
            "seed {seed}, scale {scale}: a session run equals a fresh one"
        );
        if let Some(prev) = last.replace(img.clone()) {
            assert_ne!(prev, img, "seed {seed}, scale {scale}: the settings must matter");
        }
    }
}

/// Each stage's product is kept under a key of where its model comes from: another VAE location
/// is not served the cached VAE, and a tokenizer named explicitly encodes the prompt again.
#[test]
fn each_stage_is_reused_only_for_the_same_model_locations() {
    let gpu = Gpu::new_blocking(&GpuOptions::default()).unwrap();
    let mut s = Session::default();
    let o = opts("[SCENE-1] a red fox", 1);
    let base = ModelPaths { root: Some(MODEL.into()), ..Default::default() };
    let want = run_with(&gpu, &mut s, &base, &o).0.unwrap();

    // A VAE elsewhere (here: nowhere) is looked for, not taken from the cache.
    let nowhere = ModelPaths { vae: Some(format!("{MODEL}/no-such-vae")), ..base.clone() };
    let err = run_with(&gpu, &mut s, &nowhere, &o).0.expect_err("a missing VAE must fail").to_string();
    assert!(err.contains("no-such-vae"), "{err}");

    // The same files named one by one: the text and VAE stages load again; the image is the same.
    s.keep_transformer_while_encoding = true;
    run_with(&gpu, &mut s, &base, &o).0.unwrap();
    let named = ModelPaths {
        vae: Some(format!("{MODEL}/vae")),
        t5_tokenizer: Some(format!("{MODEL}/tokenizer_2")),
        ..base.clone()
    };
    let (img, log) = run_with(&gpu, &mut s, &named, &o);
    assert!(log.contains("load: text encoders") && log.contains("load: VAE"), "{log}");
    assert!(log.contains("already loaded"), "the transformer's key did not change: {log}");
    assert_eq!(img.unwrap(), want);
}
