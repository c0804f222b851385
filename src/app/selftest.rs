//! Kernel self-test page: runs every case of the registry (`crate::selftest`) on this
//! browser's GPU, compares with the CPU reference, and shows one table row per
//! run. When it is done it sets `document.body.dataset.selftest` to "pass" or
//! "fail" and writes `selftest: N passed, M failed` into `#selftest-summary`;
//! tests/e2e/selftest.mjs waits for that marker.

use crate::selftest::{self as cases, compare, Case, Comparison, Rng};
use super::dom::{add, by_id, clear, el, now_ms, set_marker, yield_to_browser, AppResult};
use crate::gpu::Gpu;

/// Runs one case: random inputs, one batch, async readback, comparison.
async fn check(gpu: &Gpu, case: &Case, dims: &[usize], seed: u64) -> AppResult<Comparison> {
    // In the browser, GPU errors arrive as events some time after the call that caused them
    // (no error scopes there, see gpu/pipeline.rs): drop any left over from the previous case,
    // and after the readback give this case's errors a turn of the event loop to arrive.
    let _ = gpu.take_error();
    let mut rng = Rng::new(seed);
    let mut batch = gpu.batch();
    let (out, expected) = (case.run)(gpu, &mut batch, dims, &mut rng)?;
    gpu.submit(batch)?;
    let got = gpu.read_f32(&out).await?;
    yield_to_browser().await?;
    gpu.take_error()?;
    Ok(compare(&got, &expected, case.rtol)?)
}

/// One table row, filled in as the case runs. A failure adds a second row below it with
/// the first bad value or the error.
struct Row {
    tr: web_sys::Element,
    err: web_sys::Element,
    result: web_sys::Element,
    time: web_sys::Element,
}

impl Row {
    fn new(tbody: &web_sys::Element, case: &Case, dims: &[usize]) -> AppResult<Row> {
        let tr = add(tbody, "tr", "running", "")?;
        add(&tr, "td", "kernel", case.kernel)?;
        add(&tr, "td", "shape", &case.describe(dims))?;
        let err = add(&tr, "td", "num", "…")?;
        add(&tr, "td", "num", &if case.rtol == 0.0 { "exact".to_string() } else { format!("{:.0e}", case.rtol) })?;
        let result = add(&tr, "td", "result", "running")?;
        let time = add(&tr, "td", "num", "")?;
        Ok(Row { tr, err, result, time })
    }

    fn finish(&self, passed: bool, err: &str, ms: f64, details: &str) -> AppResult<()> {
        self.tr.set_class_name(if passed { "pass" } else { "fail" });
        self.result.set_text_content(Some(if passed { "pass" } else { "FAIL" }));
        self.err.set_text_content(Some(err));
        self.time.set_text_content(Some(&format!("{ms:.0} ms")));
        if details.is_empty() {
            return Ok(());
        }
        let tr = el("tr", "detail", "")?;
        let td = add(&tr, "td", "", "")?;
        td.set_attribute("colspan", "6")?;
        // Browser GPU errors run over several lines; the first says what failed, the rest is
        // the call chain, kept in the tooltip.
        td.set_text_content(Some(details.lines().next().unwrap_or("")));
        if details.contains('\n') {
            td.set_attribute("title", details)?;
        }
        self.tr.after_with_node_1(&tr)?;
        Ok(())
    }
}

/// Runs the whole registry; returns (passed, failed).
pub async fn run(gpu: &Gpu) -> AppResult<(usize, usize)> {
    let tbody = by_id("selftest-rows")?;
    let summary = by_id("selftest-summary")?;
    clear(&tbody);
    set_marker("selftest", "running")?;
    let cases = cases::all();
    let total: usize = cases.iter().map(|c| c.dims.len()).sum();
    let (mut passed, mut failed, mut seed) = (0usize, 0usize, 0u64);
    for case in &cases {
        for dims in case.dims {
            seed += 1;
            let row = Row::new(&tbody, case, dims)?;
            summary.set_text_content(Some(&format!("running {seed}/{total}: {} {}", case.kernel, case.describe(dims))));
            // Let the browser paint the row before the GPU work and readback.
            yield_to_browser().await?;
            let t0 = now_ms();
            let outcome = check(gpu, case, dims, seed).await;
            let ms = now_ms() - t0;
            let ok = match outcome {
                Ok(c) => {
                    let details = match c.first_bad {
                        Some((i, g, e)) => format!("first bad index {i}: got {g}, expected {e}"),
                        None => String::new(),
                    };
                    row.finish(c.first_bad.is_none(), &format!("{:.2e}", c.max_err), ms, &details)?;
                    c.first_bad.is_none()
                }
                Err(e) => {
                    row.finish(false, "—", ms, &e.to_string())?;
                    false
                }
            };
            if ok {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    let line = format!("selftest: {passed} passed, {failed} failed");
    summary.set_text_content(Some(&line));
    summary.set_class_name(if failed == 0 { "summary pass" } else { "summary fail" });
    web_sys::console::log_1(&line.into());
    set_marker("selftest", if failed == 0 { "pass" } else { "fail" })?;
    Ok((passed, failed))
}

/// The self-test cannot run at all (no WebGPU, no device): say why and mark it failed.
pub fn give_up(why: &str) -> AppResult<()> {
    let summary = by_id("selftest-summary")?;
    summary.set_class_name("summary fail");
    summary.set_text_content(Some(&format!("selftest could not run: {why}")));
    set_marker("selftest", "fail")
}
