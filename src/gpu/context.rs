//! Device creation (native and browser), limits, optional features and the
//! capture of asynchronous GPU errors.

use std::sync::{Arc, Mutex};

use super::bind_cache::BindCache;
use super::buffer::BufferPool;
use super::counters::{Counters, WorkStats};
use super::pipeline::PipelineCache;
use crate::error::{Error, Result};

/// What the caller wants from the adapter. Optional features are used only
/// when the adapter offers them; asking for them never fails.
#[derive(Debug, Clone)]
pub struct GpuOptions {
    pub high_performance: bool,
    /// Use `shader-f16` if the adapter has it (false forces the f32 paths).
    pub allow_f16: bool,
    /// Use subgroup operations if the adapter has them.
    pub allow_subgroups: bool,
    /// Request at most this storage-binding size (tests use it to exercise the
    /// splitting of tensors larger than one binding on small data).
    pub max_storage_binding: Option<u64>,
    /// Use cooperative matrices (tensor cores; wgpu's experimental
    /// `EXPERIMENTAL_COOPERATIVE_MATRIX`) if the adapter has a configuration the
    /// kernels can use. Natively the default is false when `ICLORA_NO_COOP=1` is set,
    /// so the CLI and benchmarks can A/B the FMA kernels on the same card.
    pub allow_cooperative_matrix: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            high_performance: true,
            allow_f16: true,
            allow_subgroups: true,
            max_storage_binding: None,
            allow_cooperative_matrix: !matches!(std::env::var("ICLORA_NO_COOP").as_deref(), Ok("1")),
        }
    }
}

/// Element type of a cooperative-matrix operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoopScalar {
    F16,
    F32,
    I32,
    U32,
    /// 8-bit operands: only Chrome's subgroup matrices report them (integer configurations on NVIDIA).
    I8,
    U8,
}

/// One cooperative-matrix configuration the adapter reports (subgroup scope):
/// `C[m×n] (acc) += A[m×k] (ab) · B[k×n] (ab)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CoopMatrixConfig {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub ab: CoopScalar,
    pub acc: CoopScalar,
}

impl CoopMatrixConfig {
    /// Whether the WGSL kernels can use it: WGSL (naga 30) has only square `coop_mat8x8` /
    /// `coop_mat16x16` types, the kernels accumulate in f32, and f16 operands need `shader-f16`.
    fn usable(&self, shader_f16: bool) -> bool {
        self.m == self.n
            && self.n == self.k
            && matches!(self.m, 8 | 16)
            && self.acc == CoopScalar::F32
            && (self.ab == CoopScalar::F32 || (self.ab == CoopScalar::F16 && shader_f16))
    }

    /// Preference among usable ones: f16 operands (tensor-core rate) first, then the larger tile.
    fn rank(&self) -> (bool, u32) {
        (self.ab == CoopScalar::F16, self.m)
    }
}

/// Optional features detected on the adapter and enabled on the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuFeatures {
    pub shader_f16: bool,
    /// Subgroup operations and the `subgroup_id` / `num_subgroups` builtins: natively wgpu's
    /// `SUBGROUP`; in the browser the `subgroups` feature that web/gpu_bridge.js requests plus
    /// the WGSL language feature `subgroup_id` (Chrome 144+).
    pub subgroups: bool,
    pub timestamp_query: bool,
    /// The cooperative-matrix configuration the kernels use (`None`: the adapter has none
    /// they can use, or it was turned off): enabled on the device when `Some`.
    pub cooperative_matrix: Option<CoopMatrixConfig>,
}

/// The adapter as a user would want it described, plus the limits the kernels size themselves by.
#[derive(Debug, Clone)]
pub struct GpuInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_binding: u64,
    pub max_buffer_size: u64,
    pub max_invocations: u32,
    pub max_workgroup_size_x: u32,
    pub max_workgroups_per_dim: u32,
    pub max_workgroup_storage: u32,
    pub storage_offset_alignment: u32,
    pub max_storage_buffers_per_stage: u32,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    /// Every cooperative-matrix configuration the adapter reports: natively wgpu's (subgroup-scope
    /// ones with sizes 8 or 16; empty without `EXPERIMENTAL_COOPERATIVE_MATRIX`), in the browser
    /// Chrome's `chromium-experimental-subgroup-matrix` ones (web/gpu_bridge.js; empty unless
    /// the browser offers the feature).
    pub cooperative_matrix_configs: Vec<CoopMatrixConfig>,
}

/// The GPU context: device, queue, limits and caches. Passed by reference
/// everywhere; there is no global device.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: GpuInfo,
    features: GpuFeatures,
    pub(crate) pipelines: PipelineCache,
    pub(crate) pool: Arc<BufferPool>,
    /// What the device was asked to do (`work_stats`).
    pub(crate) counters: Counters,
    /// Bind groups for reuse by later dispatches of the same pipeline and buffers.
    pub(crate) bind_groups: BindCache,
    /// The device's `min_uniform_buffer_offset_alignment` (uniform runs in a pooled chunk).
    pub(crate) uniform_align: u64,
    errors: Arc<Mutex<Vec<Error>>>,
    lost: Arc<Mutex<Option<String>>>,
}

fn coop_scalar(t: wgpu::CooperativeScalarType) -> CoopScalar {
    match t {
        wgpu::CooperativeScalarType::F16 => CoopScalar::F16,
        wgpu::CooperativeScalarType::F32 => CoopScalar::F32,
        wgpu::CooperativeScalarType::I32 => CoopScalar::I32,
        wgpu::CooperativeScalarType::U32 => CoopScalar::U32,
    }
}

fn coop_config(p: &wgpu::CooperativeMatrixProperties) -> Option<CoopMatrixConfig> {
    // An entry with saturating accumulation requires the SaturatingAccumulation operand on the
    // multiply-add (VK_KHR_cooperative_matrix), which naga never emits: not usable.
    (!p.saturating_accumulation).then(|| CoopMatrixConfig {
        m: p.m_size,
        n: p.n_size,
        k: p.k_size,
        ab: coop_scalar(p.ab_type),
        acc: coop_scalar(p.cr_type),
    })
}

impl Gpu {
    /// Opens the default adapter with the adapter's own maximum limits.
    pub async fn new(opts: &GpuOptions) -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: if opts.high_performance {
                    wgpu::PowerPreference::HighPerformance
                } else {
                    wgpu::PowerPreference::LowPower
                },
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| Error::NoAdapter(e.to_string()))?;

        let available = adapter.features();
        let mut wanted = wgpu::Features::empty();
        let mut features = GpuFeatures::default();
        if opts.allow_f16 && available.contains(wgpu::Features::SHADER_F16) {
            wanted |= wgpu::Features::SHADER_F16;
            features.shader_f16 = true;
        }
        if opts.allow_subgroups && available.contains(wgpu::Features::SUBGROUP) {
            wanted |= wgpu::Features::SUBGROUP;
            features.subgroups = true;
        }
        if available.contains(wgpu::Features::TIMESTAMP_QUERY) {
            wanted |= wgpu::Features::TIMESTAMP_QUERY;
            features.timestamp_query = true;
        }
        let coop_configs: Vec<CoopMatrixConfig> = if available.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
        {
            adapter.cooperative_matrix_properties().iter().filter_map(coop_config).collect()
        } else {
            Vec::new()
        };
        if opts.allow_cooperative_matrix {
            features.cooperative_matrix =
                coop_configs.iter().filter(|c| c.usable(features.shader_f16)).max_by_key(|c| c.rank()).copied();
        }
        if features.cooperative_matrix.is_some() {
            wanted |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        // Ask for everything the adapter can do: FLUX needs large bindings.
        let mut limits = adapter.limits();
        if let Some(cap) = opts.max_storage_binding {
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(cap);
        }
        // In the browser the label keys what web/gpu_bridge.js records about this device.
        #[cfg(target_arch = "wasm32")]
        let label = super::web::unique_label();
        #[cfg(not(target_arch = "wasm32"))]
        let label = "iclora".to_string();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some(&label),
                required_features: wanted,
                required_limits: limits.clone(),
                experimental_features: if features.cooperative_matrix.is_some() {
                    // SAFETY: wgpu's cooperative matrices are an experimental feature it may still
                    // have bugs in; it is enabled only when an adapter reports a configuration we
                    // use, and `GpuOptions::allow_cooperative_matrix` / ICLORA_NO_COOP=1 turn it off.
                    unsafe { wgpu::ExperimentalFeatures::enabled() }
                } else {
                    wgpu::ExperimentalFeatures::disabled()
                },
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::DeviceRequest(e.to_string()))?;

        let ai = adapter.get_info();
        #[allow(unused_mut)] // changed only in the browser
        let mut info = GpuInfo {
            name: ai.name.clone(),
            backend: format!("{:?}", ai.backend),
            device_type: format!("{:?}", ai.device_type),
            driver: format!("{} {}", ai.driver, ai.driver_info).trim().to_string(),
            max_storage_binding: limits.max_storage_buffer_binding_size as u64,
            max_buffer_size: limits.max_buffer_size,
            max_invocations: limits.max_compute_invocations_per_workgroup,
            max_workgroup_size_x: limits.max_compute_workgroup_size_x,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            storage_offset_alignment: limits.min_storage_buffer_offset_alignment,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
            subgroup_min_size: ai.subgroup_min_size,
            subgroup_max_size: ai.subgroup_max_size,
            cooperative_matrix_configs: coop_configs,
        };
        // wgpu's WebGPU backend cannot request subgroups: the bridge did (web/gpu_bridge.js).
        #[cfg(target_arch = "wasm32")]
        {
            let web = super::web::take_facts(&label);
            features.subgroups = opts.allow_subgroups && web.subgroups;
            if info.subgroup_max_size == 0 {
                (info.subgroup_min_size, info.subgroup_max_size) = (web.subgroup_min_size, web.subgroup_max_size);
            }
            info.cooperative_matrix_configs = web.matrix_configs;
        }

        let errors: Arc<Mutex<Vec<Error>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let err = match e {
                wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(e.to_string()),
                other => Error::Validation(other.to_string()),
            };
            if let Ok(mut v) = sink.lock() {
                v.push(err);
            }
        }));
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut l) = lost_sink.lock() {
                *l = Some(format!("{reason:?}: {msg}"));
            }
        });

        Ok(Gpu {
            device,
            queue,
            info,
            features,
            pipelines: PipelineCache::default(),
            pool: Arc::new(BufferPool::default()),
            counters: Counters::default(),
            bind_groups: BindCache::default(),
            uniform_align: limits.min_uniform_buffer_offset_alignment as u64,
            errors,
            lost,
        })
    }

    /// Native convenience: [`Gpu::new`] driven to completion on this thread.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(opts: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Gpu::new(opts))
    }

    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// The work counted since the device was opened (see `WorkStats`).
    pub fn work_stats(&self) -> WorkStats {
        WorkStats::read(&self.counters, self.buffer_stats().created, self.pipelines_compiled())
    }

    pub fn features(&self) -> GpuFeatures {
        self.features
    }

    /// A workgroup size for 1-D kernels: `preferred`, capped by the device
    /// (browsers' software adapters allow only 256 invocations).
    pub fn workgroup_size(&self, preferred: u32) -> u32 {
        preferred.min(self.info.max_invocations).min(self.info.max_workgroup_size_x).max(1)
    }

    /// Returns the first asynchronous error the device reported since the last
    /// check (validation, out of memory, device loss), if any.
    pub fn take_error(&self) -> Result<()> {
        if let Some(reason) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(Error::DeviceLost(reason));
        }
        let first = self.errors.lock().ok().and_then(|mut v| {
            let first = v.first().cloned();
            v.clear();
            first
        });
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Number of bytes currently held by the buffer pool for reuse.
    pub fn pooled_bytes(&self) -> u64 {
        self.pool.pooled_bytes()
    }

    /// Resolves once the GPU has finished the work submitted so far: natively this waits (as
    /// [`Gpu::wait_idle`]); in browsers it awaits `queue.onSubmittedWorkDone`, so the event loop
    /// keeps running (progress messages, cancel requests) while the GPU works.
    pub async fn done(&self) -> Result<()> {
        #[cfg(target_arch = "wasm32")]
        {
            let (tx, rx) = futures_channel::oneshot::channel();
            self.queue.on_submitted_work_done(move || {
                let _ = tx.send(());
            });
            let _ = rx.await;
        }
        self.wait_idle()
    }

    /// Waits until the GPU has finished all submitted work (native only; a no-op in browsers).
    pub fn wait_idle(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        self.take_error()
    }
}
