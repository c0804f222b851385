//! The browser self-test's registry (`iclora::selftest::all`), run natively on
//! lavapipe: the same cases the page runs in headless Chromium must pass here
//! too, and the registry must keep compiling with the kernels' APIs. Kernels that
//! reduce through `kernels::Reducing` run twice, as on the page: with subgroup
//! reductions (lavapipe has 8-lane subgroups) and through workgroup memory.

mod common;
use common::gpu;
use iclora::gpu::{Gpu, GpuOptions};
use iclora::selftest::{all, compare, Case, Rng};

/// Runs every case `pick` accepts on `g`; returns (runs, failures).
fn check(g: &Gpu, pick: impl Fn(&Case) -> bool) -> (usize, Vec<String>) {
    let (mut seed, mut failures, mut runs) = (0u64, Vec::new(), 0);
    for case in all().into_iter().filter(|c| pick(c)) {
        for dims in case.dims {
            seed += 1;
            runs += 1;
            let mut rng = Rng::new(seed);
            let mut batch = g.batch();
            let outcome = (case.run)(g, &mut batch, dims, &mut rng).and_then(|(out, expected)| {
                g.submit(batch)?;
                let got = g.read_f32_blocking(&out)?;
                compare(&got, &expected, case.rtol)
            });
            match outcome {
                Ok(c) if c.first_bad.is_none() => {}
                Ok(c) => failures.push(format!(
                    "{} {}: first bad {:?} (max err {:.2e})",
                    case.kernel,
                    case.describe(dims),
                    c.first_bad,
                    c.max_err
                )),
                Err(e) => failures.push(format!("{} {}: {e}", case.kernel, case.describe(dims))),
            }
        }
    }
    (runs, failures)
}

#[test]
fn every_selftest_case_passes_natively() {
    assert!(gpu().features().subgroups, "lavapipe has subgroups: the reductions below must take the subgroup path");
    let (runs, failures) = check(gpu(), |_| true);
    assert!(failures.is_empty(), "{} of {runs} self-test runs failed:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{runs} self-test runs passed");
}

#[test]
fn reduction_cases_pass_through_workgroup_memory() {
    let g =
        Gpu::new_blocking(&GpuOptions { allow_subgroups: false, ..GpuOptions::default() }).expect("a second device");
    assert!(!g.features().subgroups);
    let (runs, failures) = check(&g, |c| c.reduces);
    assert!(runs >= 8, "only {runs} reduction runs");
    assert!(failures.is_empty(), "{} of {runs} workgroup-memory runs failed:\n{}", failures.len(), failures.join("\n"));
}

/// The two programs really differ where it matters: the device with subgroups gets the
/// subgroup prelude, the other the workgroup-memory one.
#[test]
fn reducing_kernels_pick_the_prelude_of_the_device() {
    use iclora::kernels::{norm, reduce, rope, softmax, PRELUDE_REDUCE, PRELUDE_REDUCE_SG};
    let plain =
        Gpu::new_blocking(&GpuOptions { allow_subgroups: false, ..GpuOptions::default() }).expect("a second device");
    for shaders in [&norm::SHADERS, &rope::SHADERS, &softmax::SHADERS, &reduce::SHADERS] {
        let sg = shaders.pick(gpu());
        assert!(sg.needs_subgroups && sg.sources[0] == PRELUDE_REDUCE_SG, "{}", sg.name);
        let wg = shaders.pick(&plain);
        assert!(!wg.needs_subgroups && wg.sources[0] == PRELUDE_REDUCE, "{}", wg.name);
    }
}
