//! The FLUX flow-matching sigma schedule and the Euler step
//! (diffusers `calculate_shift`, src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c;
//! `FlowMatchEulerDiscreteScheduler.set_timesteps` / `step`,
//! src/diffusers/schedulers/scheduling_flow_match_euler_discrete.py @ 58eb52c), matching diffusers'
//! FluxPipeline with `FlowMatchEulerDiscreteScheduler` value for value.
//!
//! diffusers computes the schedule in float32 numpy: the base sigmas are
//! `np.linspace(1.0, 1/N, N)` (float64) cast to float32, and the shift mixes
//! Python floats into float32 arrays, which rounds the Python float to float32
//! first. We follow the same rounding steps so the result is bit-exact, not just
//! close.

use crate::error::{Error, Result};

/// Which FLUX.1 model the schedule is for: dev shifts the schedule by image
/// size, schnell does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FluxVariant {
    Dev,
    Schnell,
}

/// The `FlowMatchEulerDiscreteScheduler` settings that shape the schedule
/// (the `scheduler/scheduler_config.json` of the FLUX.1 model repos).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// Resolution-dependent ("dynamic") shift with `mu` from the token count.
    pub use_dynamic_shifting: bool,
    /// Static shift, used only when `use_dynamic_shifting` is false.
    pub shift: f64,
    pub base_image_seq_len: usize,
    pub max_image_seq_len: usize,
    pub base_shift: f64,
    pub max_shift: f64,
    pub num_train_timesteps: f64,
}

impl FluxVariant {
    /// FLUX.1-dev: dynamic shifting (its `shift: 3.0` is then unused);
    /// FLUX.1-schnell: no dynamic shifting and `shift: 1.0`, i.e. no shift at all.
    pub fn scheduler_config(self) -> SchedulerConfig {
        let dev = self == FluxVariant::Dev;
        SchedulerConfig {
            use_dynamic_shifting: dev,
            shift: if dev { 3.0 } else { 1.0 },
            base_image_seq_len: 256,
            max_image_seq_len: 4096,
            base_shift: 0.5,
            max_shift: 1.15,
            num_train_timesteps: 1000.0,
        }
    }
}

/// `mu` for the dynamic shift: linear in the image token count through
/// (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift), not
/// clamped (diffusers' `calculate_shift`, in float64 like Python).
pub fn calculate_shift(image_tokens: usize, cfg: &SchedulerConfig) -> f64 {
    let m = (cfg.max_shift - cfg.base_shift) / (cfg.max_image_seq_len as f64 - cfg.base_image_seq_len as f64);
    let b = cfg.base_shift - m * cfg.base_image_seq_len as f64;
    image_tokens as f64 * m + b
}

/// numpy's `linspace(1.0, 1/n, n)` in float64 (`start + i·step`, the last value
/// set to the end point exactly), then cast to float32 as the scheduler does.
fn base_sigmas(n: usize) -> Vec<f32> {
    let start = 1.0f64;
    let stop = 1.0 / n as f64;
    if n == 1 {
        return vec![start as f32];
    }
    let step = (stop - start) / (n - 1) as f64;
    (0..n).map(|i| if i == n - 1 { stop as f32 } else { (i as f64 * step + start) as f32 }).collect()
}

/// The sigmas of a FLUX run with `steps` Euler steps on `image_tokens` packed
/// image tokens (`(H/16)·(W/16)`): `steps + 1` values from 1.0 down to the
/// final 0. `steps == 0` gives an empty schedule.
pub fn flux_sigmas(steps: usize, image_tokens: usize, variant: FluxVariant) -> Vec<f32> {
    sigmas_for_config(steps, image_tokens, &variant.scheduler_config())
}

/// [`flux_sigmas`] for an explicit scheduler configuration.
pub fn sigmas_for_config(steps: usize, image_tokens: usize, cfg: &SchedulerConfig) -> Vec<f32> {
    if steps == 0 {
        return Vec::new();
    }
    let mut sigmas: Vec<f32> = if cfg.use_dynamic_shifting {
        // exp(mu) / (exp(mu) + (1/t − 1)^1), float32 with exp(mu) rounded to float32.
        let e = calculate_shift(image_tokens, cfg).exp() as f32;
        base_sigmas(steps).into_iter().map(|t| e / (e + (1.0f32 / t - 1.0))).collect()
    } else {
        // shift·t / (1 + (shift − 1)·t), float32.
        let s = cfg.shift as f32;
        let s1 = (cfg.shift - 1.0) as f32;
        base_sigmas(steps).into_iter().map(|t| s * t / (1.0 + s1 * t)).collect()
    };
    sigmas.push(0.0);
    sigmas
}

/// The timestep values the pipeline loop sees, `sigma · 1000` in float32 for
/// every sigma but the final 0 (the transformer divides by 1000 again).
pub fn timesteps(sigmas: &[f32], cfg: &SchedulerConfig) -> Vec<f32> {
    let n = sigmas.len().saturating_sub(1);
    sigmas[..n].iter().map(|&s| s * cfg.num_train_timesteps as f32).collect()
}

/// One Euler step of the flow ODE on the CPU (`FlowMatchEulerDiscreteScheduler.step`,
/// src/diffusers/schedulers/scheduling_flow_match_euler_discrete.py @ 58eb52c):
/// `x ← x + (sigma_next − sigma)·v`, with the step size rounded to float32 first
/// as the scheduler does. `x` and `v` must have the same length.
pub fn euler_step(x: &mut [f32], v: &[f32], sigma: f32, sigma_next: f32) -> Result<()> {
    if x.len() != v.len() {
        return Err(Error::ShapeMismatch {
            op: "euler_step",
            expected: format!("velocity of {} elements (like the latents)", x.len()),
            got: format!("{} elements", v.len()),
        });
    }
    let dt = sigma_next - sigma;
    for (xi, vi) in x.iter_mut().zip(v) {
        *xi += dt * vi;
    }
    Ok(())
}
