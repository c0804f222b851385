//! The GPU runtime (src/gpu/): broken shaders come back as errors, the buffer
//! pool reuses allocations, limits are enforced with typed errors.

mod common;
use common::gpu;
use iclora::gpu::{Binding, DType, ShaderSpec};
use iclora::Error;

static BROKEN: ShaderSpec = ShaderSpec {
    name: "broken_for_test",
    sources: &["@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n@compute @workgroup_size(1) fn main() { y[0] = undefined_name; }"],
    needs_f16: false,
    needs_subgroups: false,
};

static TINY: ShaderSpec = ShaderSpec {
    name: "tiny_for_test",
    sources: &["override V: f32 = 1.0;\n@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n@compute @workgroup_size(1) fn main(@builtin(workgroup_id) w: vec3<u32>) { y[w.x] = V + f32(w.x); }"],
    needs_f16: false,
    needs_subgroups: false,
};

#[test]
fn a_broken_shader_is_an_error_not_a_panic() {
    let g = gpu();
    let y = g.empty(&[4], DType::F32).unwrap();
    let mut b = g.batch();
    let r = b.dispatch(g, &BROKEN, "main", &[], &[Binding::Tensor(&y)], [1, 1, 1]);
    match r {
        Err(Error::Shader { shader, message, .. }) => {
            assert_eq!(shader, "broken_for_test");
            assert!(message.contains("undefined_name") || !message.is_empty(), "{message}");
        }
        other => panic!("expected Error::Shader, got {other:?}"),
    }
    // The device is still usable afterwards.
    let mut b = g.batch();
    b.dispatch(g, &TINY, "main", &[("V", 2.0)], &[Binding::Tensor(&y)], [4, 1, 1]).unwrap();
    g.submit(b).unwrap();
    assert_eq!(g.read_f32_blocking(&y).unwrap(), vec![2.0, 3.0, 4.0, 5.0]);
}

#[test]
fn overrides_select_distinct_cached_pipelines() {
    let g = gpu();
    let y = g.empty(&[2], DType::F32).unwrap();
    for v in [10.0, 20.0, 10.0] {
        let mut b = g.batch();
        b.dispatch(g, &TINY, "main", &[("V", v)], &[Binding::Tensor(&y)], [2, 1, 1]).unwrap();
        assert_eq!(b.dispatches(), 1);
        g.submit(b).unwrap();
        assert_eq!(g.read_f32_blocking(&y).unwrap(), vec![v as f32, v as f32 + 1.0]);
    }
}

#[test]
fn the_buffer_pool_reuses_released_buffers() {
    // A device of its own: the shared one's pool changes under parallel tests.
    let g = &iclora::gpu::Gpu::new_blocking(&Default::default()).unwrap();
    let bytes = 4 * 12345;
    let before = g.pooled_bytes();
    let t = g.empty(&[12345], DType::F32).unwrap();
    drop(t);
    assert!(g.pooled_bytes() >= before + bytes as u64, "released buffer went back to the pool");
    let pooled = g.pooled_bytes();
    let _t2 = g.empty(&[12345], DType::F32).unwrap();
    assert!(g.pooled_bytes() <= pooled - bytes as u64, "same-size allocation was served from the pool");
}

#[test]
fn limits_give_typed_errors() {
    let g = gpu();
    let info = g.info();
    assert!(g.workgroup_size(4096) <= info.max_invocations.min(info.max_workgroup_size_x));
    let too_big = (info.max_buffer_size / 4 + 16) as usize;
    assert!(matches!(g.empty(&[too_big], DType::F32), Err(Error::LimitExceeded { .. })));
    let y = g.empty(&[4], DType::F32).unwrap();
    let mut b = g.batch();
    let r = b.dispatch(g, &TINY, "main", &[], &[Binding::Tensor(&y)], [info.max_workgroups_per_dim + 1, 1, 1]);
    assert!(matches!(r, Err(Error::LimitExceeded { .. })), "{r:?}");
    // A quantized tensor must hold whole blocks.
    assert!(matches!(g.empty(&[33], DType::Q8_0), Err(Error::ShapeMismatch { .. })));
}

#[test]
fn flushing_a_batch_submits_and_releases_its_buffers() {
    // A device of its own so the pool is not shared with parallel tests.
    let g = &iclora::gpu::Gpu::new_blocking(&Default::default()).unwrap();
    let y = g.empty(&[3], DType::F32).unwrap();
    let mut b = g.batch();
    let t = g.empty(&[777], DType::F32).unwrap();
    b.dispatch(g, &TINY, "main", &[("V", 5.0)], &[Binding::Tensor(&t)], [1, 1, 1]).unwrap();
    drop(t);
    // Still referenced by the unsubmitted batch: not back in the pool yet.
    assert_eq!(g.pooled_bytes(), 0);
    b.flush(g).unwrap();
    assert_eq!(g.pooled_bytes(), 777 * 4, "flush released the batch's buffers to the pool");
    b.dispatch(g, &TINY, "main", &[("V", 7.0)], &[Binding::Tensor(&y)], [3, 1, 1]).unwrap();
    g.submit(b).unwrap();
    assert_eq!(g.read_f32_blocking(&y).unwrap(), vec![7.0, 8.0, 9.0]);
}

#[test]
fn work_stats_count_exactly_what_the_device_was_asked_to_do() {
    // A device of its own: its counters see no other test's work.
    let g = &iclora::gpu::Gpu::new_blocking(&Default::default()).unwrap();
    let y = g.empty(&[3], DType::F32).unwrap();
    let start = g.work_stats();
    assert_eq!(start.buffers_created, 1, "{start}");
    // Two dispatches of one pipeline on one buffer: one pipeline compiled, one bind group made and
    // reused; another pipeline (other overrides) needs its own group.
    let mut b = g.batch();
    for v in [1.0, 1.0, 2.0] {
        b.dispatch(g, &TINY, "main", &[("V", v)], &[Binding::Tensor(&y)], [3, 1, 1]).unwrap();
    }
    g.submit(b).unwrap();
    let s = g.work_stats().since(start);
    assert_eq!((s.dispatches, s.bind_groups, s.submissions, s.pipelines_compiled), (3, 2, 1, 2), "{s}");
    assert_eq!((s.bytes_written, s.bytes_read, s.buffers_created), (0, 0, 0), "{s}");
    assert_eq!(g.read_f32_blocking(&y).unwrap(), vec![2.0, 3.0, 4.0], "the last dispatch ran with its own group");
    // Trimming the pool forgets the groups (they hold pooled buffers): the next dispatch makes one.
    g.trim_pool();
    let before = g.work_stats();
    let mut b = g.batch();
    b.dispatch(g, &TINY, "main", &[("V", 1.0)], &[Binding::Tensor(&y)], [3, 1, 1]).unwrap();
    g.submit(b).unwrap();
    let s = g.work_stats().since(before);
    assert_eq!((s.dispatches, s.bind_groups), (1, 1), "{s}");
    // A dry batch records nothing and submits nothing.
    let before = g.work_stats();
    let mut dry = g.dry_batch();
    dry.dispatch(g, &TINY, "main", &[("V", 1.0)], &[Binding::Tensor(&y)], [3, 1, 1]).unwrap();
    g.submit(dry).unwrap();
    assert_eq!(g.work_stats().since(before), Default::default());
    // An upload writes its bytes into a new buffer; a read-back is one submission and its bytes.
    let before = g.work_stats();
    let x = g.upload_f32(&[5], &[1.0; 5]).unwrap();
    assert_eq!(g.read_f32_blocking(&y).unwrap(), vec![1.0, 2.0, 3.0]);
    let s = g.work_stats().since(before);
    assert_eq!((s.bytes_written, s.buffers_created, s.submissions, s.bytes_read), (20, 1, 1, 12), "{s}");
    drop(x);
}
