//! `iclora generate --lora` end to end against diffusers' FluxPipeline with the same adapters
//! (`load_lora_weights` + `set_adapters`) on the tiny pipeline (web/demo/tiny-flux/,
//! tools/golden/make_pipeline_lora_fixtures.py): PSNR ≥ 40 dB for every case and every format of
//! adapter A (diffusers as `save_lora_weights` writes it, kohya, BFL-native), and the three formats
//! of A give identical bytes.

mod common;
use common::psnr;
use std::path::PathBuf;
use std::process::Command;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web/demo/tiny-flux");
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden");
/// The bar.
const MIN_PSNR_DB: f64 = 40.0;
const FORMATS: [&str; 3] = ["diffusers", "kohya", "bfl"];

/// Runs `iclora generate` with the fixture's settings and `loras` (`FILE:SCALE`); the RGB bytes.
fn generate(g: &serde_json::Value, loras: &[String], out: &str) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("iclora-generate-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out: PathBuf = dir.join(out);
    let s = |k: &str| g[k].to_string().trim_matches('"').to_string();
    let mut a = vec!["generate".to_string(), "--model".into(), MODEL.into(), "--prompt".into(), s("prompt")];
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
    for l in loras {
        a.extend(["--lora".to_string(), l.clone()]);
    }
    a.extend(["--out".into(), out.display().to_string()]);
    let o = Command::new(env!("CARGO_BIN_EXE_iclora")).args(&a).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{a:?}: {log}");
    assert!(log.contains(&format!("load: {} LoRA(s)", loras.len())), "{log}");
    image::open(&out).unwrap().to_rgb8().into_raw()
}

#[test]
fn lora_images_match_diffusers_in_every_format() {
    let bytes = std::fs::read(format!("{GOLDEN}/pipe_lora_images.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let g: serde_json::Value = serde_json::from_str(&meta["generate"]).unwrap();
    // [(name, [adapter, ...], [weight, ...]), ...]
    let cases: Vec<(String, Vec<String>, Vec<f32>)> = serde_json::from_str(&meta["cases"]).unwrap();
    let golden = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(cases.len(), 3);
    let mut failures = Vec::new();
    for (name, adapters, weights) in &cases {
        let expected = golden.tensor(&format!("image/{name}")).unwrap();
        assert_eq!(
            expected.shape(),
            [g["height"].as_u64().unwrap() as usize, g["width"].as_u64().unwrap() as usize, 3]
        );
        let mut first: Option<Vec<u8>> = None;
        for format in FORMATS {
            // Adapter A in `format`; the others as save_lora_weights wrote them.
            let loras: Vec<String> = adapters
                .iter()
                .zip(weights)
                .map(|(a, w)| {
                    let f = if a == "a" { format } else { "diffusers" };
                    format!("{GOLDEN}/pipe_lora_{a}_{f}.safetensors:{w}")
                })
                .collect();
            let img = generate(&g, &loras, &format!("{name}-{format}.png"));
            let p = psnr(&img, expected.data());
            println!("case {name}, A as {format}: PSNR {p:.1} dB vs diffusers");
            if p < MIN_PSNR_DB {
                failures.push(format!("case {name}, A as {format}: PSNR {p:.2} dB < {MIN_PSNR_DB}"));
            }
            match &first {
                None => first = Some(img),
                Some(f) => {
                    if f != &img {
                        failures.push(format!(
                            "case {name}: A as {format} gives other bytes than as diffusers (PSNR {:.1} dB)",
                            psnr(f, &img)
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
