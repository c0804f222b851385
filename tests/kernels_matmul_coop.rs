//! shaders/matmul_coop.wgsl (cooperative matrices) against reference::matmul, and the selection
//! between it and the FMA kernel (src/kernels/matmul_coop.rs).
//!
//! The cooperative path runs only on adapters that report a usable configuration (wgpu's
//! `EXPERIMENTAL_COOPERATIVE_MATRIX`; not lavapipe). Elsewhere these tests check that the
//! selector falls back and print "skipped: adapter lacks cooperative matrix": that is not a
//! pass of the cooperative path, which then stays unverified on hardware.
//!
//! Tolerances. f16 operands (16×16×16 f16→f32): the reference takes the same f16-rounded x and
//! W; products of f16 values are exact in f32 and accumulation is f32, so only the summation
//! order differs (~K·2^-24 worst case, 2e-4 at K = 3072): 1e-3, which also covers y stored as
//! f16 (2^-11 relative). That is tighter than the FMA f16 tiles' 5e-3 (their dot4 is formed in
//! f16). f32 operands (8×8×8 f32): 1e-5, as the FMA f32 kernel.

mod common;
use common::{assert_close, gpu, run, Rng};
use half::f16;
use iclora::gpu::{CoopScalar, DType, Gpu, GpuOptions, Tensor};
use iclora::kernels::elementwise::Activation;
use iclora::kernels::matmul::{matmul, AdapterSlice, Epilogue, Gate, LoraStack, Precision};
use iclora::kernels::matmul_coop::{matmul_coop, select, Fallback};
use iclora::reference::matmul::{self as reference, EpilogueRef};
use iclora::reference::quant::dequantize;
use iclora::reference::random::weight_bytes;
use iclora::weights::repack::repack;
use iclora::Error;

fn weight(g: &Gpu, rng: &mut Rng, dtype: DType, n: usize, k: usize) -> (Tensor, Vec<f32>) {
    let bytes = weight_bytes(rng, dtype, n * k, 1.0, 0.05);
    let values = dequantize(dtype, &bytes).expect("dequantize");
    (g.upload_raw(&[n, k], dtype, &repack(dtype, &bytes).expect("repack")).expect("upload"), values)
}

fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

/// The precision the device's configuration needs, the tolerance, and whether operands are f16;
/// `None` (after printing the skip line) when the adapter has no usable configuration.
fn coop_or_skip(g: &Gpu, test: &str) -> Option<(Precision, f32, bool)> {
    match g.features().cooperative_matrix {
        Some(c) if c.ab == CoopScalar::F16 => Some((Precision::F16, 1e-3, true)),
        Some(_) => Some((Precision::F32, 1e-5, false)),
        None => {
            eprintln!(
                "{test}: skipped: adapter lacks cooperative matrix ({}); the FMA fallback is tested in kernels_matmul",
                g.info().name
            );
            None
        }
    }
}

#[test]
fn selector_falls_back_where_the_adapter_lacks_cooperative_matrix() {
    // A device with the feature turned off never selects it, whatever the adapter.
    let off = Gpu::new_blocking(&GpuOptions { allow_cooperative_matrix: false, ..Default::default() }).unwrap();
    assert_eq!(off.features().cooperative_matrix, None);
    let mut rng = Rng::new(30);
    let (w, wv) = weight(&off, &mut rng, DType::F16, 40, 64);
    let xv = rng.vec(3 * 64, -1.0, 1.0);
    let x = off.upload_f32(&[3, 64], &xv).unwrap();
    let epi = Epilogue {
        precision: if off.features().shader_f16 { Precision::F16 } else { Precision::F32 },
        ..Default::default()
    };
    assert_eq!(select(&off, &x, &w, &epi).err(), Some(Fallback::NoAdapterSupport));
    let r = matmul_coop(&off, &mut off.batch(), &x, &w, &epi);
    assert!(matches!(r, Err(Error::MissingFeature { feature: "wgpu-cooperative-matrix", .. })), "{r:?}");
    // ... and `matmul` still gives the right answer through the FMA kernel.
    let mut b = off.batch();
    let y = matmul(&off, &mut b, &x, &w, &Epilogue::default()).unwrap();
    off.submit(b).unwrap();
    let expected = reference::matmul(&xv, &wv, 3, 40, 64, &EpilogueRef::default());
    assert_close("fallback with cooperative matrices off", &off.read_f32_blocking(&y).unwrap(), &expected, 1e-5);

    // The default device: the configurations it reported, and the fallback when none is usable.
    let g = gpu();
    eprintln!(
        "adapter {}: cooperative matrix configs {:?}, selected {:?}",
        g.info().name,
        g.info().cooperative_matrix_configs,
        g.features().cooperative_matrix
    );
    if g.features().cooperative_matrix.is_none() {
        let x = g.upload_f32(&[3, 64], &xv).unwrap();
        let (w, _) = weight(g, &mut rng, DType::Q8_0, 40, 64);
        for precision in [Precision::F32, Precision::F16] {
            assert_eq!(
                select(g, &x, &w, &Epilogue { precision, ..Default::default() }).err(),
                Some(Fallback::NoAdapterSupport)
            );
        }
        eprintln!("skipped: adapter lacks cooperative matrix: the selector falls back to the FMA kernel (checked)");
    }
}

#[test]
fn coop_matches_reference_for_weight_formats_on_awkward_and_flux_shapes() {
    let g = gpu();
    let Some((precision, tol, half_ops)) = coop_or_skip(g, "formats") else { return };
    let mut rng = Rng::new(31);
    let round = |v: &[f32]| if half_ops { round_f16(v) } else { v.to_vec() };
    let awkward: [(usize, usize, usize); 5] = [(1, 1, 32), (7, 33, 96), (65, 130, 256), (3, 7, 512), (33, 32, 32)];
    let flux: [(usize, usize, usize); 2] = [(5, 3072, 3072), (2, 256, 12288)];
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4K, DType::Q6K] {
        for &(m, n, k0) in awkward.iter().chain(&flux) {
            let k = k0.div_ceil(dtype.block_elems()) * dtype.block_elems();
            let (w, wv) = weight(g, &mut rng, dtype, n, k);
            let x = rng.vec(m * k, -1.0, 1.0);
            let epi = Epilogue { precision, ..Default::default() };
            let xt = g.upload_f32(&[m, k], &x).unwrap();
            assert!(select(g, &xt, &w, &epi).is_ok(), "{dtype} m{m} n{n} k{k}: expected the cooperative path");
            let got = run(|g, b| matmul_coop(g, b, &xt, &w, &epi));
            let expected = reference::matmul(&round(&x), &round(&wv), m, n, k, &EpilogueRef::default());
            assert_close(&format!("coop {dtype} m{m} n{n} k{k}"), &got, &expected, tol);
        }
    }
}

#[test]
fn coop_epilogues_and_f16_storage_match_reference() {
    let g = gpu();
    let Some((precision, tol, half_ops)) = coop_or_skip(g, "epilogues") else { return };
    let mut rng = Rng::new(32);
    let round = |v: &[f32]| if half_ops { round_f16(v) } else { v.to_vec() };
    for &(m, n, k) in &[(1, 2, 32), (7, 34, 64), (70, 66, 96), (2, 3072, 256)] {
        for x_half in [false, true] {
            let dtype = if x_half { DType::Q4_0 } else { DType::Q8_0 };
            let (w, wv) = weight(g, &mut rng, dtype, n, k);
            let (x, bias, resid, gate) = (
                rng.vec(m * k, -1.0, 1.0),
                rng.vec(n, -1.0, 1.0),
                rng.vec(m * n, -1.0, 1.0),
                rng.vec(n + 3, -1.0, 1.0),
            );
            // f16 storage: x and the residual arrive rounded, y leaves rounded.
            let (xr, rr) = if x_half { (round_f16(&x), round_f16(&resid)) } else { (x.clone(), resid.clone()) };
            for act in Activation::ALL {
                let got = run(|g, b| {
                    let up = |s: &[usize], v: &[f32]| {
                        if x_half {
                            g.upload_half(s, v, DType::F16)
                        } else {
                            g.upload_f32(s, v)
                        }
                    };
                    let (xt, rt) = (up(&[m, k], &x)?, up(&[m, n], &resid)?);
                    let (bt, gt) = (g.upload_f32(&[n], &bias)?, g.upload_f32(&[n + 3], &gate)?);
                    let epi = Epilogue {
                        bias: Some(&bt),
                        act: Some(act),
                        gate: Some(Gate { residual: &rt, gate: &gt, offset: 3 }),
                        precision,
                        ..Default::default()
                    };
                    assert!(select(g, &xt, &w, &epi).is_ok(), "expected the cooperative path");
                    // Through the hook in `matmul`, as the model calls it.
                    matmul(g, b, &xt, &w, &epi)
                });
                let epi = EpilogueRef { bias: Some(&bias), act, gated: Some((&rr, &gate[3..])), ..Default::default() };
                let expected = reference::matmul(&round(&xr), &round(&wv), m, n, k, &epi);
                let tol = if x_half { tol.max(1e-3) } else { tol };
                assert_close(&format!("coop epilogue {act:?} x_half={x_half} m{m} n{n} k{k}"), &got, &expected, tol);
            }
        }
    }
}

#[test]
fn lora_and_f32_tiles_stay_on_the_fma_kernel() {
    let g = gpu();
    let Some((precision, _, half_ops)) = coop_or_skip(g, "fallbacks") else { return };
    let mut rng = Rng::new(33);
    let (m, n, k) = (5, 64, 64);
    let (w, _) = weight(g, &mut rng, DType::F16, n, k);
    let x = g.upload_f32(&[m, k], &rng.vec(m * k, -1.0, 1.0)).unwrap();
    let slice = AdapterSlice { n0: 0, len: n, rank: 4, scale: 1.0 };
    let stack = LoraStack::new(g, k, &[(&rng.vec(4 * k, -0.5, 0.5), &rng.vec(n * 4, -0.5, 0.5), slice)]).unwrap();
    assert_eq!(
        select(g, &x, &w, &Epilogue { lora: Some(&stack), precision, ..Default::default() }).err(),
        Some(Fallback::Lora)
    );
    if half_ops {
        // f32 tiles promise 1e-5: f16 operands would break that promise.
        assert_eq!(select(g, &x, &w, &Epilogue::default()).err(), Some(Fallback::Precision));
    }
}

#[test]
fn coop_programs_compile_to_cooperative_matrix_spirv() {
    // naga: the programs lower to OpCooperativeMatrix{Load,MulAdd,Store}KHR, i.e. the path really
    // uses the matrix units (this runs on every machine; it is not a run on hardware).
    use iclora::kernels::matmul_coop::{variants, SHADER_F16X16, SHADER_F32X8};
    use naga::valid::{Capabilities, ValidationFlags, Validator};
    const LOAD: u32 = 4457;
    const STORE: u32 = 4458;
    const MULADD: u32 = 4459;
    for spec in [&SHADER_F16X16, &SHADER_F32X8] {
        let source = spec.source();
        let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{}", e.emit_to_string(&source)));
        let info = Validator::new(ValidationFlags::all(), Capabilities::all()).validate(&module).expect("valid");
        let v = &variants()[0];
        let constants = v.overrides.iter().map(|(k, x)| (k.to_string(), *x)).collect();
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((naga::ShaderStage::Compute, "main")),
            &constants,
        )
        .expect("overrides");
        let pipeline =
            naga::back::spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: "main".into() };
        let words = naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), Some(&pipeline))
            .expect("spv");
        let mut ops = std::collections::HashMap::new();
        let mut i = 5;
        while i < words.len() {
            let (len, op) = ((words[i] >> 16) as usize, words[i] & 0xffff);
            *ops.entry(op).or_insert(0) += 1;
            i += len.max(1);
        }
        let count = |op| ops.get(&op).copied().unwrap_or(0);
        assert_eq!(
            (count(LOAD), count(MULADD), count(STORE)),
            (4, 4, 4),
            "{}: coop loads / multiply-adds / stores",
            spec.name
        );
    }
}
