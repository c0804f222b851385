//! The FLUX sigma schedule and Euler step against diffusers' FluxPipeline +
//! FlowMatchEulerDiscreteScheduler (tools/golden/make_sampler_fixtures.py).
//! Tolerance: 1e-6 absolute on sigmas, 1e-3 absolute on timesteps (= sigma·1000,
//! i.e. the same relative bar); we also report bit-exactness.

use iclora::pipeline::schedule::{calculate_shift, euler_step, flux_sigmas, timesteps, FluxVariant};
use iclora::Error;
use safetensors::SafeTensors;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden/sampler.safetensors");
const STEPS: [usize; 4] = [1, 4, 20, 28];
const TOKENS: [usize; 5] = [16, 256, 1024, 4096, 6144];

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(FIXTURE).unwrap_or_else(|e| panic!("{FIXTURE}: {e} (run tools/golden/make_sampler_fixtures.py)"))
}

fn tensor(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("fixture tensor {name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Asserts `|got − expected| ≤ tol`; returns how many values differ in any bit.
fn assert_abs(what: &str, got: &[f32], expected: &[f32], tol: f32) -> usize {
    assert_eq!(got.len(), expected.len(), "{what}: length (got {got:?}, expected {expected:?})");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= tol, "{what}: index {i}: got {g}, expected {e}");
    }
    got.iter().zip(expected).filter(|(g, e)| g.to_bits() != e.to_bits()).count()
}

#[test]
fn sigmas_and_timesteps_match_diffusers() {
    let bytes = fixture_bytes();
    let st = SafeTensors::deserialize(&bytes).expect("fixture parses");
    let mut inexact = 0;
    for (variant, name) in [(FluxVariant::Dev, "dev"), (FluxVariant::Schnell, "schnell")] {
        let cfg = variant.scheduler_config();
        for n in STEPS {
            for t in TOKENS {
                let key = format!("{name}/steps{n}/tokens{t}");
                let sigmas = flux_sigmas(n, t, variant);
                assert_eq!(sigmas.len(), n + 1, "{key}: N + 1 sigmas");
                assert_eq!(sigmas[n], 0.0, "{key}: ends at 0");
                inexact += assert_abs(&format!("sigmas/{key}"), &sigmas, &tensor(&st, &format!("sigmas/{key}")), 1e-6);
                let ts = timesteps(&sigmas, &cfg);
                inexact +=
                    assert_abs(&format!("timesteps/{key}"), &ts, &tensor(&st, &format!("timesteps/{key}")), 1e-3);
            }
        }
    }
    eprintln!("sigmas and timesteps: {inexact} values not bit-exact");
}

#[test]
fn schedule_properties_from_the_reference() {
    // schnell is unshifted (BFL `get_schedule(..., shift=(name != "flux-schnell"))`,
    // src/flux/cli.py @ 802fb47); mu is 1.15 at 4096 tokens, 0.5 at 256 (diffusers `calculate_shift`,
    // src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c).
    assert_eq!(flux_sigmas(4, 4096, FluxVariant::Schnell), vec![1.0, 0.75, 0.5, 0.25, 0.0]);
    let cfg = FluxVariant::Dev.scheduler_config();
    assert!((calculate_shift(4096, &cfg) - 1.15).abs() < 1e-12);
    assert!((calculate_shift(256, &cfg) - 0.5).abs() < 1e-12);
    assert!((calculate_shift(4080, &cfg) - 1.14729).abs() < 1e-5);
    // 1024², 28 steps: 1.0, 0.988409, 0.976222, …, 0.104721, 0.
    let s = flux_sigmas(28, 4096, FluxVariant::Dev);
    for (i, want) in [(0, 1.0), (1, 0.988409), (2, 0.976222), (27, 0.104721), (28, 0.0)] {
        assert!((s[i] - want).abs() < 1e-6, "sigma {i}: {} vs {want}", s[i]);
    }
    // Dev shifts up more for bigger images; sigmas decrease strictly.
    let (small, big) = (flux_sigmas(20, 256, FluxVariant::Dev), flux_sigmas(20, 4096, FluxVariant::Dev));
    assert!(small.windows(2).all(|w| w[0] > w[1]) && big.windows(2).all(|w| w[0] > w[1]));
    assert!(small[1..20].iter().zip(&big[1..20]).all(|(a, b)| a < b));
    assert!(flux_sigmas(0, 4096, FluxVariant::Dev).is_empty());
}

#[test]
fn euler_step_matches_the_scheduler() {
    let bytes = fixture_bytes();
    let st = SafeTensors::deserialize(&bytes).expect("fixture parses");
    let (mut x, v, want, sig) =
        (tensor(&st, "euler/x"), tensor(&st, "euler/v"), tensor(&st, "euler/out"), tensor(&st, "euler/sigmas"));
    // The step's sigmas are our own schedule's (dev, 4 steps, 256 tokens, step 1 → 2).
    let ours = flux_sigmas(4, 256, FluxVariant::Dev);
    assert_eq!(&ours[1..3], &sig[..], "fixture step sigmas");
    euler_step(&mut x, &v, sig[0], sig[1]).expect("same lengths");
    let inexact = assert_abs("euler", &x, &want, 1e-6);
    eprintln!("euler step: {inexact} values not bit-exact");
}

#[test]
fn euler_step_rejects_mismatched_lengths() {
    let mut x = vec![0f32; 64];
    let err = euler_step(&mut x, &[0f32; 63], 1.0, 0.5).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "euler_step", .. }), "{err}");
}
