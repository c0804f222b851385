//! Bind groups kept for reuse. A dispatch whose pipeline and bound buffer ranges are those of an
//! earlier dispatch binds the group made then instead of creating one: every denoising step after
//! the first, whose weights are the same buffers and whose intermediates come back from the
//! buffer pool in the same order (`WorkStats::bind_groups` counts creations). A group holds its
//! buffers, as the pool does: the cache is emptied with the pool (`Gpu::trim_pool`) and whenever
//! it reaches `MAX_GROUPS`, so it never keeps more than the pool would.

use std::collections::HashMap;
use std::sync::Mutex;

/// Groups kept at most; past this the cache starts again empty (a step of FLUX.1 makes ~720).
const MAX_GROUPS: usize = 16_384;

/// What makes two bind groups interchangeable: the pipeline (its layout) and, per binding in
/// order, the buffer, offset and size.
#[derive(PartialEq, Eq, Hash)]
pub(crate) struct BindKey {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) entries: Vec<(u32, wgpu::Buffer, u64, u64)>,
}

#[derive(Default)]
pub(crate) struct BindCache {
    groups: Mutex<HashMap<BindKey, wgpu::BindGroup>>,
}

impl BindCache {
    /// The group for `key`, and whether `make` had to create it.
    pub(crate) fn get_or_make(&self, key: BindKey, make: impl FnOnce() -> wgpu::BindGroup) -> (wgpu::BindGroup, bool) {
        let Ok(mut groups) = self.groups.lock() else { return (make(), true) };
        if let Some(g) = groups.get(&key) {
            return (g.clone(), false);
        }
        if groups.len() >= MAX_GROUPS {
            groups.clear();
        }
        let g = make();
        groups.insert(key, g.clone());
        (g, true)
    }

    /// Forgets every group (and so the buffers they hold).
    pub(crate) fn clear(&self) {
        if let Ok(mut groups) = self.groups.lock() {
            groups.clear();
        }
    }
}
