//! The FLUX transformer's tree, written once (BFL `Flux`, src/flux/model.py @ 802fb47, whose names the
//! structs and fields take): [`FluxTree::build`] names every Linear and norm scale with its BFL
//! key and its diffusers key(s) (the mapping of diffusers'
//! `convert_flux_transformer_checkpoint_to_diffusers`, src/diffusers/loaders/single_file_utils.py @ 58eb52c)
//! and its shape, and hands each to a [`Build`]er: the checkpoint loader (`weights.rs`), random
//! weights (`random.rs`) and [`FluxTree::keys`] (the key tree itself, from which the LoRA targets,
//! config inference and the bench files derive) all go through it, and
//! [`FluxTree::linears_mut`] visits every Linear in one order for all of them.
//!
//! diffusers splits two kinds of BFL Linears into parts: the double blocks' `qkv` (`to_q`, `to_k`,
//! `to_v` / `add_*_proj`) and the single blocks' `linear1` (q, k, v and `proj_mlp`); our weights
//! keep BFL's fused layout (rows concatenated), and a [`LinearKey`] lists the parts in row order.

use std::convert::Infallible;

use super::config::{FluxConfig, KeyScheme};
use super::model::TIME_DIM;

use crate::gpu::Tensor;
use crate::model::layers::Linear;

/// Where one Linear's `weight` `[n, k]` and `bias` `[n]` sit in a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearKey {
    /// BFL module name (without `.weight`), e.g. `double_blocks.3.img_attn.qkv`.
    pub bfl: String,
    /// diffusers module names and their row counts, in row order (one part unless split).
    pub diffusers: Vec<(String, usize)>,
    /// XLabs LoRA processors on it: name (`double_blocks.0.processor.qkv_lora1`), first row, rows.
    pub xlabs: Vec<(String, usize, usize)>,
    pub n: usize,
    pub k: usize,
    /// diffusers stores the rows' two halves in the other order (the final layer: scale | shift
    /// against BFL's shift | scale; diffusers `swap_scale_shift`).
    pub halves_swapped: bool,
}

/// Where one norm scale `[len]` sits: its full BFL and diffusers tensor names.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleKey {
    pub bfl: String,
    pub diffusers: String,
    pub len: usize,
}

impl ScaleKey {
    /// The tensor's name in `scheme` (with its prefix).
    pub fn name(&self, scheme: &KeyScheme) -> String {
        scheme.key(&self.diffusers, &self.bfl)
    }
}

impl LinearKey {
    /// The `suffix` tensors (`weight`, `bias`) in `scheme`, with its prefix, and their row counts:
    /// the whole Linear (BFL), or each part (diffusers).
    pub fn names(&self, scheme: &KeyScheme, suffix: &str) -> Vec<(String, usize)> {
        match scheme {
            KeyScheme::Diffusers { prefix } => {
                self.diffusers.iter().map(|(d, rows)| (format!("{prefix}{d}.{suffix}"), *rows)).collect()
            }
            KeyScheme::Bfl { prefix } => vec![(format!("{prefix}{}.{suffix}", self.bfl), self.n)],
        }
    }

    /// The first of [`names`](Self::names).
    pub fn name(&self, scheme: &KeyScheme, suffix: &str) -> String {
        self.names(scheme, suffix).swap_remove(0).0
    }
}

/// The block lists' names (BFL, diffusers): `double_blocks.{i}.` / `transformer_blocks.{i}.` …
pub const DOUBLE_BLOCKS: (&str, &str) = ("double_blocks", "transformer_blocks");
/// … and `single_blocks.{i}.` / `single_transformer_blocks.{i}.`.
pub const SINGLE_BLOCKS: (&str, &str) = ("single_blocks", "single_transformer_blocks");
/// The final layer's modulation (BFL, diffusers), whose halves diffusers stores swapped.
pub const FINAL_MODULATION: (&str, &str) = ("final_layer.adaLN_modulation.1", "norm_out.linear");

/// Linear → SiLU → Linear (BFL `MLPEmbedder`: the time, pooled-text and guidance embedders).
#[derive(Clone)]
pub struct MlpEmbedder<L = Linear> {
    pub in_layer: L,
    pub out_layer: L,
}

/// One stream's attention weights in a double block (BFL `SelfAttention`): fused `qkv`
/// `[3·hidden, hidden]`, the QK RMSNorm scales (`norm.query_norm.scale`, `norm.key_norm.scale`) and
/// the output projection.
#[derive(Clone)]
pub struct SelfAttention<L = Linear, S = Tensor> {
    pub qkv: L,
    pub query_norm: S,
    pub key_norm: S,
    pub proj: L,
}

/// Double-stream block (BFL `DoubleStreamBlock`, src/flux/modules/layers.py @ 802fb47): per stream
/// the modulation (`*_mod.lin`), attention and MLP (`*_mlp.0`, `*_mlp.2`).
#[derive(Clone)]
pub struct DoubleBlock<L = Linear, S = Tensor> {
    pub img_mod: L,
    pub img_attn: SelfAttention<L, S>,
    pub img_mlp_0: L,
    pub img_mlp_2: L,
    pub txt_mod: L,
    pub txt_attn: SelfAttention<L, S>,
    pub txt_mlp_0: L,
    pub txt_mlp_2: L,
}

/// Single-stream block (BFL `SingleStreamBlock`, src/flux/modules/layers.py @ 802fb47): `linear1` is
/// fused `[3·hidden + mlp, hidden]` (q | k | v | mlp); `query_norm`/`key_norm` are its
/// `norm.*_norm.scale`; `modulation` is `modulation.lin`.
#[derive(Clone)]
pub struct SingleBlock<L = Linear, S = Tensor> {
    pub linear1: L,
    pub linear2: L,
    pub query_norm: S,
    pub key_norm: S,
    pub modulation: L,
}

/// Final AdaLN layer (BFL `LastLayer`; diffusers `norm_out` + `proj_out`). `ada_ln_modulation` is
/// `adaLN_modulation.1`; its shift and scale halves stay in checkpoint order (BFL: shift first,
/// diffusers: scale first), recorded as element offsets instead of swapped.
#[derive(Clone)]
pub struct LastLayer<L = Linear> {
    pub ada_ln_modulation: L,
    pub linear: L,
    pub shift_at: usize,
    pub scale_at: usize,
}

/// The whole transformer: `L` is what stands at each Linear, `S` at each norm scale (weights on the
/// GPU for `FluxWeights`, keys for [`FluxTree::keys`]).
#[derive(Clone)]
pub struct FluxTree<L = Linear, S = Tensor> {
    pub img_in: L,
    pub txt_in: L,
    pub time_in: MlpEmbedder<L>,
    pub vector_in: MlpEmbedder<L>,
    /// dev only.
    pub guidance_in: Option<MlpEmbedder<L>>,
    pub double_blocks: Vec<DoubleBlock<L, S>>,
    pub single_blocks: Vec<SingleBlock<L, S>>,
    pub final_layer: LastLayer<L>,
}

/// What stands at each key of the tree.
pub trait Build {
    type Linear;
    type Scale;
    /// `Infallible` for builders that cannot fail (the key tree).
    type Error;
    fn linear(&mut self, key: LinearKey) -> Result<Self::Linear, Self::Error>;
    fn scale(&mut self, key: ScaleKey) -> Result<Self::Scale, Self::Error>;
    /// Whether the final layer's modulation is stored scale first (diffusers) rather than shift
    /// first (BFL).
    fn scale_first(&self) -> bool;
}

/// The key tree's builder: every key as it is.
struct Keys;

impl Build for Keys {
    type Linear = LinearKey;
    type Scale = ScaleKey;
    type Error = Infallible;
    fn linear(&mut self, key: LinearKey) -> Result<LinearKey, Infallible> {
        Ok(key)
    }
    fn scale(&mut self, key: ScaleKey) -> Result<ScaleKey, Infallible> {
        Ok(key)
    }
    fn scale_first(&self) -> bool {
        false
    }
}

/// A Linear stored whole in both schemes.
fn whole(bfl: String, diffusers: String, n: usize, k: usize) -> LinearKey {
    LinearKey { bfl, diffusers: vec![(diffusers, n)], xlabs: Vec::new(), n, k, halves_swapped: false }
}

/// A Linear that diffusers splits into `parts` (name, rows).
fn split(bfl: String, parts: Vec<(String, usize)>, k: usize) -> LinearKey {
    let n = parts.iter().map(|p| p.1).sum();
    LinearKey { bfl, diffusers: parts, xlabs: Vec::new(), n, k, halves_swapped: false }
}

impl LinearKey {
    /// With the XLabs processor `name` on rows `n0 .. n0 + len`.
    fn xlabs(mut self, name: String, n0: usize, len: usize) -> LinearKey {
        self.xlabs.push((name, n0, len));
        self
    }
}

fn embedder<B: Build>(
    b: &mut B,
    bfl: &str,
    diffusers: &str,
    k: usize,
    h: usize,
) -> Result<MlpEmbedder<B::Linear>, B::Error> {
    let d = format!("time_text_embed.{diffusers}");
    Ok(MlpEmbedder {
        in_layer: b.linear(whole(format!("{bfl}.in_layer"), format!("{d}.linear_1"), h, k))?,
        out_layer: b.linear(whole(format!("{bfl}.out_layer"), format!("{d}.linear_2"), h, h))?,
    })
}

fn double<B: Build>(b: &mut B, i: usize, c: &FluxConfig) -> Result<DoubleBlock<B::Linear, B::Scale>, B::Error> {
    let (h, m, hd) = (c.hidden(), c.mlp_hidden, c.head_dim);
    let (p, d) = (format!("{}.{i}.", DOUBLE_BLOCKS.0), format!("{}.{i}.", DOUBLE_BLOCKS.1));
    // One stream: BFL prefix `img`/`txt`; diffusers names of its q/k/v, output projection, QK
    // norms, MLP and modulation; XLabs' processor suffix (1: image, 2: text).
    let mut stream = |s: &str, qkv: [&str; 3], out: &str, norms: [&str; 2], ff: &str, norm1: &str, x: &str| {
        let parts = qkv.iter().map(|q| (format!("{d}attn.{q}"), h)).collect();
        let scale = |bfl: &str, dn: &str| ScaleKey {
            bfl: format!("{p}{s}_attn.norm.{bfl}.scale"),
            diffusers: format!("{d}attn.{dn}.weight"),
            len: hd,
        };
        let attn = SelfAttention {
            qkv: b.linear(split(format!("{p}{s}_attn.qkv"), parts, h).xlabs(
                format!("{p}processor.qkv_lora{x}"),
                0,
                3 * h,
            ))?,
            query_norm: b.scale(scale("query_norm", norms[0]))?,
            key_norm: b.scale(scale("key_norm", norms[1]))?,
            proj: b.linear(whole(format!("{p}{s}_attn.proj"), format!("{d}attn.{out}"), h, h).xlabs(
                format!("{p}processor.proj_lora{x}"),
                0,
                h,
            ))?,
        };
        let modulation = b.linear(whole(format!("{p}{s}_mod.lin"), format!("{d}{norm1}.linear"), 6 * h, h))?;
        let mlp_0 = b.linear(whole(format!("{p}{s}_mlp.0"), format!("{d}{ff}.net.0.proj"), m, h))?;
        let mlp_2 = b.linear(whole(format!("{p}{s}_mlp.2"), format!("{d}{ff}.net.2"), h, m))?;
        Ok::<_, B::Error>((modulation, attn, mlp_0, mlp_2))
    };
    let (img_mod, img_attn, img_mlp_0, img_mlp_2) =
        stream("img", ["to_q", "to_k", "to_v"], "to_out.0", ["norm_q", "norm_k"], "ff", "norm1", "1")?;
    let (txt_mod, txt_attn, txt_mlp_0, txt_mlp_2) = stream(
        "txt",
        ["add_q_proj", "add_k_proj", "add_v_proj"],
        "to_add_out",
        ["norm_added_q", "norm_added_k"],
        "ff_context",
        "norm1_context",
        "2",
    )?;
    Ok(DoubleBlock { img_mod, img_attn, img_mlp_0, img_mlp_2, txt_mod, txt_attn, txt_mlp_0, txt_mlp_2 })
}

fn single<B: Build>(b: &mut B, i: usize, c: &FluxConfig) -> Result<SingleBlock<B::Linear, B::Scale>, B::Error> {
    let (h, m, hd) = (c.hidden(), c.mlp_hidden, c.head_dim);
    let (p, d) = (format!("{}.{i}.", SINGLE_BLOCKS.0), format!("{}.{i}.", SINGLE_BLOCKS.1));
    let parts = vec![
        (format!("{d}attn.to_q"), h),
        (format!("{d}attn.to_k"), h),
        (format!("{d}attn.to_v"), h),
        (format!("{d}proj_mlp"), m),
    ];
    let scale = |bfl: &str, dn: &str| ScaleKey {
        bfl: format!("{p}norm.{bfl}.scale"),
        diffusers: format!("{d}attn.{dn}.weight"),
        len: hd,
    };
    Ok(SingleBlock {
        // XLabs' single-block qkv LoRA covers q | k | v of linear1, not its MLP rows.
        linear1: b.linear(split(format!("{p}linear1"), parts, h).xlabs(format!("{p}processor.qkv_lora"), 0, 3 * h))?,
        linear2: b.linear(whole(format!("{p}linear2"), format!("{d}proj_out"), h, h + m).xlabs(
            format!("{p}processor.proj_lora"),
            0,
            h,
        ))?,
        query_norm: b.scale(scale("query_norm", "norm_q"))?,
        key_norm: b.scale(scale("key_norm", "norm_k"))?,
        modulation: b.linear(whole(format!("{p}modulation.lin"), format!("{d}norm.linear"), 3 * h, h))?,
    })
}

impl<L, S> DoubleBlock<L, S> {
    /// The block's Linears: per stream (image, then text) the attention's `qkv` and `proj`, the
    /// MLP's two layers, then the modulation.
    pub fn linears_mut(&mut self) -> [&mut L; 10] {
        let (i, t) = (&mut self.img_attn, &mut self.txt_attn);
        [
            &mut i.qkv,
            &mut i.proj,
            &mut self.img_mlp_0,
            &mut self.img_mlp_2,
            &mut self.img_mod,
            &mut t.qkv,
            &mut t.proj,
            &mut self.txt_mlp_0,
            &mut self.txt_mlp_2,
            &mut self.txt_mod,
        ]
    }
}

impl<L, S> SingleBlock<L, S> {
    /// The block's Linears: `linear1`, `linear2`, then the modulation.
    pub fn linears_mut(&mut self) -> [&mut L; 3] {
        [&mut self.linear1, &mut self.linear2, &mut self.modulation]
    }
}

impl<L, S> FluxTree<L, S> {
    /// The tree of config `c` with what `b` makes of each key, in the order the forward pass uses
    /// them (a loader streams the file in this order).
    pub fn build<B: Build<Linear = L, Scale = S>>(c: &FluxConfig, b: &mut B) -> Result<FluxTree<L, S>, B::Error> {
        let h = c.hidden();
        let time_in = embedder(b, "time_in", "timestep_embedder", TIME_DIM, h)?;
        let guidance_in =
            if c.guidance { Some(embedder(b, "guidance_in", "guidance_embedder", TIME_DIM, h)?) } else { None };
        let vector_in = embedder(b, "vector_in", "text_embedder", c.pooled_dim, h)?;
        let img_in = b.linear(whole("img_in".into(), "x_embedder".into(), h, c.in_channels))?;
        let txt_in = b.linear(whole("txt_in".into(), "context_embedder".into(), h, c.context_dim))?;
        let double_blocks = (0..c.double_blocks).map(|i| double(b, i, c)).collect::<Result<_, _>>()?;
        let single_blocks = (0..c.single_blocks).map(|i| single(b, i, c)).collect::<Result<_, _>>()?;
        let modulation =
            LinearKey { halves_swapped: true, ..whole(FINAL_MODULATION.0.into(), FINAL_MODULATION.1.into(), 2 * h, h) };
        let scale_first = b.scale_first();
        let final_layer = LastLayer {
            ada_ln_modulation: b.linear(modulation)?,
            linear: b.linear(whole("final_layer.linear".into(), "proj_out".into(), c.out_channels, h))?,
            shift_at: if scale_first { h } else { 0 },
            scale_at: if scale_first { 0 } else { h },
        };
        Ok(FluxTree { img_in, txt_in, time_in, vector_in, guidance_in, double_blocks, single_blocks, final_layer })
    }

    /// Every Linear, in the order of [`build`](Self::build).
    pub fn linears_mut(&mut self) -> Vec<&mut L> {
        let mut v = Vec::new();
        for e in [Some(&mut self.time_in), self.guidance_in.as_mut(), Some(&mut self.vector_in)].into_iter().flatten() {
            v.extend([&mut e.in_layer, &mut e.out_layer]);
        }
        v.extend([&mut self.img_in, &mut self.txt_in]);
        v.extend(self.double_blocks.iter_mut().flat_map(DoubleBlock::linears_mut));
        v.extend(self.single_blocks.iter_mut().flat_map(SingleBlock::linears_mut));
        v.extend([&mut self.final_layer.ada_ln_modulation, &mut self.final_layer.linear]);
        v
    }
}

impl FluxTree<LinearKey, ScaleKey> {
    /// The keys of a dev model with one block of each kind: every key name a checkpoint can hold,
    /// for block 0 (shapes are placeholders). Config inference and scheme detection read it.
    pub fn probe() -> FluxTree<LinearKey, ScaleKey> {
        FluxTree::keys(&FluxConfig { guidance: true, double_blocks: 1, single_blocks: 1, ..FluxConfig::flux1_dev() })
    }

    /// The key tree of config `c`.
    pub fn keys(c: &FluxConfig) -> FluxTree<LinearKey, ScaleKey> {
        match FluxTree::build(c, &mut Keys) {
            Ok(t) => t,
            Err(never) => match never {},
        }
    }

    /// Every Linear's key, in the order of [`linears_mut`](Self::linears_mut).
    pub fn linear_keys(mut self) -> Vec<LinearKey> {
        self.linears_mut().into_iter().map(|k| k.clone()).collect()
    }
}
