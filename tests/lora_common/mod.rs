//! Helpers shared by the LoRA tests (tests/lora.rs, tests/lora_merge.rs): the dev-like tiny FLUX
//! fixture of make_flux_fixtures.py, its inputs, and the LoRA fixtures of make_lora_fixtures.py.
#![allow(dead_code)]

use crate::common::gpu;
use iclora::gpu::DType;
use iclora::gpu::Tensor;
use iclora::kernels::rope::flux_position_ids;
use iclora::lora::LoraAdapter;
use iclora::model::flux::{FluxConfig, FluxInputs, FluxModel};
use iclora::weights::load::{read_header, FileSource, MemSource};
use iclora::weights::safetensors::write_safetensors;
use iclora::weights::tensor_info::{FileDType, TensorData};
use safetensors::SafeTensors;

pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden");
pub const RTOL: f32 = 1e-3;
pub const SAME_RTOL: f32 = 1e-5;

pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

pub fn fixture(file: &str, key: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(format!("{DIR}/{file}")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap_or_else(|_| panic!("{file} has no `{key}`"));
    (t.shape().to_vec(), f32s(t.data()))
}

pub fn expected(key: &str) -> Vec<f32> {
    fixture("lora_io.safetensors", &format!("out/{key}")).1
}

pub fn config() -> FluxConfig {
    FluxConfig::from_diffusers_json(&std::fs::read_to_string(format!("{DIR}/flux_dev.config.json")).unwrap()).unwrap()
}

pub fn base() -> FluxModel {
    let mut src = FileSource::open(format!("{DIR}/flux_dev.safetensors")).unwrap();
    let header = read_header(&mut src).unwrap();
    FluxModel::load(gpu(), &mut src, &header, Some(config())).unwrap()
}

pub fn adapter(file: &str) -> LoraAdapter {
    LoraAdapter::load(&mut FileSource::open(format!("{DIR}/{file}")).unwrap(), &config()).unwrap()
}

/// The final output for flux_dev.io.safetensors' inputs.
pub fn forward(model: &FluxModel) -> Vec<f32> {
    forward_io(model, "flux_dev.io.safetensors")
}

pub fn forward_io(model: &FluxModel, io: &str) -> Vec<f32> {
    let g = gpu();
    let up = |k: &str| -> Tensor {
        let (s, v) = fixture(io, k);
        g.upload_f32(&s, &v).unwrap()
    };
    let (img, txt, pooled) = (up("in/hidden_states"), up("in/encoder_hidden_states"), up("in/pooled"));
    let (lt, li) = (txt.rows(), img.rows());
    let rows = fixture(io, "in/img_ids").1.chunks(3).map(|p| p[1] as usize).max().unwrap() + 1;
    assert_eq!(flux_position_ids(lt, rows, li / rows).len(), lt + li);
    let rope = model.rope_tables(g, lt, rows, li / rows).unwrap();
    let inp = FluxInputs {
        img: &img,
        txt: &txt,
        pooled: &pooled,
        timestep: fixture(io, "in/timestep").1[0],
        guidance: model.config.guidance.then(|| fixture(io, "in/guidance").1[0]),
        rope: &rope,
    };
    let mut b = g.batch();
    let out = model.forward(g, &mut b, &inp).unwrap();
    g.submit(b).unwrap();
    g.read_f32_blocking(&out).unwrap()
}

/// The same model with every tensor stored as F32 (the fixture's F8 matrices load as F16): an
/// F32 base with exactly the fixture's values.
pub fn base_f32() -> FluxModel {
    use iclora::weights::load::read_floats;
    let mut src = FileSource::open(format!("{DIR}/flux_dev.safetensors")).unwrap();
    let header = read_header(&mut src).unwrap();
    let tensors: Vec<TensorData> = header
        .tensors
        .iter()
        .map(|info| {
            let v = read_floats(&mut src, info).unwrap().unwrap();
            TensorData {
                name: info.name.clone(),
                shape: info.shape.clone(),
                dtype: FileDType::Gpu(DType::F32),
                data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            }
        })
        .collect();
    let mut mem = MemSource { name: "flux_dev (F32)".into(), bytes: write_safetensors(&[], &tensors).unwrap() };
    let header = read_header(&mut mem).unwrap();
    FluxModel::load(gpu(), &mut mem, &header, Some(config())).unwrap()
}

/// A LoRA file rebuilt from a fixture: keys renamed (or dropped by `rename` → None), extra tensors added.
pub fn rewrite(file: &str, rename: impl Fn(&str) -> Option<String>, extra: Vec<TensorData>) -> MemSource {
    let bytes = std::fs::read(format!("{DIR}/{file}")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let metadata: Vec<(String, String)> = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    let mut tensors: Vec<TensorData> = st
        .tensors()
        .into_iter()
        .filter_map(|(k, t)| {
            let dtype = match t.dtype() {
                safetensors::Dtype::F16 => FileDType::Gpu(DType::F16),
                _ => FileDType::Gpu(DType::F32),
            };
            rename(&k).map(|name| TensorData {
                name,
                shape: t.shape().iter().map(|&d| d as u64).collect(),
                dtype,
                data: t.data().to_vec(),
            })
        })
        .collect();
    tensors.extend(extra);
    MemSource { name: format!("{file} (rewritten)"), bytes: write_safetensors(&metadata, &tensors).unwrap() }
}

pub fn f32_tensor(name: &str, shape: &[u64], v: f32) -> TensorData {
    let n: u64 = shape.iter().product();
    TensorData {
        name: name.into(),
        shape: shape.to_vec(),
        dtype: FileDType::Gpu(DType::F32),
        data: (0..n).flat_map(|_| v.to_le_bytes()).collect(),
    }
}
