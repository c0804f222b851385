//! Kernel self-test page: runs every case of the registry (`crate::selftest`) on this
//! browser's GPU, compares with the CPU reference, and shows one table row per
//! run. When it is done it sets `document.body.dataset.selftest` to "pass" or
//! "fail" and writes `selftest: N passed, M failed, K not offered` into `#selftest-summary`;
//! tests/e2e/selftest.mjs waits for that marker.
//!
//! Kernels that reduce through `kernels::Reducing` get two rows per run: "subgroups" on the page's
//! device, and "workgroup memory" on a second device opened without subgroups. Where the adapter
//! has no subgroups the first row says "not offered" and counts neither as passed nor as failed.

use super::dom::{add, by_id, clear, el, now_ms, set_marker, yield_to_browser, AppResult};
use crate::gpu::{Gpu, GpuOptions};
use crate::selftest::{self as cases, compare, Case, Comparison, Rng};

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
    fn new(tbody: &web_sys::Element, case: &Case, path: Option<&str>, dims: &[usize]) -> AppResult<Row> {
        let tr = add(tbody, "tr", "running", "")?;
        add(
            &tr,
            "td",
            "kernel",
            &match path {
                Some(p) => format!("{} · {p}", case.kernel),
                None => case.kernel.to_string(),
            },
        )?;
        add(&tr, "td", "shape", &case.describe(dims))?;
        let err = add(&tr, "td", "num", "…")?;
        add(&tr, "td", "num", &if case.rtol == 0.0 { "exact".to_string() } else { format!("{:.0e}", case.rtol) })?;
        let result = add(&tr, "td", "result", "running")?;
        let time = add(&tr, "td", "num", "")?;
        Ok(Row { tr, err, result, time })
    }

    /// The adapter lacks what this path needs: neither passed nor failed.
    fn not_offered(&self, what: &str) -> AppResult<()> {
        self.tr.set_class_name("skip");
        self.result.set_text_content(Some("not offered"));
        self.err.set_text_content(Some("—"));
        self.tr.set_attribute("title", &format!("this adapter has no {what}"))?;
        Ok(())
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

/// How one run ended.
enum Outcome {
    Done(Comparison),
    Error(String),
    /// The device lacks what this path needs: neither passed nor failed.
    NotOffered,
}

impl Outcome {
    /// ("pass" | "fail" | "not offered", max error, what went wrong), as both sinks report it.
    fn verdict(&self) -> (&'static str, Option<f32>, String) {
        match self {
            Outcome::Done(c) => match c.first_bad {
                None => ("pass", Some(c.max_err), String::new()),
                Some((i, g, e)) => ("fail", Some(c.max_err), format!("first bad index {i}: got {g}, expected {e}")),
            },
            Outcome::Error(e) => ("fail", None, e.clone()),
            Outcome::NotOffered => ("not offered", None, format!("this adapter has no {SUBGROUPS}")),
        }
    }
}

/// Which reduction path a run of a reducing case takes (`None` for the other cases).
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Subgroups,
    WorkgroupMemory,
}

impl Path {
    fn label(path: Option<Path>) -> Option<&'static str> {
        path.map(|p| match p {
            Path::Subgroups => "subgroups",
            Path::WorkgroupMemory => "workgroup memory",
        })
    }
}

/// Where the runs go: the page's table ([`Table`]) or the headless report ([`Report`]).
trait Sink {
    /// A run starts; `paint` says whether to give the browser a turn to draw before the GPU work.
    fn start(&mut self, case: &Case, path: Option<&str>, dims: &[usize], progress: (usize, usize)) -> AppResult<bool>;
    fn finish(&mut self, case: &Case, path: Option<&str>, dims: &[usize], outcome: &Outcome, ms: f64) -> AppResult<()>;
}

/// What the subgroup path needs, for "not offered".
const SUBGROUPS: &str = "subgroups (with the subgroup_id builtin)";

/// Runs every case on `gpu`, and each reducing case also on a device without subgroups; returns
/// (passed, failed, not offered).
async fn run_cases(gpu: &Gpu, sink: &mut impl Sink) -> AppResult<(usize, usize, usize)> {
    // The workgroup-memory path of the reducing kernels: `gpu` itself when it has no subgroups,
    // else a second device opened without them.
    let plain = if gpu.features().subgroups {
        Some(Gpu::new(&GpuOptions { allow_subgroups: false, ..GpuOptions::default() }).await?)
    } else {
        None
    };
    let plain_gpu = plain.as_ref().unwrap_or(gpu);
    let cases = cases::all();
    let total: usize = cases.iter().map(|c| c.dims.len() * if c.reduces { 2 } else { 1 }).sum();
    let (mut passed, mut failed, mut skipped, mut seed, mut done) = (0usize, 0usize, 0usize, 0u64, 0usize);
    for case in &cases {
        for dims in case.dims {
            seed += 1;
            let paths: &[Option<Path>] =
                if case.reduces { &[Some(Path::Subgroups), Some(Path::WorkgroupMemory)] } else { &[None] };
            for &p in paths {
                let path = Path::label(p);
                done += 1;
                if sink.start(case, path, dims, (done, total))? {
                    yield_to_browser().await?;
                }
                let on = match p {
                    Some(Path::WorkgroupMemory) => Some(plain_gpu),
                    Some(Path::Subgroups) if !gpu.features().subgroups => None,
                    _ => Some(gpu),
                };
                let t0 = now_ms();
                let outcome = match on {
                    None => Outcome::NotOffered,
                    Some(g) => match check(g, case, dims, seed).await {
                        Ok(c) => Outcome::Done(c),
                        Err(e) => Outcome::Error(e.to_string()),
                    },
                };
                match &outcome {
                    Outcome::Done(c) if c.first_bad.is_none() => passed += 1,
                    Outcome::NotOffered => skipped += 1,
                    _ => failed += 1,
                }
                sink.finish(case, path, dims, &outcome, now_ms() - t0)?;
            }
        }
    }
    Ok((passed, failed, skipped))
}

/// The page's table: one row per run, filled in as it runs.
struct Table {
    tbody: web_sys::Element,
    summary: web_sys::Element,
    row: Option<Row>,
}

impl Sink for Table {
    fn start(
        &mut self,
        case: &Case,
        path: Option<&str>,
        dims: &[usize],
        (done, total): (usize, usize),
    ) -> AppResult<bool> {
        self.summary.set_text_content(Some(&format!(
            "running {done}/{total}: {} {}",
            case.kernel,
            case.describe(dims)
        )));
        self.row = Some(Row::new(&self.tbody, case, path, dims)?);
        Ok(true)
    }

    fn finish(&mut self, _: &Case, _: Option<&str>, _: &[usize], outcome: &Outcome, ms: f64) -> AppResult<()> {
        let Some(row) = self.row.take() else { return Ok(()) };
        if let Outcome::NotOffered = outcome {
            return row.not_offered(SUBGROUPS);
        }
        let (result, max_err, detail) = outcome.verdict();
        row.finish(result == "pass", &max_err.map_or("—".to_string(), |e| format!("{e:.2e}")), ms, &detail)
    }
}

/// Runs the whole registry; returns (passed, failed).
pub async fn run(gpu: &Gpu) -> AppResult<(usize, usize)> {
    let tbody = by_id("selftest-rows")?;
    let summary = by_id("selftest-summary")?;
    clear(&tbody);
    set_marker("selftest", "running")?;
    let mut table = Table { tbody, summary: summary.clone(), row: None };
    let (passed, failed, skipped) = run_cases(gpu, &mut table).await?;
    let line = format!("selftest: {passed} passed, {failed} failed, {skipped} not offered");
    summary.set_text_content(Some(&line));
    summary.set_class_name(if failed == 0 { "summary pass" } else { "summary fail" });
    web_sys::console::log_1(&line.into());
    set_marker("selftest", if failed == 0 { "pass" } else { "fail" })?;
    Ok((passed, failed))
}

/// The headless report: one JSON object per run.
#[derive(Default)]
struct Report {
    runs: Vec<serde_json::Value>,
}

impl Sink for Report {
    fn start(&mut self, _: &Case, _: Option<&str>, _: &[usize], _: (usize, usize)) -> AppResult<bool> {
        Ok(false)
    }

    fn finish(&mut self, case: &Case, path: Option<&str>, dims: &[usize], outcome: &Outcome, ms: f64) -> AppResult<()> {
        let (result, max_err, detail) = outcome.verdict();
        self.runs.push(serde_json::json!({
            "kernel": case.kernel,
            "path": path,
            "shape": case.describe(dims),
            "rtol": case.rtol,
            "result": result,
            "max_err": max_err,
            "ms": ms,
            "detail": detail,
        }));
        Ok(())
    }
}

/// The self-test without a page, for a JavaScript host that gives the engine `navigator.gpu`
/// (tests/e2e/dawn_selftest.mjs runs it under Node with Chrome's Dawn, dawn.node): every case on
/// the default device, as JSON `{ adapter, paths, passed, failed, not_offered, runs: [...] }`.
#[wasm_bindgen::prelude::wasm_bindgen]
pub async fn selftest_headless() -> Result<String, wasm_bindgen::JsValue> {
    let run = async {
        let gpu = Gpu::new(&GpuOptions::default()).await?;
        let mut report = Report::default();
        let (passed, failed, skipped) = run_cases(&gpu, &mut report).await?;
        let i = gpu.info();
        let f = gpu.features();
        Ok::<_, super::dom::AppError>(
            serde_json::json!({
                "adapter": i.name,
                "backend": i.backend,
                "shader_f16": f.shader_f16,
                "subgroups": f.subgroups,
                "subgroup_size": [i.subgroup_min_size, i.subgroup_max_size],
                "subgroup_matrix": format!("{:?}", i.cooperative_matrix_configs),
                "paths": crate::kernels::describe_paths(&gpu, super::run::PRECISION),
                "passed": passed,
                "failed": failed,
                "not_offered": skipped,
                "runs": report.runs,
            })
            .to_string(),
        )
    };
    run.await.map_err(|e| wasm_bindgen::JsValue::from_str(&e.to_string()))
}

/// The self-test cannot run at all (no WebGPU, no device): say why and mark it failed.
pub fn give_up(why: &str) -> AppResult<()> {
    let summary = by_id("selftest-summary")?;
    summary.set_class_name("summary fail");
    summary.set_text_content(Some(&format!("selftest could not run: {why}")));
    set_marker("selftest", "fail")
}
