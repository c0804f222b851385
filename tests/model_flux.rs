//! The FLUX transformer against diffusers' `FluxTransformer2DModel` on tiny random-weight configs
//! (fixtures from tools/golden/make_flux_fixtures.py): the conditioning vector, every block's
//! output and the final output. Tolerances (relative to max(|expected|, rms), `assert_close`):
//! 1e-4 for temb and every block, 1e-3 for the final output (the bounds).

mod common;

use common::{assert_close, gpu};
use iclora::gpu::Tensor;
use iclora::kernels::rope::flux_position_ids;
use iclora::model::flux::{timestep_embedding, FluxConfig, FluxInputs, FluxModel, FluxTree, KeyScheme};
use iclora::weights::load::{read_header, FileSource, MemSource};
use iclora::weights::safetensors::write_safetensors;
use iclora::weights::tensor_info::TensorData;
use iclora::Error;
use safetensors::SafeTensors;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden");
const BLOCK_RTOL: f32 = 1e-4;
const FINAL_RTOL: f32 = 1e-3;

struct Io {
    bytes: Vec<u8>,
}

impl Io {
    fn open(name: &str) -> Io {
        Io { bytes: std::fs::read(format!("{DIR}/flux_{name}.io.safetensors")).unwrap() }
    }
    fn get(&self, key: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(key).ok()?;
        let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Some((t.shape().to_vec(), v))
    }
    fn f32(&self, key: &str) -> (Vec<usize>, Vec<f32>) {
        self.get(key).unwrap_or_else(|| panic!("fixture has no `{key}`"))
    }
    fn upload(&self, key: &str) -> Tensor {
        let (shape, v) = self.f32(key);
        gpu().upload_f32(&shape, &v).unwrap()
    }
}

fn load(weights: &str, config: Option<FluxConfig>) -> iclora::Result<FluxModel> {
    let mut src = FileSource::open(format!("{DIR}/{weights}"))?;
    let header = read_header(&mut src)?;
    FluxModel::load(gpu(), &mut src, &header, config)
}

fn config_json(name: &str) -> FluxConfig {
    FluxConfig::from_diffusers_json(&std::fs::read_to_string(format!("{DIR}/flux_{name}.config.json")).unwrap())
        .unwrap()
}

/// Runs the model on the fixture's inputs; returns the traced tensors (read back) and the output.
fn run_model(model: &FluxModel, io: &Io) -> (Vec<(String, Vec<f32>)>, Vec<f32>) {
    let g = gpu();
    let (img, txt, pooled) =
        (io.upload("in/hidden_states"), io.upload("in/encoder_hidden_states"), io.upload("in/pooled"));
    let (lt, li) = (txt.rows(), img.rows());
    // The fixture's ids are FluxPipeline's; find the grid they describe and check ours match.
    let (_, img_ids) = io.f32("in/img_ids");
    let rows = img_ids.chunks(3).map(|p| p[1] as usize).max().unwrap() + 1;
    let cols = li / rows;
    let ids: Vec<f32> = flux_position_ids(lt, rows, cols).into_iter().flatten().collect();
    let (_, txt_ids) = io.f32("in/txt_ids");
    assert_eq!(ids, [txt_ids, img_ids].concat(), "position ids differ from FluxPipeline's");
    let rope = model.rope_tables(g, lt, rows, cols).unwrap();
    let inp = FluxInputs {
        img: &img,
        txt: &txt,
        pooled: &pooled,
        timestep: io.f32("in/timestep").1[0],
        guidance: io.get("in/guidance").map(|g| g.1[0]),
        rope: &rope,
    };
    let mut b = g.batch();
    let mut traced = Vec::new();
    let out = model.forward_traced(g, &mut b, &inp, &mut |name, t| traced.push((name.to_string(), t.clone()))).unwrap();
    g.submit(b).unwrap();
    let traced = traced.into_iter().map(|(n, t)| (n, g.read_f32_blocking(&t).unwrap())).collect();
    (traced, g.read_f32_blocking(&out).unwrap())
}

fn check_against_fixture(name: &str, traced: &[(String, Vec<f32>)], out: &[f32], io: &Io, cfg: &FluxConfig) {
    let expected = 1 + 2 * cfg.double_blocks + cfg.single_blocks;
    assert_eq!(traced.len(), expected, "{name}: traced tensors");
    for (key, got) in traced {
        assert_close(&format!("{name} {key}"), got, &io.f32(&format!("out/{key}")).1, BLOCK_RTOL);
    }
    assert_close(&format!("{name} final"), out, &io.f32("out/final").1, FINAL_RTOL);
}

fn golden(name: &str) {
    let io = Io::open(name);
    let cfg = config_json(name);
    let model = load(&format!("flux_{name}.safetensors"), Some(cfg.clone())).unwrap();
    let (traced, out) = run_model(&model, &io);
    check_against_fixture(name, &traced, &out, &io, &cfg);
}

#[test]
fn dev_like_matches_diffusers() {
    golden("dev");
}

#[test]
fn odd_schnell_like_matches_diffusers() {
    golden("odd");
}

#[test]
fn config_inferred_from_shapes_equals_config_json() {
    for name in ["dev", "odd"] {
        let mut src = FileSource::open(format!("{DIR}/flux_{name}.safetensors")).unwrap();
        let inferred = FluxConfig::infer(&read_header(&mut src).unwrap()).unwrap();
        assert_eq!(inferred, config_json(name), "{name}");
    }
    let cfg = config_json("dev");
    assert!(cfg.guidance && cfg.heads == 2 && cfg.head_dim == 128 && cfg.double_blocks == 2 && cfg.single_blocks == 2);
    let cfg = config_json("odd");
    assert!(!cfg.guidance && cfg.heads == 3 && cfg.head_dim == 64 && cfg.double_blocks == 1 && cfg.single_blocks == 3);
}

#[test]
fn timestep_embedding_sanity_values() {
    // diffusers `get_timestep_embedding` (src/diffusers/models/embeddings.py @ 58eb52c), cos half first:
    // s = 1 → emb[0] = cos(1000), emb[128] = sin(1000).
    let e = timestep_embedding(1.0);
    assert_eq!(e.len(), 256);
    assert!((e[0] - 0.562_379_1).abs() < 1e-6, "{}", e[0]);
    assert!((e[128] - 0.826_879_5).abs() < 1e-6, "{}", e[128]);
    // f_127 = 1.0746e-4 → cos(0.10746), sin(0.10746)
    assert!((e[127] - 0.107_46f32.cos()).abs() < 1e-4 && (e[255] - 0.107_46f32.sin()).abs() < 1e-4);
}

/// Rewrites the odd fixture's weights with one tensor replaced (`Some`) or dropped (`None`).
fn altered(
    target: &str,
    replace: Option<(Vec<u64>, Vec<u8>)>,
) -> (MemSource, iclora::weights::tensor_info::WeightsHeader) {
    let path = format!("{DIR}/flux_odd.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        let dtype = iclora::weights::safetensors::file_dtype(&format!("{:?}", view.dtype())).unwrap();
        let (shape, data) = if name == target {
            match &replace {
                Some((s, d)) => (s.clone(), d.clone()),
                None => continue,
            }
        } else {
            (view.shape().iter().map(|&d| d as u64).collect(), view.data().to_vec())
        };
        tensors.push(TensorData { name, shape, dtype, data });
    }
    let file = write_safetensors(&[], &tensors).unwrap();
    let mut src = MemSource { name: "altered.safetensors".into(), bytes: file };
    let header = read_header(&mut src).unwrap();
    (src, header)
}

#[test]
fn mis_shaped_tensor_is_named_with_expected_shape() {
    let cfg = config_json("odd");
    let name = "transformer_blocks.0.attn.norm_k.weight";
    let (mut src, header) = altered(name, Some((vec![32], vec![0; 32 * 4])));
    let err = FluxModel::load(gpu(), &mut src, &header, Some(cfg)).err().expect("a mis-shaped tensor must fail");
    match &err {
        Error::TensorShape { name: n, expected, got, .. } => {
            assert_eq!(n, name);
            assert_eq!(expected, "[64]");
            assert_eq!(got, "[32]");
        }
        other => panic!("expected TensorShape, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(name) && msg.contains("[64]"), "{msg}");
}

#[test]
fn missing_tensor_is_named() {
    let name = "single_transformer_blocks.2.proj_mlp.bias";
    let (mut src, header) = altered(name, None);
    // With the config given, and inferred from shapes (which still sees 3 single blocks).
    for cfg in [Some(config_json("odd")), None] {
        let err = FluxModel::load(gpu(), &mut src, &header, cfg).err().expect("a missing tensor must fail");
        assert!(matches!(&err, Error::MissingTensor { name: n, .. } if n == name), "{err:?}");
        assert!(err.to_string().contains(name));
    }
}

#[test]
fn config_mismatch_names_the_tensor() {
    // The dev weights with the odd config: the first tensor that disagrees is named.
    let err = load("flux_dev.safetensors", Some(config_json("odd"))).err().expect("must fail");
    assert!(matches!(&err, Error::TensorShape { name, .. } if name.contains("timestep_embedder")), "{err:?}");
}

#[test]
fn bfl_names_give_the_same_output_as_diffusers_names() {
    // flux_odd_bfl.safetensors: the odd fixture's weights under BFL-native names (fused qkv and
    // linear1, final-layer shift/scale halves in BFL order), config inferred from the shapes.
    let io = Io::open("odd");
    let cfg = config_json("odd");
    let bfl = load("flux_odd_bfl.safetensors", None).unwrap();
    assert_eq!(bfl.config, cfg);
    let diffusers = load("flux_odd.safetensors", Some(cfg.clone())).unwrap();
    let (traced_bfl, out_bfl) = run_model(&bfl, &io);
    let (traced_dif, out_dif) = run_model(&diffusers, &io);
    // Same weights, same kernels: bit-identical.
    assert_eq!(out_bfl, out_dif);
    assert_eq!(traced_bfl, traced_dif);
    check_against_fixture("odd (BFL names)", &traced_bfl, &out_bfl, &io, &cfg);
}

/// Every tensor name the key tree gives for `c` in `scheme`: weights and biases of each Linear
/// (each diffusers part), and the QK-norm scales.
fn tree_names(c: &FluxConfig, scheme: &KeyScheme) -> std::collections::BTreeSet<String> {
    let mut keys = FluxTree::keys(c);
    let mut names = std::collections::BTreeSet::new();
    for d in &keys.double_blocks {
        for a in [&d.img_attn, &d.txt_attn] {
            names.extend([a.query_norm.name(scheme), a.key_norm.name(scheme)]);
        }
    }
    for s in &keys.single_blocks {
        names.extend([s.query_norm.name(scheme), s.key_norm.name(scheme)]);
    }
    for k in keys.linears_mut() {
        for suffix in ["weight", "bias"] {
            names.extend(k.names(scheme, suffix).into_iter().map(|(n, _)| n));
        }
    }
    names
}

#[test]
fn key_tree_names_exactly_the_checkpoints_tensors_in_both_schemes() {
    // The diffusers fixtures (written by diffusers' save_pretrained) and the BFL-named one: the tree
    // of the inferred config names every tensor, and no other.
    for (file, bfl) in
        [("flux_dev.safetensors", false), ("flux_odd.safetensors", false), ("flux_odd_bfl.safetensors", true)]
    {
        let mut src = FileSource::open(format!("{DIR}/{file}")).unwrap();
        let header = read_header(&mut src).unwrap();
        let scheme = KeyScheme::detect(&header).unwrap();
        assert_eq!(matches!(scheme, KeyScheme::Bfl { .. }), bfl, "{file}");
        let c = FluxConfig::infer(&header).unwrap();
        let want: std::collections::BTreeSet<String> = header.tensors.iter().map(|t| t.name.clone()).collect();
        let got = tree_names(&c, &scheme);
        let (missing, extra): (Vec<_>, Vec<_>) = (want.difference(&got).collect(), got.difference(&want).collect());
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{file}: not in the tree {missing:?}; not in the file {extra:?}"
        );
    }
}
