//! The native CLI: `iclora info` names the adapter; `iclora bench kernels` runs
//! every benchmark case end to end at a tiny scale (figures are not asserted:
//! speed belongs in BENCHMARKS.md, not in tests); bad arguments are refused.

mod common;

use std::process::Command;

fn iclora(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iclora"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .expect("run iclora");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn info_names_the_adapter_and_limits() {
    let (ok, out, err) = iclora(&["info"]);
    assert!(ok, "{err}");
    assert!(out.contains("adapter: ") && out.contains("max_storage_binding=") && out.contains("shader-f16="), "{out}");
}

#[test]
fn bench_kernels_runs_every_case_at_tiny_scale() {
    let (ok, out, err) =
        iclora(&["bench", "kernels", "--scale", "0.002", "--iters", "1", "--formats", "F16,Q4_0,Q6_K"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("adapter: "), "{out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.contains("median_ms=")).collect();
    // 3 formats × 2 shapes of matmul + attention + 5 conv shapes × 2 weight formats, then the
    // 4 reducing kernels on 2 paths each (lavapipe has subgroups), timed in GB/s.
    assert_eq!(rows.len(), 17 + 8, "{out}");
    let (reductions, flops): (Vec<&str>, Vec<&str>) =
        rows.iter().partition(|r| r.contains("subgroups: ") || r.contains("workgroup memory: "));
    assert_eq!(reductions.len(), 8, "{out}");
    let field =
        |r: &str, k: &str| r.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|v| v.parse::<f64>().ok());
    assert!(flops.iter().all(|r| field(r, "gflops=").is_some_and(|g| g > 0.0)), "{out}");
    assert!(reductions.iter().all(|r| field(r, "gbs=").is_some_and(|g| g > 0.0)), "{out}");
    assert!(out.contains("attention"), "{out}");
}

#[test]
fn bad_arguments_are_refused_with_usage() {
    let (ok, _, err) = iclora(&["bench", "kernels", "--formats", "Q9_9"]);
    assert!(!ok && err.contains("unknown weight format Q9_9"), "{err}");
    let (ok, _, err) = iclora(&["frobnicate"]);
    assert!(!ok && err.contains("unrecognized subcommand") && err.contains("Usage:"), "{err}");
    let (ok, _, err) = iclora(&["bench", "kernels", "--kernels", "matmul,warp"]);
    assert!(!ok && err.contains("possible values: matmul, attention, conv2d, matmul_coop, reductions"), "{err}");
    let (ok, _, err) = iclora(&["bench", "kernels", "--scale", "9"]);
    assert!(!ok && err.contains("--scale must be in (0, 4]"), "{err}");
}

/// Every subcommand answers `--help` with its options (clap), and `help` names them all.
#[test]
fn every_command_has_help() {
    for (args, wants) in [
        (&["--help"][..], "generate"),
        (&["help", "bench"][..], "flux-step"),
        (&["bench", "flux-step", "--help"][..], "--tokens"),
        (&["bench", "kernels", "--help"][..], "--formats"),
        (&["bench", "stream", "--help"][..], "--make"),
        (&["bench", "preview", "--help"][..], "--width"),
        (&["generate", "--help"][..], "--step-cache-max-reuse"),
        (&["inspect", "--help"][..], "http(s) URL"),
    ] {
        let (ok, out, err) = iclora(args);
        assert!(ok && out.contains(wants), "{args:?}: {out}{err}");
    }
    // A missing required option names it.
    let (ok, _, err) = iclora(&["generate", "--prompt", "a fox"]);
    assert!(!ok && err.contains("--width"), "{err}");
}

/// Mesa's "XDG_RUNTIME_DIR is invalid or not set" no longer precedes the output where the
/// variable is unset (the tool sets it to the temp dir).
#[test]
fn no_mesa_runtime_dir_warning() {
    let out = Command::new(env!("CARGO_BIN_EXE_iclora"))
        .arg("info")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("run iclora");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("XDG_RUNTIME_DIR"), "{err}");
}

/// `bench flux-step` end to end on a narrowed FLUX (2 heads × 64 instead of 24 × 128: a full-width
/// block takes tens of seconds on lavapipe), one block of each kind, 32 tokens.
#[test]
fn bench_flux_step_runs_a_tiny_step() {
    let args = [
        "bench",
        "flux-step",
        "--tokens",
        "32",
        "--double",
        "1",
        "--single",
        "1",
        "--iters",
        "1",
        "--heads",
        "2",
        "--head-dim",
        "64",
        "--format",
        "Q4_0",
    ];
    let (ok, out, err) = iclora(&args);
    assert!(ok, "{err}");
    assert!(out.contains("32 tokens (3 text + 29 image), Q4_0 weights, hidden 128"), "{out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.contains("median_ms=")).collect();
    let kinds: Vec<&str> = rows.iter().filter_map(|r| r.split_whitespace().next()).collect();
    assert_eq!(kinds, ["rest", "double", "single", "step", "step(est)"], "{out}");
    let gflops =
        |r: &str| r.split_whitespace().find_map(|w| w.strip_prefix("gflops=")).and_then(|v| v.parse::<f64>().ok());
    assert!(rows.iter().all(|r| gflops(r).is_some_and(|g| g > 0.0)), "{out}");
    // The step's accounting: after the timed runs no buffer is created and no pipeline compiled,
    // and bind groups made by earlier steps are reused (most of them once the buffer pool has
    // cycled: 14 of 720 still made after 10 steps of the full block structure, BENCHMARKS.md).
    let work = out.lines().find(|l| l.starts_with("step work")).unwrap_or_else(|| panic!("{out}"));
    let count = |k: &str| {
        work.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}="))).and_then(|v| v.parse::<u64>().ok())
    };
    let dispatches = count("dispatches").unwrap_or(0);
    assert!(dispatches > 10 && count("bind_groups").is_some_and(|g| g < dispatches), "{work}");
    assert!(count("submissions").is_some_and(|s| s >= 1) && count("bytes_written").is_some_and(|b| b > 0), "{work}");
    assert_eq!(
        (count("buffers_created"), count("pipelines_compiled"), count("bytes_read")),
        (Some(0), Some(0), Some(0)),
        "{work}"
    );
    let (ok, _, err) = iclora(&["bench", "flux-step", "--format", "Q6_K"]);
    assert!(!ok && err.contains("not one of Q4_0, Q8_0, F16"), "{err}");
}

/// `bench flux-step --loras N --rank R` on the narrowed tiny step: the adapters are attached (a
/// `lora` line names them) and every timed row is still reported; a zero rank is refused.
#[test]
fn bench_flux_step_with_loras() {
    let args = [
        "bench",
        "flux-step",
        "--tokens",
        "32",
        "--double",
        "1",
        "--single",
        "1",
        "--iters",
        "1",
        "--heads",
        "2",
        "--head-dim",
        "64",
        "--format",
        "Q8_0",
        "--loras",
        "3",
        "--rank",
        "4",
    ];
    let (ok, out, err) = iclora(&args);
    assert!(ok, "{err}");
    assert!(out.contains("loras: 3 random adapters of rank 4"), "{out}");
    // 1 double block (8 attention/MLP Linears) + 1 single block (linear1, linear2) = 10 weights.
    assert!(out.lines().any(|l| l.starts_with("lora") && l.contains("3 adapters of rank 4 on 10 weights")), "{out}");
    let kinds: Vec<&str> =
        out.lines().filter(|l| l.contains("median_ms=")).filter_map(|r| r.split_whitespace().next()).collect();
    assert_eq!(kinds, ["rest", "double", "single", "step", "step(est)"], "{out}");
    let (ok, _, err) = iclora(&["bench", "flux-step", "--loras", "1", "--rank", "0"]);
    assert!(!ok && err.contains("--rank must be at least 1"), "{err}");
}

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
/// The demo model the page bundles (also a test fixture: tools/golden/make_pipeline_fixtures.py).
const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web/demo");

/// `inspect` names the component and key scheme (`weights::detect`) on a golden fixture.
#[test]
fn inspect_names_component_and_key_scheme() {
    for (file, want) in [
        ("golden/flux_odd_bfl.safetensors", "recognized: FLUX transformer, BFL-native names"),
        ("golden/lora_a_kohya.safetensors", "recognized: LoRA (kohya)"),
        ("golden/t5_text.safetensors", "recognized: T5 encoder, HF names"),
    ] {
        let (ok, out, err) = iclora(&["inspect", &format!("{FIXTURES}/{file}")]);
        assert!(ok, "{err}");
        assert!(out.lines().any(|l| l == want), "{file}: {out}");
    }
}

/// `generate --convert q8_0` on the tiny pipeline runs, quantizes the transformer's matrices
/// (every one is whole 32-blocks wide) and gives an image close to, but not the same as, the one
/// with the weights kept: PSNR in (20 dB, ∞) (measured on lavapipe: printed by the test).
/// A bad `--convert` value is refused.
#[test]
fn generate_with_convert_q8_0_differs_a_little_from_keep() {
    let dir = std::env::temp_dir().join(format!("iclora-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = |convert: &str| {
        let out = dir.join(format!("{convert}.png"));
        let args = [
            "generate",
            "--model",
            &format!("{DEMO}/tiny-flux"),
            "--prompt",
            "a fox",
            "--width",
            "32",
            "--height",
            "32",
            "--steps",
            "2",
            "--guidance",
            "3.5",
            "--seed",
            "3",
            "--max-sequence-length",
            "16",
            "--convert",
            convert,
            "--out",
            out.to_str().unwrap(),
        ];
        let (ok, _, err) = iclora(&args);
        assert!(ok, "--convert {convert}: {err}");
        image::open(&out).unwrap().to_rgb8().into_raw()
    };
    let (keep, q8) = (image("keep"), image("q8_0"));
    let p = common::psnr(&q8, &keep);
    println!("generate --convert q8_0 vs keep: PSNR {p:.1} dB");
    assert!(p > 20.0 && p.is_finite(), "PSNR {p} dB");
    let (ok, _, err) = iclora(&["generate", "--convert", "q3_k"]);
    assert!(!ok && err.contains("possible values: keep, f16, q8_0, q4_0"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--previews DIR` writes one PNG per step but the last: at 1/8 resolution through the linear
/// map, at full resolution through `--preview-decoder`, whose decode time is logged per step.
#[test]
fn generate_writes_previews_linear_or_through_taef1() {
    let dir = std::env::temp_dir().join(format!("iclora-cli-previews-{}", std::process::id()));
    let model = format!("{DEMO}/tiny-flux");
    let taef1 = format!("{FIXTURES}/golden/taef1_tiny");
    for (sub, decoder, size) in [("linear", None, (8, 12)), ("taef1", Some(taef1.as_str()), (64, 96))] {
        let previews = dir.join(sub);
        let out = dir.join(format!("{sub}.png"));
        let mut args = vec![
            "generate",
            "--model",
            &model,
            "--prompt",
            "a fox",
            "--width",
            "64",
            "--height",
            "96",
            "--steps",
            "3",
            "--guidance",
            "3.5",
            "--seed",
            "3",
            "--max-sequence-length",
            "16",
            "--out",
            out.to_str().unwrap(),
            "--previews",
            previews.to_str().unwrap(),
        ];
        args.extend(decoder.iter().flat_map(|d| ["--preview-decoder", *d]));
        let (ok, _, err) = iclora(&args);
        assert!(ok, "{sub}: {err}");
        assert_eq!(decoder.is_some(), err.contains("preview: step 2 decoded by TAEF1 in "), "{err}");
        let mut names: Vec<String> =
            std::fs::read_dir(&previews).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["step-01.png", "step-02.png"], "{sub}");
        for n in names {
            let img = image::open(previews.join(n)).unwrap();
            assert_eq!((img.width(), img.height()), size, "{sub}");
        }
    }
    let (ok, _, err) = iclora(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        "a",
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "1",
        "--guidance",
        "1",
        "--seed",
        "1",
        "--out",
        "/tmp/x.png",
        "--preview-decoder",
        &taef1,
    ]);
    assert!(!ok && err.contains("--previews"), "--preview-decoder needs --previews: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `iclora bench preview` times both previews at a canvas size (figures not asserted).
#[test]
fn bench_preview_times_taef1_and_the_linear_map() {
    let (ok, out, err) = iclora(&["bench", "preview", "--width", "32", "--height", "48", "--iters", "1"]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.contains("median_ms=")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[0].starts_with("taef1") && rows[0].contains("32x48") && rows[1].starts_with("linear"), "{out}");
    let (ok, _, err) = iclora(&["bench", "preview", "--width", "8"]);
    assert!(!ok && err.contains("at least 16"), "{err}");
}

/// `--recipe set.png` makes the set the PNG's recipe describes, exactly as the same settings given
/// as flags (the model from `--model`: local copies of the recipe's files), and the PNG it writes
/// carries that recipe. The recipe's own settings cannot be given twice.
#[test]
fn generate_reproduces_a_recipe_png() {
    use iclora::recipe::presets::task_preset;
    use iclora::recipe::{ModelSource, ModelUrls};
    let dir = std::env::temp_dir().join(format!("iclora-cli-recipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = format!("{DEMO}/tiny-flux");
    let mut r = task_preset("film-storyboard").unwrap().example_recipe(
        ModelSource::Custom(ModelUrls { root: Some("https://models.example/tiny-flux".into()), ..Default::default() }),
        11,
    );
    (r.width, r.height, r.steps, r.adapters) = (64, 96, 2, Vec::new());
    let src = dir.join("recipe.png");
    std::fs::write(&src, iclora::recipe::png::encode_png(1, 1, &[0, 0, 0], Some(&r)).unwrap()).unwrap();
    let (from_recipe, from_flags) = (dir.join("a.png"), dir.join("b.png"));
    let (ok, _, err) = iclora(&[
        "generate",
        "--recipe",
        src.to_str().unwrap(),
        "--model",
        &model,
        "--out",
        from_recipe.to_str().unwrap(),
    ]);
    assert!(ok && err.contains("with its recipe"), "{err}");
    let (w, h, s, g, seed) =
        (r.width.to_string(), r.height.to_string(), r.steps.to_string(), r.guidance.to_string(), r.seed.to_string());
    let layout = format!("{}x{}", r.layout.rows, r.layout.cols);
    let (ok, _, err) = iclora(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        &r.prompt,
        "--width",
        &w,
        "--height",
        &h,
        "--steps",
        &s,
        "--guidance",
        &g,
        "--seed",
        &seed,
        "--layout",
        &layout,
        "--out",
        from_flags.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let pixels = |p: &std::path::Path| image::open(p).unwrap().to_rgb8().into_raw();
    assert_eq!(pixels(&from_recipe), pixels(&from_flags), "--recipe must give the flags' image");
    let written = iclora::recipe::png::recipe_from_png("a.png", &std::fs::read(&from_recipe).unwrap()).unwrap();
    assert_eq!(written.as_ref(), Some(&r), "the PNG carries the recipe");
    // Refusals: a setting given twice, a PNG without a recipe, a relative model without --base.
    let (ok, _, err) = iclora(&["generate", "--recipe", src.to_str().unwrap(), "--seed", "3", "--out", "/tmp/x.png"]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
    let (ok, _, err) =
        iclora(&["generate", "--recipe", from_flags.to_str().unwrap(), "--model", &model, "--out", "/tmp/x.png"]);
    assert!(!ok && err.contains("carries no recipe"), "{err}");
    r.model = ModelSource::Preset("tiny".into());
    std::fs::write(&src, iclora::recipe::png::encode_png(1, 1, &[0, 0, 0], Some(&r)).unwrap()).unwrap();
    let (ok, _, err) = iclora(&["generate", "--recipe", src.to_str().unwrap(), "--out", "/tmp/x.png"]);
    assert!(!ok && err.contains("relative") && err.contains("--base"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn generate_plan_lists_the_files_and_opens_no_gpu() {
    let model = common::TINY_FLUX;
    let settings = [
        "generate",
        "--model",
        model,
        "--prompt",
        "x",
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "1",
        "--guidance",
        "3.5",
        "--seed",
        "1",
    ];
    let (ok, out, err) = iclora(&[&settings[..], &["--plan"]].concat());
    assert!(ok, "{err}");
    let size = |rel: &str| std::fs::metadata(format!("{model}/{rel}")).unwrap().len();
    for (component, rel) in [
        ("transformer", "transformer/diffusion_pytorch_model-00001-of-00002.safetensors"),
        ("transformer", "transformer/diffusion_pytorch_model-00002-of-00002.safetensors"),
        ("T5 text encoder", "text_encoder_2/model.safetensors"),
        ("CLIP text encoder", "text_encoder/model.safetensors"),
        ("VAE", "vae/diffusion_pytorch_model.safetensors"),
    ] {
        let line =
            out.lines().find(|l| l.ends_with(&format!("{model}/{rel}"))).unwrap_or_else(|| panic!("{rel}: {out}"));
        assert!(line.starts_with(component) && line.contains(&format!(" {} bytes  local", size(rel))), "{line}");
    }
    assert!(out.ends_with("5 files, 0 bytes to read from other hosts\n"), "{out}");
    // No adapter line: the plan opens no GPU.
    assert!(!err.contains("lavapipe") && !err.contains("llvmpipe"), "{err}");
    // Without --plan, --out is still required.
    let (ok, _, err) = iclora(&settings);
    assert!(!ok && err.contains("--out"), "{err}");
}
