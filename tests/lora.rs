//! LoRA adapters (src/lora/) on the dev-like tiny FLUX transformer against diffusers + peft
//! (fixtures from tools/golden/make_lora_fixtures.py): adapter A (rank 4, alpha 8, every block
//! Linear and the final layer) in diffusers, kohya and BFL-native names at strengths 1.0 and 0.6,
//! adapter B (rank 2, alpha 3, raw PEFT names with `.alpha` keys), both at once; typed errors for
//! unsupported kinds and foreign shapes, with the base model unchanged afterwards.
//! Tolerance: 1e-3 relative to max(|expected|, rms) on the final output (`assert_close`), the
//! bound of the FLUX golden test; formats of one adapter agree with each other to 1e-5.
//! LoRA on a quantized (Q8_0/Q4_0) base is tested at matmul level in tests/kernels_matmul.rs.

mod common;
mod lora_common;

use common::{assert_close, gpu};
use iclora::gpu::DType;
use iclora::lora::LoraHost;
use iclora::lora::{LoraAdapter, LoraFormat};
use iclora::model::flux::FluxModel;
use iclora::weights::load::{read_header, FileSource, MemSource};
use iclora::weights::safetensors::write_safetensors;
use iclora::weights::tensor_info::{FileDType, TensorData};
use iclora::Error;
use lora_common::{
    adapter, base, config, expected, f32_tensor, fixture, forward, forward_io, rewrite, DIR, RTOL, SAME_RTOL,
};
use safetensors::SafeTensors;

#[test]
fn diffusers_format_matches_diffusers_and_rescales_without_reload() {
    let mut model = base();
    let base_out = forward(&model);
    assert_close("base", &base_out, &fixture("flux_dev.io.safetensors", "out/final").1, RTOL);
    let a = adapter("lora_a_diffusers.safetensors");
    assert_eq!(a.report.formats, [LoraFormat::Diffusers]);
    assert_eq!(a.report.ranks, [4]);
    // 2 double blocks × 10 Linears, 2 single × 3, final layer 2.
    assert_eq!(a.report.layers.len(), 2 * 10 + 2 * 3 + 2, "{:?}", a.report.layers);
    assert!(a.modules.iter().all(|m| m.alpha == 8.0), "alpha from lora_adapter_metadata");
    let applied = model.set_loras(gpu(), &[(&a, 1.0)]).unwrap();
    assert_eq!(applied.weights, 28);
    assert_close("A diffusers @1.0", &forward(&model), &expected("a1.0"), RTOL);
    model.set_lora_scales(&[(&a, 0.6)]).unwrap();
    assert_close("A diffusers @0.6 (rescaled)", &forward(&model), &expected("a0.6"), RTOL);
    model.clear_loras();
    assert_close("cleared", &forward(&model), &base_out, SAME_RTOL);
}

#[test]
fn kohya_and_bfl_native_formats_match_diffusers_and_each_other() {
    let mut model = base();
    model.set_loras(gpu(), &[(&adapter("lora_a_diffusers.safetensors"), 1.0)]).unwrap();
    let ours_diffusers = forward(&model);
    for (file, format) in
        [("lora_a_kohya.safetensors", LoraFormat::Kohya), ("lora_a_bfl.safetensors", LoraFormat::BflNative)]
    {
        let a = adapter(file);
        assert_eq!(a.report.formats, [format], "{file}");
        assert_eq!(a.report.ranks, [4, 12, 16], "{file}: plain, split-qkv 3r and linear1 4r forms");
        model.set_loras(gpu(), &[(&a, 1.0)]).unwrap();
        let out = forward(&model);
        assert_close(&format!("{file} @1.0"), &out, &expected("a1.0"), RTOL);
        assert_close(&format!("{file} vs diffusers format"), &out, &ours_diffusers, SAME_RTOL);
        model.set_lora_scales(&[(&a, 0.6)]).unwrap();
        assert_close(&format!("{file} @0.6"), &forward(&model), &expected("a0.6"), RTOL);
    }
}

#[test]
fn two_adapters_at_once_match_set_adapters() {
    let mut model = base();
    let (a, b) = (adapter("lora_a_diffusers.safetensors"), adapter("lora_b_peft.safetensors"));
    assert_eq!(
        (b.report.formats.as_slice(), b.report.ranks.as_slice()),
        ([LoraFormat::Diffusers].as_slice(), [2].as_slice())
    );
    assert!(b.modules.iter().all(|m| m.alpha == 3.0), "alpha from `.alpha` keys");
    model.set_loras(gpu(), &[(&b, 1.0)]).unwrap();
    assert_close("B @1.0", &forward(&model), &expected("b1.0"), RTOL);
    model.set_loras(gpu(), &[(&a, 1.0), (&b, 0.6)]).unwrap();
    assert_close("A @1.0 + B @0.6", &forward(&model), &expected("a1.0_b0.6"), RTOL);
    // Kohya A with PEFT B: the same sum.
    model.set_loras(gpu(), &[(&adapter("lora_a_kohya.safetensors"), 1.0), (&b, 0.6)]).unwrap();
    assert_close("kohya A + B", &forward(&model), &expected("a1.0_b0.6"), RTOL);
}

#[test]
fn many_adapters_on_one_weight_share_slices() {
    // 3 × A in diffusers form puts 12 slices on each linear1 (> 8 per stack): each adapter's
    // q/k/v/mlp pieces become one block-diagonal slice. 3 × (1/3) A = A.
    let mut model = base();
    let a = adapter("lora_a_diffusers.safetensors");
    let applied = model.set_loras(gpu(), &[(&a, 1.0 / 3.0), (&a, 1.0 / 3.0), (&a, 1.0 / 3.0)]).unwrap();
    assert!(applied.slices < 3 * a.modules.len(), "{applied:?}");
    assert_close("3 × A/3", &forward(&model), &expected("a1.0"), RTOL);
}

#[test]
fn xlabs_format_equals_bfl_native_subset() {
    // XLabs covers qkv and proj of both streams and single blocks' qkv (rows 0..3H of linear1)
    // and linear2, alpha-free (scale = strength). The same factors in BFL-native names with
    // alpha = rank must give the same output.
    let h = config().hidden();
    let xlabs_name = |k: &str| -> Option<String> {
        let k = k.strip_prefix("diffusion_model.")?;
        let (m, suffix) = k.rsplit_once(".lora_")?;
        let s = if suffix.starts_with('A') { "down.weight" } else { "up.weight" };
        let mut it = m.splitn(3, '.');
        let (kind, i, rest) = (it.next()?, it.next()?, it.next()?);
        let blk = format!("{kind}.{i}.");
        let p = match rest {
            "img_attn.qkv" => "qkv_lora1",
            "txt_attn.qkv" => "qkv_lora2",
            "img_attn.proj" => "proj_lora1",
            "txt_attn.proj" => "proj_lora2",
            "linear2" => "proj_lora",
            _ => return None,
        };
        Some(format!("{blk}processor.{p}.{s}"))
    };
    let mut xsrc = rewrite("lora_a_bfl.safetensors", xlabs_name, vec![]);
    let x = LoraAdapter::load(&mut xsrc, &config()).unwrap();
    assert_eq!(x.report.formats, [LoraFormat::XLabs]);
    let keep = |k: &str| xlabs_name(k).map(|_| k.to_string()).filter(|_| !k.ends_with(".alpha"));
    let mut nsrc = rewrite("lora_a_bfl.safetensors", keep, vec![]);
    let n = LoraAdapter::load(&mut nsrc, &config()).unwrap();
    assert!(n.modules.iter().all(|m| m.alpha == m.rank as f32), "alpha = r when absent");
    let mut model = base();
    model.set_loras(gpu(), &[(&x, 0.8)]).unwrap();
    let out_x = forward(&model);
    model.set_loras(gpu(), &[(&n, 0.8)]).unwrap();
    assert_close("XLabs vs BFL-native", &out_x, &forward(&model), SAME_RTOL);
    assert_eq!(x.modules.len(), 2 * 4 + 2, "qkv and proj of both streams per double block, linear2 per single block");
    assert!(x.modules.iter().all(|m| !m.target.bfl.ends_with("qkv") || m.target.len == 3 * h));
}

#[test]
fn text_encoder_parts_are_reported() {
    let extra = vec![
        f32_tensor("lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", &[4, 32], 0.1),
        f32_tensor("lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", &[32, 4], 0.1),
        f32_tensor("lora_te2_encoder_block_0_layer_0_SelfAttention_q.lora_down.weight", &[4, 32], 0.1),
    ];
    let mut src = rewrite("lora_a_kohya.safetensors", |k| Some(k.into()), extra);
    let a = LoraAdapter::load(&mut src, &config()).unwrap();
    // The CLIP module is parsed for the CLIP encoder (tests/lora_clip.rs), the T5 one ignored.
    assert_eq!(a.clip.len(), 1);
    assert_eq!(a.report.clip_layers, ["text_model.encoder.layers.0.self_attn.q_proj"]);
    let ignored: Vec<&str> = a.report.ignored.iter().map(|(_, why)| why.as_str()).collect();
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert!(ignored[0].contains("T5"));
}

/// A LoRA that must be refused: the typed error names `key`; the model is unchanged.
fn refused(mut src: MemSource, key: &str, model: &mut FluxModel, expected_out: &[f32]) {
    match LoraAdapter::load(&mut src, &config()) {
        Err(Error::Lora { key: k, .. }) | Err(Error::TensorShape { name: k, .. }) => assert_eq!(k, key),
        Err(e) => panic!("{key}: unexpected error {e}"),
        Ok(_) => panic!("{key}: accepted"),
    }
    assert_close(&format!("after refusing {key}"), &forward(model), expected_out, SAME_RTOL);
}

#[test]
fn unsupported_kinds_and_foreign_shapes_are_typed_errors_and_leave_the_model_alone() {
    let mut model = base();
    let base_out = forward(&model);
    let all = |k: &str| Some(k.to_string());
    let q = "transformer.transformer_blocks.0.attn.to_q";
    for (extra, key) in [
        (
            f32_tensor(&format!("{q}.lora_magnitude_vector.dora_scale"), &[1, 256], 1.0),
            format!("{q}.lora_magnitude_vector.dora_scale"),
        ),
        (
            f32_tensor("lora_unet_double_blocks_0_img_attn_qkv.lokr_w1", &[4, 4], 1.0),
            "lora_unet_double_blocks_0_img_attn_qkv.lokr_w1".into(),
        ),
        (f32_tensor("diffusion_model.img_in.diff", &[256, 64], 1.0), "diffusion_model.img_in.diff".into()),
        (
            f32_tensor("transformer.transformer_blocks.7.attn.to_q.lora_A.weight", &[4, 256], 1.0),
            "transformer.transformer_blocks.7.attn.to_q.lora_A.weight".into(),
        ),
    ] {
        refused(rewrite("lora_a_diffusers.safetensors", all, vec![extra]), &key, &mut model, &base_out);
    }
    // A FLUX.1 LoRA (hidden 3072) on the tiny model: shape mismatch on the first module.
    let a_key = format!("{q}.lora_A.weight");
    let drop_q = |k: &str| (!k.starts_with(q)).then(|| k.to_string());
    let big = vec![f32_tensor(&a_key, &[4, 3072], 0.1), f32_tensor(&format!("{q}.lora_B.weight"), &[3072, 4], 0.1)];
    refused(rewrite("lora_a_diffusers.safetensors", drop_q, big), &a_key, &mut model, &base_out);
    // With an adapter applied, a refused set_loras (adapter parsed for another config) keeps it.
    let a = adapter("lora_a_diffusers.safetensors");
    model.set_loras(gpu(), &[(&a, 1.0)]).unwrap();
    let mut other = config();
    other.double_blocks = 3;
    let mut src = FileSource::open(format!("{DIR}/lora_a_diffusers.safetensors")).unwrap();
    let mut foreign = LoraAdapter::load(&mut src, &other).unwrap();
    foreign.modules[0].target.k += 1;
    assert!(matches!(model.set_loras(gpu(), &[(&a, 0.5), (&foreign, 1.0)]), Err(Error::Lora { .. })));
    assert!(matches!(model.set_lora_scales(&[(&a, 0.5), (&a, 1.0)]), Err(Error::InvalidArgument(_))));
    assert_close("A kept after refusals", &forward(&model), &expected("a1.0"), RTOL);
    model.clear_loras();
    assert_close("base after clear", &forward(&model), &base_out, SAME_RTOL);
}

#[test]
fn kohya_mixture_names_equal_diffusers_names() {
    // `lora_transformer_<diffusers path with _>` (kohya "mixture"), alpha from explicit keys.
    let mixture = |k: &str| -> Option<String> {
        let (m, s) = k.strip_prefix("transformer.")?.rsplit_once(".lora_")?;
        let s = if s.starts_with('A') { "lora_down.weight" } else { "lora_up.weight" };
        Some(format!("lora_transformer_{}.{s}", m.replace('.', "_")))
    };
    let a = adapter("lora_a_diffusers.safetensors");
    let alphas: Vec<TensorData> = a
        .modules
        .iter()
        .map(|m| {
            f32_tensor(
                &format!("lora_transformer_{}.alpha", m.key.trim_start_matches("transformer.").replace('.', "_")),
                &[],
                8.0,
            )
        })
        .collect();
    let bytes = std::fs::read(format!("{DIR}/lora_a_diffusers.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<TensorData> = st
        .tensors()
        .into_iter()
        .filter_map(|(k, t)| {
            mixture(&k).map(|name| TensorData {
                name,
                shape: t.shape().iter().map(|&d| d as u64).collect(),
                dtype: FileDType::Gpu(DType::F16),
                data: t.data().to_vec(),
            })
        })
        .chain(alphas)
        .collect();
    // No `lora_adapter_metadata` here: alpha must come from the `.alpha` keys.
    let mut src = MemSource { name: "mixture".into(), bytes: write_safetensors(&[], &tensors).unwrap() };
    let m = LoraAdapter::load(&mut src, &config()).unwrap();
    assert_eq!(m.report.formats, [LoraFormat::Kohya]);
    assert!(m.modules.iter().all(|x| x.alpha == 8.0));
    let mut model = base();
    model.set_loras(gpu(), &[(&m, 1.0)]).unwrap();
    assert_close("mixture @1.0", &forward(&model), &expected("a1.0"), RTOL);
}

#[test]
fn final_layer_halves_follow_the_base_order() {
    // One final-layer LoRA in diffusers order (`norm_out.linear`, scale | shift) and the same in
    // BFL order (`final_layer.adaLN_modulation.1`, B halves swapped), each on the odd model loaded
    // from diffusers names and from BFL names: all four outputs agree, and differ from the base.
    let odd = |f: &str| -> FluxModel {
        let mut src = FileSource::open(format!("{DIR}/{f}")).unwrap();
        let header = read_header(&mut src).unwrap();
        FluxModel::load(gpu(), &mut src, &header, None).unwrap()
    };
    let (mut dif, mut bfl) = (odd("flux_odd.safetensors"), odd("flux_odd_bfl.safetensors"));
    let (h, r) = (dif.config.hidden(), 3);
    let a: Vec<f32> = (0..r * h).map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.4).collect();
    let b: Vec<f32> = (0..2 * h * r).map(|i| ((i * 53 % 97) as f32 / 97.0 - 0.5) * 0.2).collect();
    let swapped: Vec<f32> = b[h * r..].iter().chain(&b[..h * r]).copied().collect();
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let file = |name: &str, up: &[f32]| -> LoraAdapter {
        let t = |n: String, shape: Vec<u64>, v: &[f32]| TensorData {
            name: n,
            shape,
            dtype: FileDType::Gpu(DType::F32),
            data: bytes(v),
        };
        let tensors = [
            t(format!("{name}.lora_A.weight"), vec![r as u64, h as u64], &a),
            t(format!("{name}.lora_B.weight"), vec![2 * h as u64, r as u64], up),
        ];
        let mut src = MemSource { name: name.into(), bytes: write_safetensors(&[], &tensors).unwrap() };
        LoraAdapter::load(&mut src, &dif.config).unwrap()
    };
    let (ld, lb) = (file("transformer.norm_out.linear", &b), file("final_layer.adaLN_modulation.1", &swapped));
    let io = "flux_odd.io.safetensors";
    let base = forward_io(&dif, io);
    dif.set_loras(gpu(), &[(&ld, 1.0)]).unwrap();
    let reference = forward_io(&dif, io);
    let moved = reference.iter().zip(&base).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(moved > 1e-2, "the LoRA changes the output ({moved})");
    dif.set_loras(gpu(), &[(&lb, 1.0)]).unwrap();
    assert_close("BFL-order LoRA on diffusers base", &forward_io(&dif, io), &reference, SAME_RTOL);
    for (what, l) in [("diffusers-order LoRA on BFL base", &ld), ("BFL-order LoRA on BFL base", &lb)] {
        bfl.set_loras(gpu(), &[(l, 1.0)]).unwrap();
        assert_close(what, &forward_io(&bfl, io), &reference, SAME_RTOL);
    }
}
