//! What the GPU was asked to do, counted since the device was opened: dispatches, bind groups
//! created, submissions, bytes written to buffers and read back, plus the buffer pool's and the
//! pipeline cache's creations. `iclora bench flux-step` prints one step's share
//! ([`WorkStats::since`]), so waste (a bind group rebuilt per dispatch and step, an extra
//! submission, a read-back, an allocation in steady state) shows as a number. The counts do not
//! depend on the adapter, so they are checked on lavapipe.

use std::sync::atomic::{AtomicU64, Ordering};

/// The device's running counts (relaxed atomics: the order between counters does not matter).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) dispatches: AtomicU64,
    pub(crate) bind_groups: AtomicU64,
    pub(crate) submissions: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A snapshot of the counts ([`crate::gpu::Gpu::work_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkStats {
    /// Compute dispatches recorded (each in its own compute pass).
    pub dispatches: u64,
    /// Bind groups created.
    pub bind_groups: u64,
    /// Queue submissions (batches and read-backs).
    pub submissions: u64,
    /// Bytes written into buffers from the CPU (uploads and dispatch parameters).
    pub bytes_written: u64,
    /// Bytes copied back to the CPU.
    pub bytes_read: u64,
    /// Storage buffers created (pool misses).
    pub buffers_created: u64,
    /// Compute pipelines compiled (cache misses).
    pub pipelines_compiled: u64,
}

impl WorkStats {
    pub(crate) fn read(c: &Counters, buffers_created: u64, pipelines_compiled: u64) -> WorkStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkStats {
            dispatches: l(&c.dispatches),
            bind_groups: l(&c.bind_groups),
            submissions: l(&c.submissions),
            bytes_written: l(&c.bytes_written),
            bytes_read: l(&c.bytes_read),
            buffers_created,
            pipelines_compiled,
        }
    }

    /// What happened between `before` (an earlier snapshot of the same device) and this one.
    pub fn since(self, before: WorkStats) -> WorkStats {
        WorkStats {
            dispatches: self.dispatches.saturating_sub(before.dispatches),
            bind_groups: self.bind_groups.saturating_sub(before.bind_groups),
            submissions: self.submissions.saturating_sub(before.submissions),
            bytes_written: self.bytes_written.saturating_sub(before.bytes_written),
            bytes_read: self.bytes_read.saturating_sub(before.bytes_read),
            buffers_created: self.buffers_created.saturating_sub(before.buffers_created),
            pipelines_compiled: self.pipelines_compiled.saturating_sub(before.pipelines_compiled),
        }
    }
}

impl std::fmt::Display for WorkStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dispatches={} bind_groups={} submissions={} bytes_written={} bytes_read={} buffers_created={} pipelines_compiled={}",
            self.dispatches,
            self.bind_groups,
            self.submissions,
            self.bytes_written,
            self.bytes_read,
            self.buffers_created,
            self.pipelines_compiled
        )
    }
}
