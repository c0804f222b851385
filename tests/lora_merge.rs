//! Merged LoRA (`FluxModel::merge_loras` / `unmerge_loras`, src/lora/merge.rs) on the dev-like tiny
//! FLUX transformer of tests/lora.rs: on an F32 base the merged model's forward equals the run-time
//! LoRA forward (1e-5 relative, the f32 bound of the LoRA tests) and diffusers + peft (1e-3, as
//! tests/lora.rs); unmerging gives the base back (1e-5); weights no adapter touches stay
//! bit-exact. On the fixture's F16 base (its F8 matrices load as F16) merged and run-time differ by
//! the one f16 rounding of each merged weight (2⁻¹² relative per value; 5e-3 on the output after
//! 4 blocks, measured 2.6e-3). Quantized and BF16 bases are refused with a typed error, unchanged.

mod common;
mod lora_common;

use common::{assert_close, gpu};
use iclora::gpu::DType;
use iclora::lora::LoraAdapter;
use iclora::lora::LoraHost;
use iclora::model::flux::{FluxModel, FluxWeights};
use iclora::Error;
use lora_common::{adapter, base, base_f32, config, expected, forward, RTOL, SAME_RTOL};

const F16_RTOL: f32 = 5e-3;

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn merged_f32_equals_run_time_and_diffusers_and_unmerges() {
    let mut model = base_f32();
    assert_eq!(model.weights.double_blocks[0].img_attn.qkv.w.dtype(), DType::F32);
    let base_out = forward(&model);
    let (a, b) = (adapter("lora_a_diffusers.safetensors"), adapter("lora_b_peft.safetensors"));
    let pairs = [(&a, 1.0), (&b, 0.6)];
    model.set_loras(gpu(), &pairs).unwrap();
    let run_time = forward(&model);
    model.clear_loras();

    let img_in = gpu().read_f32_blocking(&model.weights.img_in.w).unwrap();
    let applied = model.merge_loras(gpu(), &pairs).unwrap();
    assert_eq!(applied.weights, 28, "{:?}", applied.layers);
    assert!(model.weights.double_blocks[0].img_attn.qkv.lora.is_none(), "merged, not a run-time stack");
    let merged = forward(&model);
    assert_close("merged A@1 + B@0.6 vs run-time", &merged, &run_time, SAME_RTOL);
    assert_close("merged A@1 + B@0.6 vs diffusers", &merged, &expected("a1.0_b0.6"), RTOL);
    assert_eq!(gpu().read_f32_blocking(&model.weights.img_in.w).unwrap(), img_in, "img_in has no LoRA: bit-exact");

    // Run-time adapters on top of merged ones add up; clearing them keeps the merged ones.
    model.unmerge_loras(gpu(), &[(&b, 0.6)]).unwrap();
    assert_close("A merged", &forward(&model), &expected("a1.0"), RTOL);
    model.set_loras(gpu(), &[(&b, 0.6)]).unwrap();
    assert_close("A merged + B run-time", &forward(&model), &run_time, SAME_RTOL);
    model.clear_loras();
    model.unmerge_loras(gpu(), &[(&a, 1.0)]).unwrap();
    let unmerged = forward(&model);
    assert!(max_diff(&merged, &base_out) > 1e-2, "the adapters change the output");
    assert_close("unmerged", &unmerged, &base_out, SAME_RTOL);

    // Kohya's fused split-qkv form merges to the same weights as the diffusers names.
    model.merge_loras(gpu(), &[(&adapter("lora_a_kohya.safetensors"), 0.6)]).unwrap();
    assert_close("kohya A merged @0.6", &forward(&model), &expected("a0.6"), RTOL);
}

/// A random adapter on every block Linear whose delta is large enough to matter.
fn strong_random(model: &FluxModel, seed: u64) -> LoraAdapter {
    let mut a = LoraAdapter::random(&model.config, 4, seed).unwrap();
    for m in &mut a.modules {
        m.b.iter_mut().for_each(|v| *v *= 20.0);
    }
    a
}

fn random_model(dtype: DType) -> FluxModel {
    FluxModel { config: config(), weights: FluxWeights::random(gpu(), &config(), dtype, 7).unwrap() }
}

#[test]
fn merged_f16_base_matches_run_time_within_f16_rounding() {
    let mut model = base();
    assert_eq!(model.weights.double_blocks[0].img_attn.qkv.w.dtype(), DType::F16);
    let base_out = forward(&model);
    let (a, b) = (adapter("lora_a_diffusers.safetensors"), adapter("lora_b_peft.safetensors"));
    let pairs = [(&a, 1.0), (&b, -0.6)];
    model.set_loras(gpu(), &pairs).unwrap();
    let run_time = forward(&model);
    model.clear_loras();
    model.merge_loras(gpu(), &pairs).unwrap();
    assert_eq!(model.weights.double_blocks[1].img_attn.qkv.w.dtype(), DType::F16, "stays F16");
    assert_close("F16 merged vs run-time", &forward(&model), &run_time, F16_RTOL);
    model.unmerge_loras(gpu(), &pairs).unwrap();
    assert_close("F16 unmerged vs base", &forward(&model), &base_out, F16_RTOL);
}

#[test]
fn quantized_and_bf16_bases_are_refused_unchanged() {
    for dtype in [DType::Q8_0, DType::Q4_0, DType::BF16] {
        let mut model = random_model(dtype);
        let before = forward(&model);
        let a = strong_random(&model, 3);
        match model.merge_loras(gpu(), &[(&a, 1.0)]) {
            Err(Error::UnsupportedFormat { op, format, why }) => {
                assert_eq!((op, format.as_str()), ("LoRA merge", dtype.name()));
                assert!(why.contains("re-quantize") && why.contains("set_loras"), "{why}");
            }
            other => panic!("{dtype}: merge not refused: {:?}", other.map(|x| x.weights)),
        }
        assert_close(&format!("{dtype} unchanged"), &forward(&model), &before, 0.0);
        // Run-time mode works on the same base.
        model.set_loras(gpu(), &[(&a, 1.0)]).unwrap();
        assert!(max_diff(&forward(&model), &before) > 1e-3, "{dtype}: run-time LoRA applies");
    }
}
