//! `iclora generate --step-cache` on the tiny diffusers-layout pipeline (web/demo/tiny-flux/):
//! threshold 0 writes the same PNG, byte for byte, as no cache; a threshold above every distance
//! computes only the forced steps; the closing `step cache: computed C of N steps` line agrees with
//! the per-step lines; bad settings are refused with a message naming the flag.

use std::path::PathBuf;
use std::process::{Command, Output};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web/demo/tiny-flux");
const STEPS: usize = 6;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iclora-step-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The "wide" golden case's prompt and canvas with more steps, plus `extra`; `(output, PNG bytes)`.
fn generate(name: &str, extra: &[&str]) -> (Output, Vec<u8>) {
    let out = tmp(name);
    let steps = STEPS.to_string();
    let mut args = vec![
        "generate",
        "--model",
        MODEL,
        "--prompt",
        "[SCENE-1] a cozy cabin at dusk; [SCENE-2] the same cabin at dawn",
    ];
    args.extend([
        "--width",
        "96",
        "--height",
        "64",
        "--steps",
        &steps,
        "--guidance",
        "2.5",
        "--seed",
        "7",
        "--max-sequence-length",
        "48",
    ]);
    let out_s = out.display().to_string();
    args.extend(["--out", &out_s]);
    args.extend(extra);
    let o = Command::new(env!("CARGO_BIN_EXE_iclora")).args(&args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap();
    let png = if o.status.success() { std::fs::read(&out).unwrap() } else { Vec::new() };
    (o, png)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `(computed, cached)` counted from the per-step lines, and the closing line's `C`.
fn counts(log: &str) -> (usize, usize, usize) {
    let steps: Vec<&str> = log.lines().filter(|l| l.starts_with("step ") && l.contains(" → ")).collect();
    assert_eq!(steps.len(), STEPS, "{log}");
    let computed = steps.iter().filter(|l| l.contains("(computed")).count();
    let cached = steps.iter().filter(|l| l.contains("(cached")).count();
    let summary: Vec<&str> = log.lines().filter(|l| l.starts_with("step cache:")).collect();
    assert_eq!(summary.len(), 1, "one summary line expected in:\n{log}");
    let c = summary[0]
        .strip_prefix("step cache: computed ")
        .and_then(|r| r.strip_suffix(&format!(" of {STEPS} steps")))
        .unwrap_or_else(|| panic!("summary line not in the documented form: {:?}", summary[0]));
    (computed, cached, c.parse().unwrap())
}

#[test]
fn threshold_zero_is_the_same_png_and_a_huge_one_computes_only_forced_steps() {
    let (plain, plain_png) = generate("plain.png", &[]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(!stderr(&plain).contains("step cache"), "no cache, no cache line:\n{}", stderr(&plain));

    let (zero, zero_png) = generate("zero.png", &["--step-cache", "0"]);
    let log = stderr(&zero);
    assert!(zero.status.success(), "{log}");
    assert_eq!(counts(&log), (STEPS, 0, STEPS));
    assert!(zero_png == plain_png, "threshold 0 must write the same PNG as no cache");

    let (huge, huge_png) = generate("huge.png", &["--step-cache", "10"]);
    let log = stderr(&huge);
    assert!(huge.status.success(), "{log}");
    assert_eq!(counts(&log), (2, STEPS - 2, 2), "only the first and the last step are forced:\n{log}");
    assert!(huge_png != plain_png, "reusing 4 of 6 steps changes the image");

    let (capped, _) = generate("capped.png", &["--step-cache", "10", "--step-cache-max-reuse", "2"]);
    let log = stderr(&capped);
    assert!(capped.status.success(), "{log}");
    // Steps 0..6: 0 computed, 1-2 reused, 3 computed, 4 reused, 5 (the last) computed.
    assert_eq!(counts(&log), (3, 3, 3), "{log}");
}

#[test]
fn bad_step_cache_settings_are_refused() {
    for (extra, needle) in [
        (&["--step-cache", "-1"][..], "--step-cache"),
        (&["--step-cache", "abc"][..], "invalid value 'abc' for '--step-cache <THRESHOLD>'"),
        (&["--step-cache", "0.1", "--step-cache-max-reuse", "0"][..], "--step-cache"),
        (&["--step-cache-max-reuse", "2"][..], "required arguments were not provided:\n  --step-cache <THRESHOLD>"),
    ] {
        let (o, _) = generate("bad.png", extra);
        let log = stderr(&o);
        assert!(!o.status.success(), "{extra:?} should fail");
        assert!(log.contains(needle), "{extra:?}: expected `{needle}` in:\n{log}");
    }
}
