//! The sampler's step cache (First-Block Cache, src/pipeline/step_cache.rs) on the tiny
//! diffusers-layout transformer (web/demo/tiny-flux/) with random text conditioning,
//! a 48×80 canvas (3×5 tokens).
//!
//! What is checked, and how tightly:
//! * Threshold 0 measures every non-forced step but never reuses: latents bit-for-bit those of the
//!   sampler without a cache, every step.
//! * A threshold above every distance reuses every step that is not forced: computed are exactly
//!   the first, the last, and (with a cap of `k` reuses in a row) every `k+1`-th step; the
//!   sampler's count and the per-step flags agree.
//! * A reused step's latents equal, to 1e-5 relative, `x + dt · final_layer(f + (a − f))`, with `f`
//!   the first block's output and `a` all blocks' output of the last computed step, composed on the
//!   CPU from the model's parts run separately.
//! * Settings are checked (threshold range, a cap of 0).

mod common;

use std::sync::OnceLock;

use common::{assert_close, gpu, random_text, tiny_transformer};
use iclora::gpu::Tensor;
use iclora::model::flux::{FluxHead, FluxInputs, FluxModel};
use iclora::pipeline::sampler::{SampleOptions, Sampler, StepInfo};
use iclora::pipeline::schedule::FluxVariant;
use iclora::pipeline::seed::flux_noise;
use iclora::pipeline::step_cache::StepCache;

const OPTS: SampleOptions =
    SampleOptions { height: 48, width: 80, steps: 8, guidance: Some(3.5), variant: FluxVariant::Dev, step_cache: None };
/// Above any distance the tiny model shows (they are printed by `threshold_zero_…`).
const HUGE: f32 = 10.0;

fn model() -> &'static FluxModel {
    tiny_transformer()
}

/// Random text conditioning of the model's shapes (8 text tokens).
fn text() -> &'static (Tensor, Tensor) {
    static T: OnceLock<(Tensor, Tensor)> = OnceLock::new();
    T.get_or_init(|| random_text(&model().config, 8, 11))
}

fn noise() -> Vec<f32> {
    flux_noise(5, OPTS.height, OPTS.width)
}

/// Runs the stepper to the end: the latents after every step, each step's info, the computed count.
fn run(cache: Option<StepCache>) -> (Vec<Vec<f32>>, Vec<StepInfo>, Option<usize>) {
    let g = gpu();
    let (txt, pooled) = text();
    let o = SampleOptions { step_cache: cache, ..OPTS };
    let mut s = Sampler::new(g, model(), txt, pooled, &noise(), &o, None).unwrap();
    let (mut out, mut infos) = (Vec::new(), Vec::new());
    while let Some(info) = s.step_blocking(g).unwrap() {
        out.push(g.read_f32_blocking(s.latents()).unwrap());
        infos.push(info);
    }
    (out, infos, s.computed())
}

fn flags(infos: &[StepInfo]) -> Vec<bool> {
    infos.iter().map(|i| i.cache.expect("a cached run reports every step").computed).collect()
}

#[test]
fn threshold_zero_measures_but_is_bit_identical_to_no_cache() {
    let (plain, infos, computed) = run(None);
    assert!(infos.iter().all(|i| i.cache.is_none()));
    assert_eq!(computed, None);
    let (cached, infos, computed) = run(Some(StepCache { threshold: 0.0, max_reuse: None }));
    assert_eq!(computed, Some(OPTS.steps));
    assert_eq!(flags(&infos), vec![true; OPTS.steps]);
    for (i, info) in infos.iter().enumerate() {
        let diff = info.cache.unwrap().diff;
        // Forced: the first and the last step; measured: all others.
        assert_eq!(diff.is_some(), i != 0 && i + 1 != OPTS.steps, "step {i}: {diff:?}");
        eprintln!("step {i}: distance {diff:?}");
        if let Some(d) = diff {
            assert!(d.is_finite() && d > 0.0 && d < HUGE as f64, "step {i}: distance {d}");
        }
    }
    for (i, (a, b)) in plain.iter().zip(&cached).enumerate() {
        assert_eq!(a, b, "step {i}: threshold 0 must not change a bit");
    }
}

#[test]
fn a_huge_threshold_computes_only_the_forced_steps() {
    // Steps 0..8; computed: the first, the last, and the step after each run of `cap` reuses.
    for (cap, expected) in [
        (None, vec![0, 7]),
        (Some(1), vec![0, 2, 4, 6, 7]),
        (Some(2), vec![0, 3, 6, 7]),
        (Some(3), vec![0, 4, 7]),
        (Some(100), vec![0, 7]),
    ] {
        let (_, infos, computed) = run(Some(StepCache { threshold: HUGE, max_reuse: cap }));
        let got: Vec<usize> = flags(&infos).iter().enumerate().filter(|(_, &c)| c).map(|(i, _)| i).collect();
        assert_eq!(got, expected, "cap {cap:?}: computed steps");
        assert_eq!(computed, Some(expected.len()), "cap {cap:?}: the sampler's count");
        // Every reused step was measured (below the threshold), and forced ones were not.
        for (i, info) in infos.iter().enumerate() {
            let c = info.cache.unwrap();
            if !c.computed {
                assert!(c.diff.is_some_and(|d| d < HUGE as f64), "cap {cap:?} step {i}: {c:?}");
            } else {
                assert!(c.diff.is_none(), "cap {cap:?} step {i}: a forced step measures nothing ({c:?})");
            }
        }
    }
}

/// What the sampler passes as the timestep (FluxPipeline's `(sigma·1000)/1000` in f32).
fn timestep(sigma: f32) -> f32 {
    (sigma * 1000.0) / 1000.0
}

/// The head (embedders + first double block) of `model` at `sigma` on latents `x`.
fn head(x: &[f32], sigma: f32) -> (FluxHead, Vec<f32>, Tensor, iclora::kernels::rope::RopeTables) {
    let (g, m) = (gpu(), model());
    let (txt, pooled) = text();
    let rope = m.rope_tables(g, txt.rows(), OPTS.height / 16, OPTS.width / 16).unwrap();
    let img = g.upload_f32(&[x.len() / m.config.in_channels, m.config.in_channels], x).unwrap();
    let inp = FluxInputs { img: &img, txt, pooled, timestep: timestep(sigma), guidance: OPTS.guidance, rope: &rope };
    let mut b = g.batch();
    let h = m.forward_head(g, &mut b, &inp, &mut |_, _| {}).unwrap();
    g.submit(b).unwrap();
    let out = g.read_f32_blocking(&h.img).unwrap();
    (h, out, img, rope)
}

#[test]
fn a_reused_step_is_the_first_block_plus_the_cached_residual() {
    let (g, m) = (gpu(), model());
    let (txt, pooled) = text();
    let (latents, infos, _) = run(Some(StepCache { threshold: HUGE, max_reuse: None }));
    assert_eq!(flags(&infos)[..3], [true, false, false]);
    let sigmas = {
        let o = SampleOptions { step_cache: None, ..OPTS };
        Sampler::new(g, m, txt, pooled, &noise(), &o, None).unwrap().sigmas().to_vec()
    };

    // Step 0 (computed) on the noise: the residual of the blocks after the first.
    let (h0, img0, x_t, rope) = head(&noise(), sigmas[0]);
    let inp =
        FluxInputs { img: &x_t, txt, pooled, timestep: timestep(sigmas[0]), guidance: OPTS.guidance, rope: &rope };
    let mut b = g.batch();
    let out0 = m.forward_tail(g, &mut b, &inp, &h0.svec, h0.txt.clone(), h0.img.clone(), &mut |_, _| {}).unwrap();
    g.submit(b).unwrap();
    let residual: Vec<f32> = g.read_f32_blocking(&out0).unwrap().iter().zip(&img0).map(|(o, h)| o - h).collect();

    // Steps 1 and 2 (reused): x_{i+1} = x_i + dt · final_layer(head_i + residual of step 0).
    for i in [1, 2] {
        let x = &latents[i - 1];
        let (h, img, _, _) = head(x, sigmas[i]);
        let composed: Vec<f32> = img.iter().zip(&residual).map(|(a, r)| a + r).collect();
        let mut b = g.batch();
        let v = m.final_layer(g, &mut b, &h.svec, &g.upload_f32(h.img.shape(), &composed).unwrap()).unwrap();
        g.submit(b).unwrap();
        let v = g.read_f32_blocking(&v).unwrap();
        let dt = sigmas[i + 1] - sigmas[i];
        let expected: Vec<f32> = x.iter().zip(&v).map(|(x, v)| x + dt * v).collect();
        assert_close(&format!("reused step {i}"), &latents[i], &expected, 1e-5);
    }
}

#[test]
fn settings_are_checked() {
    let (g, m) = (gpu(), model());
    let (txt, pooled) = text();
    for bad in [
        StepCache { threshold: -0.1, max_reuse: None },
        StepCache { threshold: f32::NAN, max_reuse: None },
        StepCache { threshold: HUGE * 2.0, max_reuse: None },
        StepCache { threshold: 0.1, max_reuse: Some(0) },
    ] {
        assert!(bad.check("test").is_err(), "{bad:?}");
        let o = SampleOptions { step_cache: Some(bad), ..OPTS };
        assert!(
            matches!(Sampler::new(g, m, txt, pooled, &noise(), &o, None), Err(iclora::Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
    assert!(StepCache { threshold: 0.12, max_reuse: Some(3) }.check("test").is_ok());
}
