//! Where a LoRA module lands in our weights: every Linear of the FLUX transformer under its BFL
//! name (our fused layout), and the diffusers / kohya / XLabs names that map onto it with a row
//! slice (diffusers `convert_flux_transformer_checkpoint_to_diffusers`,
//! src/diffusers/loaders/single_file_utils.py @ 58eb52c; the LoRA converters of
//! src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c).

use std::collections::HashMap;

use crate::model::flux::FluxConfig;

/// One weight a LoRA module can target: rows `n0 .. n0 + len` of the fused BFL Linear `bfl`
/// (`[n, k]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub bfl: String,
    pub n0: usize,
    pub len: usize,
    pub k: usize,
    /// The module's rows are in diffusers' final-layer order (scale | shift), i.e. the halves of
    /// BFL's `final_layer.adaLN_modulation.1` (shift | scale) swapped (diffusers `swap_scale_shift`,
    /// src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c).
    pub diffusers_halves: bool,
}

/// Every BFL Linear of `c` with its shape `[n, k]`, in forward order.
pub fn bfl_linears(c: &FluxConfig) -> Vec<(String, usize, usize)> {
    let (h, m) = (c.hidden(), c.mlp_hidden);
    let mut v = vec![("img_in".to_string(), h, c.in_channels), ("txt_in".into(), h, c.context_dim)];
    for (name, k) in [("time_in", 256), ("vector_in", c.pooled_dim), ("guidance_in", 256)] {
        if name == "guidance_in" && !c.guidance {
            continue;
        }
        v.push((format!("{name}.in_layer"), h, k));
        v.push((format!("{name}.out_layer"), h, h));
    }
    for i in 0..c.double_blocks {
        for s in ["img", "txt"] {
            let b = format!("double_blocks.{i}.{s}");
            v.push((format!("{b}_mod.lin"), 6 * h, h));
            v.push((format!("{b}_attn.qkv"), 3 * h, h));
            v.push((format!("{b}_attn.proj"), h, h));
            v.push((format!("{b}_mlp.0"), m, h));
            v.push((format!("{b}_mlp.2"), h, m));
        }
    }
    for i in 0..c.single_blocks {
        let b = format!("single_blocks.{i}");
        v.push((format!("{b}.modulation.lin"), 3 * h, h));
        v.push((format!("{b}.linear1"), 3 * h + m, h));
        v.push((format!("{b}.linear2"), h, h + m));
    }
    v.push(("final_layer.adaLN_modulation.1".into(), 2 * h, h));
    v.push(("final_layer.linear".into(), c.out_channels, h));
    v
}

/// Name tables for one config: module name (without prefix or suffix) → target.
pub struct Targets {
    /// BFL names (BFL-native LoRAs, and kohya after `_` → `.`).
    pub bfl: HashMap<String, Target>,
    /// kohya `lora_unet_` names (BFL path with `.` → `_`).
    pub kohya: HashMap<String, Target>,
    /// diffusers module names (diffusers/PEFT LoRAs), and their `_` forms (kohya "mixture"
    /// `lora_transformer_` keys).
    pub diffusers: HashMap<String, Target>,
    pub diffusers_underscored: HashMap<String, Target>,
    /// XLabs processor names (`double_blocks.0.processor.qkv_lora1`).
    pub xlabs: HashMap<String, Target>,
}

impl Targets {
    pub fn new(c: &FluxConfig) -> Targets {
        let (h, m) = (c.hidden(), c.mlp_hidden);
        let shapes: HashMap<String, (usize, usize)> =
            bfl_linears(c).into_iter().map(|(n, rows, k)| (n, (rows, k))).collect();
        let whole = |bfl: &str| {
            let (n, k) = shapes.get(bfl).copied().unwrap_or((0, 0));
            Target { bfl: bfl.into(), n0: 0, len: n, k, diffusers_halves: false }
        };
        let part = |bfl: &str, n0: usize, len: usize| Target { n0, len, ..whole(bfl) };
        let bfl: HashMap<String, Target> = shapes.keys().map(|n| (n.clone(), whole(n))).collect();
        let kohya = bfl.iter().map(|(n, t)| (n.replace('.', "_"), t.clone())).collect();

        let mut d: Vec<(String, Target)> = vec![
            ("x_embedder".into(), whole("img_in")),
            ("context_embedder".into(), whole("txt_in")),
            ("proj_out".into(), whole("final_layer.linear")),
            ("norm_out.linear".into(), Target { diffusers_halves: true, ..whole("final_layer.adaLN_modulation.1") }),
        ];
        let tte = "time_text_embed.";
        for (dn, bn) in
            [("timestep_embedder", "time_in"), ("text_embedder", "vector_in"), ("guidance_embedder", "guidance_in")]
        {
            if bn == "guidance_in" && !c.guidance {
                continue;
            }
            d.push((format!("{tte}{dn}.linear_1"), whole(&format!("{bn}.in_layer"))));
            d.push((format!("{tte}{dn}.linear_2"), whole(&format!("{bn}.out_layer"))));
        }
        let mut x: Vec<(String, Target)> = Vec::new();
        for i in 0..c.double_blocks {
            let (p, b) = (format!("transformer_blocks.{i}."), format!("double_blocks.{i}."));
            let (iq, tq) = (format!("{b}img_attn.qkv"), format!("{b}txt_attn.qkv"));
            for (j, s) in ["q", "k", "v"].iter().enumerate() {
                d.push((format!("{p}attn.to_{s}"), part(&iq, j * h, h)));
                d.push((format!("{p}attn.add_{s}_proj"), part(&tq, j * h, h)));
            }
            for (dn, bn) in [
                ("attn.to_out.0", "img_attn.proj"),
                ("attn.to_add_out", "txt_attn.proj"),
                ("ff.net.0.proj", "img_mlp.0"),
                ("ff.net.2", "img_mlp.2"),
                ("ff_context.net.0.proj", "txt_mlp.0"),
                ("ff_context.net.2", "txt_mlp.2"),
                ("norm1.linear", "img_mod.lin"),
                ("norm1_context.linear", "txt_mod.lin"),
            ] {
                d.push((format!("{p}{dn}"), whole(&format!("{b}{bn}"))));
            }
            let xp = format!("{b}processor.");
            x.push((format!("{xp}qkv_lora1"), whole(&iq)));
            x.push((format!("{xp}qkv_lora2"), whole(&tq)));
            x.push((format!("{xp}proj_lora1"), whole(&format!("{b}img_attn.proj"))));
            x.push((format!("{xp}proj_lora2"), whole(&format!("{b}txt_attn.proj"))));
        }
        for i in 0..c.single_blocks {
            let (p, b) = (format!("single_transformer_blocks.{i}."), format!("single_blocks.{i}."));
            let l1 = format!("{b}linear1");
            for (j, s) in ["q", "k", "v"].iter().enumerate() {
                d.push((format!("{p}attn.to_{s}"), part(&l1, j * h, h)));
            }
            d.push((format!("{p}proj_mlp"), part(&l1, 3 * h, m)));
            d.push((format!("{p}proj_out"), whole(&format!("{b}linear2"))));
            d.push((format!("{p}norm.linear"), whole(&format!("{b}modulation.lin"))));
            // XLabs' single-block qkv LoRA covers q | k | v of linear1, not its MLP rows.
            x.push((format!("{b}processor.qkv_lora"), part(&l1, 0, 3 * h)));
            x.push((format!("{b}processor.proj_lora"), whole(&format!("{b}linear2"))));
        }
        let diffusers_underscored = d.iter().map(|(n, t)| (n.replace('.', "_"), t.clone())).collect();
        Targets {
            bfl,
            kohya,
            diffusers: d.into_iter().collect(),
            diffusers_underscored,
            xlabs: x.into_iter().collect(),
        }
    }
}
