//! Shader sources and the compute-pipeline cache.
//!
//! A kernel is a `.wgsl` file (optionally preceded by shared library files such
//! as `quant.wgsl`) compiled with WGSL `override` constants for its tunables;
//! nothing is string-templated. Pipelines are cached by (shader, entry point,
//! override values). Creation runs inside an error scope so that a shader the
//! driver rejects comes back as `Error::Shader` instead of a panic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::context::Gpu;
use crate::error::{Error, Result};

/// A WGSL program: library parts first, then the kernel file, joined with newlines.
#[derive(Debug)]
pub struct ShaderSpec {
    pub name: &'static str,
    pub sources: &'static [&'static str],
    /// The source starts with `enable f16;` and needs the `shader-f16` feature.
    pub needs_f16: bool,
    /// The program uses subgroup operations or builtins: it needs `GpuFeatures::subgroups`.
    pub needs_subgroups: bool,
}

impl ShaderSpec {
    /// The program as the device compiles it. In the browser a subgroup program starts with
    /// `enable subgroups;` (WGSL requires it, and wgpu hands the text to the browser unchanged);
    /// natively naga 30 rejects that directive (it parses it as not implemented) and takes the
    /// operations from the device's features, so the files never carry it.
    pub fn source(&self) -> String {
        let body = self.sources.join("\n");
        if cfg!(target_arch = "wasm32") && self.needs_subgroups {
            return format!("enable subgroups;\n{body}");
        }
        body
    }
}

/// Values for a shader's `override` constants, by name.
pub type Overrides<'a> = &'a [(&'static str, f64)];

type Key = (&'static str, &'static str, Vec<(&'static str, u64)>);

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<Key, Arc<wgpu::ComputePipeline>>>,
    compiled: AtomicU64,
}

impl Gpu {
    /// Compute pipelines compiled since the device was opened (cache misses). A step run after
    /// a warm-up (`FluxModel::warm_up`, `Sampler::new`) should leave it unchanged.
    pub fn pipelines_compiled(&self) -> u64 {
        self.pipelines.compiled.load(Ordering::Relaxed)
    }

    /// The compute pipeline for `entry` of `spec` with `overrides`, compiled on first use.
    pub(crate) fn pipeline(
        &self,
        spec: &'static ShaderSpec,
        entry: &'static str,
        overrides: Overrides,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        if spec.needs_f16 && !self.features().shader_f16 {
            return Err(Error::MissingFeature { op: spec.name, feature: "shader-f16" });
        }
        if spec.needs_subgroups && !self.features().subgroups {
            return Err(Error::MissingFeature { op: spec.name, feature: "subgroups" });
        }
        let mut sorted: Vec<(&'static str, u64)> = overrides.iter().map(|(k, v)| (*k, v.to_bits())).collect();
        sorted.sort();
        let key: Key = (spec.name, entry, sorted);
        let cache = &self.pipelines;
        if let Some(p) = cache.pipelines.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(p);
        }
        let shader_err =
            |message: String| Error::Shader { shader: spec.name.to_string(), entry: entry.to_string(), message };

        #[cfg(not(target_arch = "wasm32"))]
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = {
            let mut modules = cache.modules.lock().map_err(|e| shader_err(e.to_string()))?;
            modules
                .entry(spec.name)
                .or_insert_with(|| {
                    self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(spec.name),
                        source: wgpu::ShaderSource::Wgsl(spec.source().into()),
                    })
                })
                .clone()
        };
        let constants: Vec<(&str, f64)> = overrides.to_vec();
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        // Natively the scope's result is ready at once. In the browser it would
        // arrive later, so there no scope is pushed: the uncaptured-error handler
        // records the failure and the next sync point (`Gpu::take_error`) reports it.
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(err) = pollster::block_on(scope.pop()) {
            // A broken module must not poison later attempts.
            if let Ok(mut m) = cache.modules.lock() {
                m.remove(spec.name);
            }
            return Err(shader_err(err.to_string()));
        }
        let pipeline = Arc::new(pipeline);
        cache.compiled.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = cache.pipelines.lock() {
            m.insert(key, pipeline.clone());
        }
        Ok(pipeline)
    }
}
