//! Planning of the FLUX step loop (issue #8): pipelines are compiled before the first step
//! (`FluxModel::warm_up`, `Sampler::new`), and no step creates a GPU buffer
//! (storage buffers come from the pool, dispatch parameters from pooled uniform chunks). Counted
//! with `Gpu::pipelines_compiled` and `Gpu::buffer_stats` on a GPU of its own per test, so other
//! tests' work cannot move the counters. Tiny random FLUX (2 double + 2 single blocks, F32).

use iclora::gpu::{DType, Gpu, GpuOptions, Tensor};
use iclora::kernels::norm::Columns;
use iclora::kernels::rope::{rope_inplace, RopeTables};
use iclora::model::flux::{FluxConfig, FluxInputs, FluxModel, FluxWeights};
use iclora::pipeline::sampler::{SampleOptions, Sampler};
use iclora::pipeline::schedule::FluxVariant;
use iclora::reference::random::Rng;

fn own_gpu() -> Gpu {
    Gpu::new_blocking(&GpuOptions::default()).unwrap_or_else(|e| panic!("tests need a GPU adapter (lavapipe): {e}"))
}

fn tiny(g: &Gpu) -> FluxModel {
    let c = FluxConfig {
        heads: 2,
        head_dim: 16,
        mlp_hidden: 128,
        double_blocks: 2,
        single_blocks: 2,
        context_dim: 64,
        pooled_dim: 32,
        axes_dim: vec![4, 6, 6],
        ..FluxConfig::flux1_dev()
    };
    FluxModel { weights: FluxWeights::random(g, &c, DType::F32, 3).unwrap(), config: c }
}

fn upload(g: &Gpu, rng: &mut Rng, shape: &[usize]) -> Tensor {
    g.upload_f32(shape, &rng.vec(shape.iter().product(), -1.0, 1.0)).unwrap()
}

#[test]
fn a_dry_batch_compiles_but_runs_nothing() {
    let g = own_gpu();
    let x: Vec<f32> = (0..4 * 32).map(|i| i as f32 * 0.25 - 3.0).collect();
    let t = g.upload_f32(&[4, 32], &x).unwrap();
    let tables = RopeTables::new(&g, &[[0.0, 1.0, 2.0]; 4], &[4, 6, 6], 10000.0).unwrap();
    let before = g.pipelines_compiled();
    let mut b = g.dry_batch();
    rope_inplace(&g, &mut b, &t, Columns { offset: 0, width: 32 }, &tables, 0).unwrap();
    assert!(b.is_dry() && b.dispatches() == 1);
    g.submit(b).unwrap();
    assert_eq!(g.pipelines_compiled(), before + 1, "the dry dispatch compiles its pipeline");
    assert_eq!(g.read_f32_blocking(&t).unwrap(), x, "a dry batch must not run its dispatches");
    // The same dispatch in a real batch finds the pipeline and does run.
    let mut b = g.batch();
    rope_inplace(&g, &mut b, &t, Columns { offset: 0, width: 32 }, &tables, 0).unwrap();
    g.submit(b).unwrap();
    assert_eq!(g.pipelines_compiled(), before + 1);
    assert_ne!(g.read_f32_blocking(&t).unwrap(), x);
}

#[test]
fn after_warm_up_a_forward_compiles_no_pipeline() {
    let g = own_gpu();
    let m = tiny(&g);
    let (lt, rows, cols) = (5, 3, 4);
    m.warm_up(&g, lt, rows, cols).unwrap();
    let compiled = g.pipelines_compiled();
    assert!(compiled > 10, "warm-up compiled only {compiled} pipelines");
    let mut rng = Rng::new(1);
    let (img, txt, pooled) =
        (upload(&g, &mut rng, &[rows * cols, 64]), upload(&g, &mut rng, &[lt, 64]), upload(&g, &mut rng, &[32]));
    let rope = m.rope_tables(&g, lt, rows, cols).unwrap();
    let created = g.buffer_stats().created;
    let mut b = g.batch();
    let inp = FluxInputs { img: &img, txt: &txt, pooled: &pooled, timestep: 0.7, guidance: Some(3.5), rope: &rope };
    let v = m.forward(&g, &mut b, &inp).unwrap();
    g.submit(b).unwrap();
    let v = g.read_f32_blocking(&v).unwrap();
    assert!(v.iter().all(|x| x.is_finite()) && v.iter().any(|&x| x != 0.0));
    assert_eq!(g.pipelines_compiled(), compiled, "the forward compiled pipelines the warm-up missed");
    // The warm-up also left the forward's intermediates in the pool.
    assert_eq!(g.buffer_stats().created, created, "the forward created buffers after the warm-up");
}

#[test]
fn sampler_steps_compile_nothing_and_create_no_buffer() {
    let g = own_gpu();
    let m = tiny(&g);
    let mut rng = Rng::new(2);
    let (txt, pooled) = (upload(&g, &mut rng, &[7, 64]), upload(&g, &mut rng, &[32]));
    let opts = SampleOptions {
        height: 48,
        width: 80,
        steps: 4,
        guidance: Some(3.5),
        variant: FluxVariant::Dev,
        step_cache: None,
    };
    let noise = rng.vec(3 * 5 * 64, -1.0, 1.0);
    let mut s = Sampler::new(&g, &m, &txt, &pooled, &noise, &opts, None).unwrap();
    let compiled = g.pipelines_compiled();
    let planned = g.buffer_stats();
    let mut after = Vec::new();
    while let Some(info) = s.step_blocking(&g).unwrap() {
        g.wait_idle().unwrap();
        assert_eq!(g.pipelines_compiled(), compiled, "step {} compiled a pipeline", info.index);
        eprintln!("after step {}: {:?}", info.index, g.buffer_stats());
        after.push(g.buffer_stats());
    }
    assert_eq!(after.len(), 4);
    // Sampler::new's dry step planned the buffers: even the first step takes all from the pool.
    assert_eq!(
        (after[0].created, after[0].uniform_chunks),
        (planned.created, planned.uniform_chunks),
        "step 0 after {planned:?}"
    );
    for (i, st) in after.iter().enumerate().skip(1) {
        assert_eq!(
            st.created, after[0].created,
            "step {i} created storage buffers: {:?} after step 0 {:?}",
            st, after[0]
        );
        assert_eq!(st.uniform_chunks, after[0].uniform_chunks, "step {i} created uniform chunks");
        assert!(st.pool_hits > after[i - 1].pool_hits, "step {i} took no buffer from the pool");
    }
    let out = g.read_f32_blocking(s.latents()).unwrap();
    assert!(out.iter().all(|x| x.is_finite()));
}
