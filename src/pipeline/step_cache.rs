//! The step cache: First-Block Cache (FBCache) over the sampler's steps. Every step runs the
//! embedders and the first double block; when the first block's residual on the image stream
//! (`img after block 0 − img before it`) differs from that of the last *computed* step by a
//! relative L1 distance `mean|r − r_prev| / mean|r_prev|` below the threshold, the remaining 18
//! double and 38 single blocks are not run: their residual from the last computed step
//! (`img after all blocks − img after block 0`) is added to this step's first-block output, and
//! the final layer runs on that. Upstream, the same rule and the same residuals:
//! huggingface/diffusers `src/diffusers/hooks/first_block_cache.py` at
//! 6115f60b5add866190db4db5fc619133309e9e50 (`FBCHeadBlockHook._should_compute_remaining_blocks`:
//! the previous head residual is replaced only on computed steps; `FBCBlockHook` with
//! `is_tail`: tail residual relative to the head block's output), after chengzeyi/ParaAttention
//! `src/para_attn/first_block_cache/utils.py` at abcc6b78f736afd94ee24ee1c9d6a9f8a0be50fb
//! (`are_two_tensors_similar`: reuse when `diff < threshold`, so a threshold of 0 never reuses).
//!
//! Why FBCache and not TeaCache (which thresholds the relative L1 of the first block's
//! *modulated input*, accumulated over steps and rescaled by a polynomial fitted per model): the
//! polynomial's coefficients are fitted on FLUX.1-dev's own activations, so they would be wrong
//! for the tiny test models, and for other FLUX variants or LoRA stacks; FBCache's test uses
//! only quantities the forward already computes and needs no per-model constants. Only the image
//! stream matters here: the final layer reads image tokens only, so the text stream's residual
//! (which diffusers also caches) is never needed.
//!
//! Memory: two `[L_img, hidden]` f32 tensors stay between steps (≈ 80 MB each for a 1024×1536
//! canvas), and a computed step keeps the first block's output through the remaining blocks.
//!
//! The decision costs one small reduction (`kernels::reduce`) and a read-back of 2 KiB per step:
//! the only read-back in a step, awaited (in a browser, the event loop runs meanwhile). The cache
//! lives in one sampler run: a new run (new LoRA scales, reference panels, prompt, seed) starts
//! empty, so nothing computed under other conditions is ever reused.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gpu::{Batch, Gpu, Tensor};
use crate::kernels::elementwise::{add, sub};
use crate::kernels::reduce::{abs_diff_sums, relative_l1};
use crate::model::flux::{FluxHead, FluxInputs, FluxModel};

/// The largest threshold accepted. The published FLUX settings are around 0.05–0.25; a distance
/// of 1 already means "changed as much as the residual is large", so thresholds above 1 reuse
/// (almost) every step that is not forced — useful to measure the cache's bound, not for images.
pub const MAX_THRESHOLD: f32 = 10.0;

/// Step-cache settings of a run (`None` in the options: off).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepCache {
    /// Reuse the remaining blocks' residual when the first block's residual moved less than this
    /// (relative L1) since the last computed step. 0 never reuses (but still measures).
    pub threshold: f32,
    /// At most this many steps in a row reuse the cache (`None`: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_reuse: Option<u32>,
}

impl StepCache {
    /// What is wrong with the settings, if anything (callers name the field or flag).
    pub fn problem(&self) -> Option<String> {
        if !self.threshold.is_finite() || !(0.0..=MAX_THRESHOLD).contains(&self.threshold) {
            return Some(format!(
                "threshold {} is not a number in 0..={MAX_THRESHOLD} (values around 0.05–0.25 are usual)",
                self.threshold
            ));
        }
        if self.max_reuse == Some(0) {
            return Some("a cap of 0 reused steps in a row is the cache turned off; turn it off instead".into());
        }
        None
    }

    /// [`problem`](Self::problem) as an error naming `field` (a CLI flag, an option).
    pub fn check(&self, field: &str) -> Result<()> {
        match self.problem() {
            Some(p) => Err(Error::InvalidArgument(format!("{field}: {p}"))),
            None => Ok(()),
        }
    }
}

/// What the cache did at one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheStep {
    /// The remaining blocks ran (`false`: their cached residual was reused).
    pub computed: bool,
    /// The relative L1 distance measured at this step (`None` on forced steps: the first and the
    /// last, and those after `max_reuse` reuses in a row).
    pub diff: Option<f64>,
}

/// The cache of one sampler run.
pub(super) struct CacheRun {
    settings: StepCache,
    /// The first block's image residual at the last computed step.
    head_residual: Option<Tensor>,
    /// The remaining blocks' image residual at the last computed step.
    tail_residual: Option<Tensor>,
    reused_in_a_row: u32,
    computed: usize,
}

/// A step's changes to the cache, applied once its submission went through.
pub(super) struct Pending {
    step: CacheStep,
    residuals: Option<(Tensor, Tensor)>,
}

impl CacheRun {
    pub(super) fn new(settings: StepCache) -> Result<CacheRun> {
        settings.check("step cache")?;
        Ok(CacheRun { settings, head_residual: None, tail_residual: None, reused_in_a_row: 0, computed: 0 })
    }

    /// Steps whose remaining blocks ran so far.
    pub(super) fn computed(&self) -> usize {
        self.computed
    }

    /// Whether step `i` of `steps` must run every block whatever the distance.
    fn forced(&self, i: usize, steps: usize) -> bool {
        i == 0
            || i + 1 >= steps
            || self.head_residual.is_none()
            || self.settings.max_reuse.is_some_and(|m| self.reused_in_a_row >= m)
    }

    /// Records the velocity of step `i` of `steps` into `b` with the cache: the head, then (unless
    /// the step is forced) the distance, read back after submitting what `b` holds (`b` must not
    /// be a dry batch then), then the remaining blocks or the cached residual, then the final
    /// layer. In a dry batch the step is planned as a computed one (nothing to read back).
    pub(super) async fn velocity(
        &self,
        gpu: &Gpu,
        b: &mut Batch,
        model: &FluxModel,
        inp: &FluxInputs<'_>,
        i: usize,
        steps: usize,
    ) -> Result<(Tensor, Pending)> {
        let FluxHead { svec, img_in, txt, img } = model.forward_head(gpu, b, inp, &mut |_, _| {})?;
        let head_residual = sub(gpu, b, &img, &img_in)?;
        drop(img_in);
        let mut diff = None;
        if let (false, Some(prev), Some(tail)) =
            (self.forced(i, steps) || b.is_dry(), &self.head_residual, &self.tail_residual)
        {
            let sums = abs_diff_sums(gpu, b, &head_residual, prev)?;
            b.flush(gpu)?;
            let d = relative_l1(&gpu.read_f32(&sums).await?);
            diff = Some(d);
            if d < self.settings.threshold as f64 {
                let out = add(gpu, b, &img, tail)?;
                let v = model.final_layer(gpu, b, &svec, &out)?;
                return Ok((v, Pending { step: CacheStep { computed: false, diff }, residuals: None }));
            }
        }
        let out = model.forward_tail(gpu, b, inp, &svec, txt, img.clone(), &mut |_, _| {})?;
        let tail_residual = sub(gpu, b, &out, &img)?;
        drop(img);
        let v = model.final_layer(gpu, b, &svec, &out)?;
        Ok((v, Pending { step: CacheStep { computed: true, diff }, residuals: Some((head_residual, tail_residual)) }))
    }

    /// Applies a submitted step's changes.
    pub(super) fn commit(&mut self, p: Pending) -> CacheStep {
        if let Some((head, tail)) = p.residuals {
            self.head_residual = Some(head);
            self.tail_residual = Some(tail);
            self.reused_in_a_row = 0;
            self.computed += 1;
        } else {
            self.reused_in_a_row += 1;
        }
        p.step
    }
}

/// The line `iclora generate` prints at the end of a run with the cache.
pub fn summary(computed: usize, steps: usize) -> String {
    format!("step cache: computed {computed} of {steps} steps")
}
