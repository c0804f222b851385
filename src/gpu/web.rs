//! What a browser device has that wgpu's WebGPU backend cannot report: `subgroups` (with the
//! `subgroup_id` builtins) and Chrome's subgroup-matrix configurations. `web/gpu_bridge.js`
//! (loaded before the engine starts, in the page and in the worker) adds those features to the
//! device request and records, under the device's label, what the device got; this file reads
//! that record. Without the bridge (an embedder that does not load it) every fact is "no".

use std::sync::atomic::{AtomicU32, Ordering};

use js_sys::{Array, Reflect};
use wasm_bindgen::{JsCast, JsValue};

use super::context::{CoopMatrixConfig, CoopScalar};

/// The facts the bridge recorded for one device.
#[derive(Debug, Default)]
pub(super) struct WebFacts {
    /// `subgroups` enabled on the device and the `subgroup_id` / `num_subgroups` builtins offered
    /// (WGSL language feature `subgroup_id`): what every subgroup kernel of ours needs.
    pub subgroups: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    /// `chromium-experimental-subgroup-matrix` configurations, when the feature is enabled.
    pub matrix_configs: Vec<CoopMatrixConfig>,
}

/// A device label no other `Gpu::new` in this page or worker uses: the key of the bridge's record.
pub(super) fn unique_label() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("iclora-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn get(o: &JsValue, key: &str) -> JsValue {
    Reflect::get(o, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn scalar(name: &str) -> Option<CoopScalar> {
    Some(match name {
        "f16" => CoopScalar::F16,
        "f32" => CoopScalar::F32,
        "i32" => CoopScalar::I32,
        "u32" => CoopScalar::U32,
        "i8" => CoopScalar::I8,
        "u8" => CoopScalar::U8,
        _ => return None,
    })
}

/// Takes (and forgets) the bridge's record for the device labelled `label`.
pub(super) fn take_facts(label: &str) -> WebFacts {
    let devices = get(&get(&js_sys::global(), "icloraGpuBridge"), "devices");
    let Some(map) = devices.dyn_ref::<js_sys::Map>() else {
        return WebFacts::default();
    };
    let key = JsValue::from_str(label);
    let rec = map.get(&key);
    map.delete(&key);
    if rec.is_undefined() {
        return WebFacts::default();
    }
    let features: Array = get(&rec, "features").dyn_into().unwrap_or_default();
    let has = |f: &str| features.iter().any(|v| v.as_string().as_deref() == Some(f));
    let num = |k: &str| get(&rec, k).as_f64().unwrap_or(0.0) as u32;
    let configs: Array = get(&rec, "matrixConfigs").dyn_into().unwrap_or_default();
    let matrix_configs = configs
        .iter()
        .filter_map(|c| {
            Some(CoopMatrixConfig {
                m: get(&c, "m").as_f64()? as u32,
                n: get(&c, "n").as_f64()? as u32,
                k: get(&c, "k").as_f64()? as u32,
                ab: scalar(&get(&c, "component").as_string()?)?,
                acc: scalar(&get(&c, "result").as_string()?)?,
            })
        })
        .collect();
    WebFacts {
        subgroups: has("subgroups") && get(&rec, "subgroupId").as_bool() == Some(true),
        subgroup_min_size: num("subgroupMinSize"),
        subgroup_max_size: num("subgroupMaxSize"),
        matrix_configs,
    }
}
