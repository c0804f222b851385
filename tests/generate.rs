//! `iclora generate` end to end on the tiny diffusers-layout pipeline (web/demo/tiny-flux/,
//! tools/golden/make_pipeline_fixtures.py): the PNG it writes against the image diffusers'
//! FluxPipeline made from the same folder, prompt, size, steps, guidance and seed (PSNR ≥ 40 dB);
//! missing components and bad LoRAs give errors naming the component and file; a prompt longer than
//! the T5 sequence length is truncated with a warning.

mod common;
use common::psnr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web/demo/tiny-flux");
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden");
/// The bar; the tiny pipeline reaches ~80 dB (a few pixels off by one level).
const MIN_PSNR_DB: f64 = 40.0;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iclora-generate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iclora"))
        .arg("generate")
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Arguments of a fixture case (`pipeline_cases.json`), writing to `out`.
fn case_args(c: &serde_json::Value, out: &Path) -> Vec<String> {
    let s = |k: &str| c[k].to_string().trim_matches('"').to_string();
    let mut a = vec!["--model".into(), MODEL.into(), "--prompt".into(), c["prompt"].as_str().unwrap().into()];
    for (flag, key) in [
        ("--width", "width"),
        ("--height", "height"),
        ("--steps", "steps"),
        ("--guidance", "guidance"),
        ("--seed", "seed"),
        ("--max-sequence-length", "max_sequence_length"),
    ] {
        a.extend([flag.to_string(), s(key)]);
    }
    a.extend(["--out".into(), out.display().to_string()]);
    a
}

#[test]
fn images_match_diffusers() {
    let cases: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(format!("{GOLDEN}/pipeline_cases.json")).unwrap()).unwrap();
    let bytes = std::fs::read(format!("{GOLDEN}/pipeline_images.safetensors")).unwrap();
    let golden = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(cases.len() >= 3);
    for (i, c) in cases.iter().enumerate() {
        let out = tmp(&format!("case{i}.png"));
        let o = run(&case_args(c, &out).iter().map(String::as_str).collect::<Vec<_>>());
        let log = stderr(&o);
        assert!(o.status.success(), "case {}: {log}", c["name"]);
        for stage in ["load: text encoders", "encode:", "load: transformer", "step 1/", "decode:"] {
            assert!(log.contains(stage), "case {}: no `{stage}` progress line in:\n{log}", c["name"]);
        }
        let img = image::open(&out).unwrap().to_rgb8();
        let expected = golden.tensor(&format!("image/{i}")).unwrap();
        let (h, w) = (c["height"].as_u64().unwrap() as usize, c["width"].as_u64().unwrap() as usize);
        assert_eq!(expected.shape(), [h, w, 3]);
        assert_eq!((img.height() as usize, img.width() as usize), (h, w), "case {}", c["name"]);
        let p = psnr(img.as_raw(), expected.data());
        println!("case {} ({w}×{h}): PSNR {p:.1} dB", c["name"]);
        assert!(p >= MIN_PSNR_DB, "case {}: PSNR {p:.2} dB < {MIN_PSNR_DB}", c["name"]);
    }
}

fn base(out: &Path) -> Vec<String> {
    let a = [
        "--prompt",
        "a fox",
        "--width",
        "32",
        "--height",
        "32",
        "--steps",
        "1",
        "--guidance",
        "3.5",
        "--seed",
        "1",
        "--max-sequence-length",
        "16",
    ];
    let mut v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
    v.extend(["--out".into(), out.display().to_string()]);
    v
}

fn run_with(extra: &[&str], out: &Path) -> Output {
    let mut a = base(out);
    a.extend(extra.iter().map(|s| s.to_string()));
    run(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn missing_components_are_named() {
    let out = tmp("missing.png");
    // An override that does not exist.
    let o = run_with(&["--model", MODEL, "--t5", "/nonexistent/t5.safetensors"], &out);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains("T5 text encoder") && e.contains("/nonexistent/t5.safetensors"), "{e}");
    // A model folder without its VAE weights, and one without the CLIP tokenizer.
    for (remove, component) in
        [("vae/diffusion_pytorch_model.safetensors", "VAE"), ("tokenizer/merges.txt", "CLIP tokenizer")]
    {
        let dir = tmp(&format!("model-{}", component.replace(' ', "-")));
        copy_dir(Path::new(MODEL), &dir);
        std::fs::remove_file(dir.join(remove)).unwrap();
        let o = run_with(&["--model", &dir.display().to_string()], &out);
        let e = stderr(&o);
        assert!(!o.status.success(), "{component}");
        let folder = remove.split('/').next().unwrap();
        assert!(e.contains(component) && e.contains(folder), "{component}: {e}");
    }
    // A shard listed by the transformer's index that is gone.
    let dir = tmp("model-shard");
    copy_dir(Path::new(MODEL), &dir);
    std::fs::remove_file(dir.join("transformer/diffusion_pytorch_model-00002-of-00002.safetensors")).unwrap();
    let e = stderr(&run_with(&["--model", &dir.display().to_string()], &out));
    assert!(e.contains("transformer") && e.contains("diffusion_pytorch_model-00002-of-00002.safetensors"), "{e}");
    // No model at all.
    let e = stderr(&run_with(&[], &out));
    assert!(e.contains("transformer") && e.contains("no --model"), "{e}");
}

#[test]
fn lora_for_another_model_is_named() {
    let out = tmp("lora.png");
    let lora = format!("{GOLDEN}/lora_a_diffusers.safetensors");
    let o = run_with(&["--model", MODEL, "--lora", &format!("{lora}:0.8")], &out);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("LoRA") && e.contains("lora_a_diffusers.safetensors"), "{e}");
}

#[test]
fn long_prompt_is_truncated_with_a_warning() {
    let out = tmp("long.png");
    let long = "a very long prompt about a red fox in the snow ".repeat(8);
    let mut a = base(&out);
    a[1] = long;
    a.extend(["--model".into(), MODEL.into()]);
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("warning:") && e.contains("T5") && e.contains("cut off"), "{e}");
    assert!(out.exists());
}

/// Every component given explicitly (folders, an index file, a `tokenizer.json`), no `--model`:
/// the same image as the folder gives.
#[test]
fn explicit_components_give_the_same_image() {
    let cases: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(format!("{GOLDEN}/pipeline_cases.json")).unwrap()).unwrap();
    let (via_model, explicit) = (tmp("via-model.png"), tmp("explicit.png"));
    let args = case_args(&cases[0], &via_model);
    assert!(run(&args.iter().map(String::as_str).collect::<Vec<_>>()).status.success());
    let mut args = case_args(&cases[0], &explicit);
    args.drain(0..2); // --model DIR
    for (flag, path) in [
        ("--transformer", format!("{MODEL}/transformer")),
        ("--vae", format!("{MODEL}/vae")),
        ("--t5", format!("{MODEL}/text_encoder_2")),
        ("--clip", format!("{MODEL}/text_encoder")),
        ("--t5-tokenizer", format!("{MODEL}/tokenizer_2/tokenizer.json")),
        ("--clip-tokenizer", format!("{GOLDEN}/clip_tokenizer.json")),
    ] {
        args.extend([flag.to_string(), path]);
    }
    let o = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let (a, b) = (image::open(&via_model).unwrap().to_rgb8(), image::open(&explicit).unwrap().to_rgb8());
    assert_eq!(a.as_raw(), b.as_raw());
}
