#!/usr/bin/env python3
"""Golden fixtures for the FLUX transformer (src/model/flux/): tiny random-weight
`FluxTransformer2DModel`s run by diffusers in float32 on the CPU, with the output
of every block recorded by forward hooks.

Writes, for each config NAME in CONFIGS, under tests/fixtures/golden/:

  flux_{NAME}.config.json         the diffusers config (FluxTransformer2DModel.config)
  flux_{NAME}.safetensors         the weights, diffusers names. 2-D weights are stored as
                                  F8_E4M3 (to keep the fixtures a few MB) and the model runs
                                  with exactly those values widened to float32; biases and
                                  norm scales are float32.
  flux_{NAME}.io.safetensors      float32 inputs and recorded outputs:
     in/hidden_states [L_img, 64]   in/encoder_hidden_states [L_txt, joint]   in/pooled [pooled]
     in/timestep [1] (what FluxPipeline passes: t/1000 = sigma)   in/guidance [1] (dev only)
     in/img_ids [L_img, 3]   in/txt_ids [L_txt, 3]   (exactly as FluxPipeline builds them)
     out/temb [hidden]
     out/double{i}/txt [L_txt, hidden], out/double{i}/img [L_img, hidden]
     out/single{i} [L_txt + L_img, hidden]   (text tokens first)
     out/final [L_img, in_channels]
  flux_{NAME}_bfl.safetensors     (if --bfl) the same weights under BFL-native names
                                  (fused qkv / linear1, final-layer halves swapped back)

Not run by the test command. See tools/golden/README.md.
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

import diffusers
from diffusers import FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "golden")

CONFIGS = {
    # dev-like: FLUX.1's head dim and RoPE axes, 2 heads, guidance embedding.
    "dev": dict(
        config=dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=128,
                    num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32,
                    guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
        seed=1, size=(64, 48), txt_len=7, sigma=0.7, guidance=3.5),
    # schnell-like and odd: head dim 64, 3 heads, no guidance embedding, non-square canvas.
    "odd": dict(
        config=dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=3, attention_head_dim=64,
                    num_attention_heads=3, joint_attention_dim=48, pooled_projection_dim=24,
                    guidance_embeds=False, axes_dims_rope=(8, 28, 28)),
        seed=2, size=(48, 80), txt_len=7, sigma=0.7, guidance=None),
}


def is_norm_scale(name):
    return ".norm_q." in name or ".norm_k." in name or ".norm_added_q." in name or ".norm_added_k." in name


def randomize(model, seed):
    """Every parameter nonzero and seeded: weights N(0, min(0.1, 1/sqrt(fan_in))) rounded to
    F8_E4M3, biases N(0, 0.05), QK-norm scales 1 + N(0, 0.1)."""
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if is_norm_scale(name):
                p.copy_(1.0 + 0.1 * r)
            elif p.ndim == 1:
                p.copy_(0.05 * r)
            else:
                std = min(0.1, max(0.02, 1.0 / math.sqrt(p.shape[1])))
                p.copy_((std * r).to(torch.float8_e4m3fn).to(torch.float32))


def weights_to_save(model):
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().contiguous()
        sd[k] = v.to(torch.float8_e4m3fn) if v.ndim == 2 else v.clone()
    return sd


def to_bfl(sd, n_double, n_single):
    """diffusers → BFL-native names (the inverse of diffusers'
    `convert_flux_transformer_checkpoint_to_diffusers`, src/diffusers/loaders/single_file_utils.py @ 58eb52c)."""
    out = {}
    cat = lambda names: torch.cat([sd[n] for n in names], dim=0)
    for s in ("weight", "bias"):
        out[f"img_in.{s}"] = sd[f"x_embedder.{s}"]
        out[f"txt_in.{s}"] = sd[f"context_embedder.{s}"]
        for bfl, dif in (("time_in", "timestep_embedder"), ("vector_in", "text_embedder"), ("guidance_in", "guidance_embedder")):
            for bl, dl in (("in_layer", "linear_1"), ("out_layer", "linear_2")):
                key = f"time_text_embed.{dif}.{dl}.{s}"
                if key in sd:
                    out[f"{bfl}.{bl}.{s}"] = sd[key]
        w = sd[f"norm_out.linear.{s}"]
        half = w.shape[0] // 2
        out[f"final_layer.adaLN_modulation.1.{s}"] = torch.cat([w[half:], w[:half]], dim=0)
        out[f"final_layer.linear.{s}"] = sd[f"proj_out.{s}"]
        for i in range(n_double):
            d, b = f"transformer_blocks.{i}.", f"double_blocks.{i}."
            out[f"{b}img_mod.lin.{s}"] = sd[f"{d}norm1.linear.{s}"]
            out[f"{b}txt_mod.lin.{s}"] = sd[f"{d}norm1_context.linear.{s}"]
            out[f"{b}img_attn.qkv.{s}"] = cat([f"{d}attn.to_{x}.{s}" for x in "qkv"])
            out[f"{b}txt_attn.qkv.{s}"] = cat([f"{d}attn.add_{x}_proj.{s}" for x in "qkv"])
            out[f"{b}img_attn.proj.{s}"] = sd[f"{d}attn.to_out.0.{s}"]
            out[f"{b}txt_attn.proj.{s}"] = sd[f"{d}attn.to_add_out.{s}"]
            out[f"{b}img_mlp.0.{s}"] = sd[f"{d}ff.net.0.proj.{s}"]
            out[f"{b}img_mlp.2.{s}"] = sd[f"{d}ff.net.2.{s}"]
            out[f"{b}txt_mlp.0.{s}"] = sd[f"{d}ff_context.net.0.proj.{s}"]
            out[f"{b}txt_mlp.2.{s}"] = sd[f"{d}ff_context.net.2.{s}"]
        for i in range(n_single):
            d, b = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
            out[f"{b}modulation.lin.{s}"] = sd[f"{d}norm.linear.{s}"]
            out[f"{b}linear1.{s}"] = cat([f"{d}attn.to_{x}.{s}" for x in "qkv"] + [f"{d}proj_mlp.{s}"])
            out[f"{b}linear2.{s}"] = sd[f"{d}proj_out.{s}"]
    for i in range(n_double):
        d, b = f"transformer_blocks.{i}.attn.", f"double_blocks.{i}."
        out[f"{b}img_attn.norm.query_norm.scale"] = sd[f"{d}norm_q.weight"]
        out[f"{b}img_attn.norm.key_norm.scale"] = sd[f"{d}norm_k.weight"]
        out[f"{b}txt_attn.norm.query_norm.scale"] = sd[f"{d}norm_added_q.weight"]
        out[f"{b}txt_attn.norm.key_norm.scale"] = sd[f"{d}norm_added_k.weight"]
    for i in range(n_single):
        d, b = f"single_transformer_blocks.{i}.attn.", f"single_blocks.{i}."
        out[f"{b}norm.query_norm.scale"] = sd[f"{d}norm_q.weight"]
        out[f"{b}norm.key_norm.scale"] = sd[f"{d}norm_k.weight"]
    assert sum(v.numel() for v in out.values()) == sum(v.numel() for v in sd.values())
    return {k: v.contiguous() for k, v in out.items()}


def make(name, spec, bfl):
    torch.manual_seed(spec["seed"])
    model = FluxTransformer2DModel(**spec["config"]).to(torch.float32).eval()
    randomize(model, spec["seed"])
    cfg = model.config
    g = torch.Generator("cpu").manual_seed(100 + spec["seed"])
    h_px, w_px = spec["size"]
    rows, cols = h_px // 16, w_px // 16  # packed grid: latent (H/8, W/8) in 2x2 patches
    l_img, l_txt = rows * cols, spec["txt_len"]
    hidden = torch.randn(1, l_img, cfg.in_channels, generator=g)
    txt = torch.randn(1, l_txt, cfg.joint_attention_dim, generator=g)
    pooled = torch.randn(1, cfg.pooled_projection_dim, generator=g)
    # FluxPipeline: timestep = sigma * 1000 (scheduler), passed as timestep / 1000;
    # guidance = torch.full([1], guidance_scale); ids as built by the pipeline.
    timestep = (torch.tensor([spec["sigma"]], dtype=torch.float32) * 1000) / 1000
    guidance = torch.full([1], spec["guidance"], dtype=torch.float32) if cfg.guidance_embeds else None
    img_ids = FluxPipeline._prepare_latent_image_ids(1, rows, cols, "cpu", torch.float32)
    txt_ids = torch.zeros(l_txt, 3, dtype=torch.float32)

    rec = {}
    hooks = [model.time_text_embed.register_forward_hook(lambda m, i, o: rec.__setitem__("out/temb", o[0]))]
    for i, blk in enumerate(model.transformer_blocks):
        def hook(m, inp, o, i=i):
            rec[f"out/double{i}/txt"], rec[f"out/double{i}/img"] = o[0][0], o[1][0]
        hooks.append(blk.register_forward_hook(hook))
    for i, blk in enumerate(model.single_transformer_blocks):
        def hook(m, inp, o, i=i):
            rec[f"out/single{i}"] = torch.cat([o[0][0], o[1][0]], dim=0)
        hooks.append(blk.register_forward_hook(hook))
    with torch.no_grad():
        out = model(hidden_states=hidden, encoder_hidden_states=txt, pooled_projections=pooled,
                    timestep=timestep, img_ids=img_ids, txt_ids=txt_ids, guidance=guidance,
                    return_dict=False)[0]
    for h in hooks:
        h.remove()
    rec["out/final"] = out[0]
    io = {"in/hidden_states": hidden[0], "in/encoder_hidden_states": txt[0], "in/pooled": pooled[0],
          "in/timestep": timestep, "in/img_ids": img_ids, "in/txt_ids": txt_ids}
    if guidance is not None:
        io["in/guidance"] = guidance
    io.update(rec)
    io = {k: v.detach().to(torch.float32).contiguous() for k, v in io.items()}
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__}
    base = os.path.join(OUT, f"flux_{name}")
    sd = weights_to_save(model)
    save_file(sd, base + ".safetensors", metadata=meta)
    save_file(io, base + ".io.safetensors", metadata=meta)
    with open(base + ".config.json", "w") as f:
        json.dump(dict(cfg), f, indent=1, default=list)
    if bfl:
        save_file(to_bfl(sd, cfg.num_layers, cfg.num_single_layers), base + "_bfl.safetensors", metadata=meta)
    print(name, {k: tuple(v.shape) for k, v in io.items() if k.startswith("out/")})


if __name__ == "__main__":
    for name, spec in CONFIGS.items():
        make(name, spec, bfl=(name == "odd"))
