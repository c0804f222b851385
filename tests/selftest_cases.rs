//! The browser self-test's registry (`iclora::selftest::all`), run natively on
//! lavapipe: the same cases the page runs in headless Chromium must pass here
//! too, and the registry must keep compiling with the kernels' APIs.

mod common;
use common::gpu;
use iclora::selftest::{all, compare, Rng};

#[test]
fn every_selftest_case_passes_natively() {
    let g = gpu();
    let (mut seed, mut failures, mut runs) = (0u64, Vec::new(), 0);
    for case in all() {
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
                Ok(c) => failures.push(format!("{} {}: first bad {:?} (max err {:.2e})", case.kernel, case.describe(dims), c.first_bad, c.max_err)),
                Err(e) => failures.push(format!("{} {}: {e}", case.kernel, case.describe(dims))),
            }
        }
    }
    assert!(failures.is_empty(), "{} of {runs} self-test runs failed:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{runs} self-test runs passed");
}
