//! The model store (`pipeline::store`): a run's plan lists every file it reads, with its size, and
//! files handed to one store are that store's alone (no global registry).

use iclora::limits::Cap;
use iclora::pipeline::generate::ModelPaths;
use iclora::pipeline::store::{ModelStore, PlannedFile};
use iclora::Error;

const TINY_FLUX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web/demo/tiny-flux");

fn size(rel: &str) -> u64 {
    std::fs::metadata(format!("{TINY_FLUX}/{rel}")).unwrap().len()
}

#[test]
fn a_plan_lists_every_weights_file_with_its_size_shards_and_handed_in_files_included() {
    let store = ModelStore::new();
    let lora_bytes = std::fs::read(format!("{TINY_FLUX}/vae/diffusion_pytorch_model.safetensors")).unwrap();
    let lora = store.add_file("set.safetensors", lora_bytes.clone());
    assert_eq!(lora, "file:set.safetensors");
    let paths = ModelPaths { root: Some(TINY_FLUX.into()), ..ModelPaths::default() };
    let plan = pollster::block_on(store.plan(&paths, &[(lora.clone(), 0.8)])).unwrap();
    let expect = |component: &str, rel: &str| PlannedFile {
        component: component.into(),
        location: format!("{TINY_FLUX}/{rel}"),
        bytes: size(rel),
        cached: true,
    };
    let want = vec![
        expect("transformer", "transformer/diffusion_pytorch_model-00001-of-00002.safetensors"),
        expect("transformer", "transformer/diffusion_pytorch_model-00002-of-00002.safetensors"),
        expect("T5 text encoder", "text_encoder_2/model.safetensors"),
        expect("CLIP text encoder", "text_encoder/model.safetensors"),
        expect("VAE", "vae/diffusion_pytorch_model.safetensors"),
        PlannedFile { component: "LoRA".into(), location: lora, bytes: lora_bytes.len() as u64, cached: true },
    ];
    assert_eq!(plan, want);
}

#[test]
fn files_handed_to_one_store_are_not_seen_by_another() {
    let (a, b) = (ModelStore::new(), ModelStore::new());
    let location = a.add_file("mine.safetensors", b"not a model".to_vec());
    assert!(a.exists(&location).unwrap());
    assert_eq!(a.open(&location).unwrap().read_range(0, 3).unwrap(), b"not");
    assert!(!b.exists(&location).unwrap());
    assert!(b.open(&location).is_err(), "another store has no such file");
    // A plan naming a file the store does not have fails, naming the LoRA.
    let paths = ModelPaths { root: Some(TINY_FLUX.into()), ..ModelPaths::default() };
    let e = pollster::block_on(b.plan(&paths, &[(location, 1.0)])).unwrap_err();
    assert!(matches!(&e, Error::Component { component, .. } if component == "LoRA"), "{e}");
}

#[test]
fn a_small_file_over_its_cap_is_refused_before_it_is_parsed() {
    let store = ModelStore::new();
    let location = store.add_file("config.json", vec![b' '; 2048]);
    let cap = |max| Cap { what: "config.json", max, why: "a test's cap" };
    assert!(matches!(store.read_all(&location, &cap(1024)), Err(Error::FileLimit { .. })));
    assert_eq!(store.read_all(&location, &cap(4096)).unwrap().len(), 2048);
}
