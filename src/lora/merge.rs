//! Merged LoRA (`LoraHost::merge_loras`, `unmerge_loras`; `alpha / rank` as in diffusers'
//! `_convert_kohya_flux_lora_to_diffusers`, src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c):
//! `W' = W + Σ sᵢ·(αᵢ/rᵢ)·Bᵢ·Aᵢ`
//! written into F32 or F16 base weights on the GPU, so later steps run plain matmuls without the
//! LoRA epilogue. The delta of one weight is one call of the existing matmul with its gated
//! residual epilogue: `x = B_pad` `[n, R]` (every group's B, pre-scaled, at its rows; zero rows
//! elsewhere, so untouched rows stay bit-exact), `w = A_stackᵀ` `[k, R]`, residual `W`, gate 1:
//! `y = W + B_pad·A_stack`. Quantized (and BF16) bases are refused: merging would re-quantize
//! (re-round) the weight and lose precision; run-time mode (`set_loras`) keeps them exact.
//! `unmerge_loras` subtracts the same delta (exact up to one f32/f16 rounding of each weight).

use std::collections::HashMap;

use super::parse::LoraAdapter;
use super::stack::{Group, LoraApplied, Plan};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Tensor};
use crate::kernels::matmul::{matmul, Epilogue, Gate};
use crate::model::layers::Linear;

/// `W + sign·Σ_groups B·A` for weight `w` `[n, k]` (F32 or F16), as a new tensor of `w`'s dtype.
fn merged(gpu: &Gpu, w: &Tensor, groups: &[Group], sign: f32) -> Result<Tensor> {
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let parts: Vec<_> = groups.iter().map(|g| (g.slice(), g.factors())).collect();
    let r: usize = parts.iter().map(|(s, _)| s.rank).sum();
    let (mut b_pad, mut a_t) = (vec![0.0f32; n * r], vec![0.0f32; k * r]);
    let mut col = 0;
    for (s, (a, b)) in &parts {
        for row in 0..s.len {
            for j in 0..s.rank {
                b_pad[(s.n0 + row) * r + col + j] = sign * s.scale * b[row * s.rank + j];
            }
        }
        for j in 0..s.rank {
            for c in 0..k {
                a_t[c * r + col + j] = a[j * k + c];
            }
        }
        col += s.rank;
    }
    let x = match w.dtype() {
        DType::F16 => gpu.upload_half(&[n, r], &b_pad, DType::F16)?,
        _ => gpu.upload_f32(&[n, r], &b_pad)?,
    };
    let (a_t, ones) = (gpu.upload_f32(&[k, r], &a_t)?, gpu.upload_f32(&[k], &vec![1.0; k])?);
    let mut b = gpu.batch();
    let y = matmul(
        gpu,
        &mut b,
        &x,
        &a_t,
        &Epilogue { gate: Some(Gate { residual: w, gate: &ones, offset: 0 }), ..Default::default() },
    )?;
    gpu.submit(b)?;
    Ok(y)
}

/// `W ± Σ B·A` into every Linear of `linears` that `plan` touches (`LoraHost::merge_loras`).
pub(super) fn merge_signed(
    gpu: &Gpu,
    plan: &Plan,
    adapters: &[(&LoraAdapter, f32)],
    linears: Vec<(String, &mut Linear)>,
    sign: f32,
) -> Result<LoraApplied> {
    let mut weights: HashMap<String, &mut Tensor> =
        linears.into_iter().filter(|(n, _)| plan.contains_key(n)).map(|(n, l)| (n, &mut l.w)).collect();
    for name in plan.keys() {
        let dtype = weights.get(name).map_or(DType::F32, |w| w.dtype());
        if !matches!(dtype, DType::F32 | DType::F16) {
            return Err(Error::UnsupportedFormat {
                op: "LoRA merge",
                format: dtype.to_string(),
                why: format!("`{name}` is stored as {dtype}: merging would re-quantize it and lose precision; apply the LoRA in run-time mode (set_loras) instead"),
            });
        }
    }
    let mut done: Vec<&String> = Vec::new();
    for (name, groups) in plan {
        let Some(w) = weights.get_mut(name) else { continue };
        match merged(gpu, w, groups, sign) {
            Ok(y) => {
                **w = y;
                done.push(name);
            }
            Err(e) => {
                // Best effort: put back what was merged so far; the first error is the one reported.
                for n in done {
                    if let (Some(w), Some(g)) = (weights.get_mut(n), plan.get(n)) {
                        if let Ok(y) = merged(gpu, w, g, -sign) {
                            **w = y;
                        }
                    }
                }
                return Err(e);
            }
        }
    }
    let layers: Vec<String> = plan.keys().cloned().collect();
    let slices = plan.values().map(Vec::len).sum();
    Ok(LoraApplied {
        adapters: adapters.iter().map(|(a, _)| a.report.clone()).collect(),
        weights: layers.len(),
        layers,
        slices,
    })
}
