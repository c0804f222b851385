#!/usr/bin/env python3
"""Golden fixtures for LoRA adapters (src/lora/; the formats diffusers' `FluxLoraLoaderMixin` loads,
src/diffusers/loaders/lora_pipeline.py @ 58eb52c) on the dev-like tiny
FLUX transformer of make_flux_fixtures.py (its committed weights and inputs are reused as is).

Two random adapters (non-zero lora_B) are attached with peft `LoraConfig` +
`transformer.add_adapter` and run with `set_adapters(weights=...)`:

  A: rank 4, lora_alpha 8, on every Linear of the blocks (attention q/k/v/out of both streams,
     feed-forwards, modulations, single-block q/k/v/proj_mlp/proj_out/norm.linear) and the
     final layer (norm_out.linear, proj_out).
  B: rank 2, lora_alpha 3, on attention q/v/out, single-block proj_mlp and proj_out.

Writes under tests/fixtures/golden/ (LoRA values rounded to F16 and stored as F16; the
reference runs with exactly those values):

  lora_a_diffusers.safetensors  A, diffusers/PEFT names `transformer.<module>.lora_A/B.weight`,
                                alpha in `__metadata__["lora_adapter_metadata"]` (JSON)
  lora_a_kohya.safetensors      A converted to kohya names (`lora_unet_<bfl path>`), fused
                                qkv / linear1 as split-qkv forms (down = stacked A's, rank 3r / 4r,
                                up = block-diagonal B's, alpha scaled to keep alpha/r)
  lora_a_bfl.safetensors        A in BFL-native names with PEFT suffixes, `diffusion_model.`
                                prefix, per-module `.alpha` keys, same fused forms
  lora_b_peft.safetensors       B, raw PEFT names (`base_model.model.<module>...`) with
                                per-module `.alpha` keys
  lora_io.safetensors           out/a1.0, out/a0.6, out/b1.0, out/a1.0_b0.6: final outputs
                                [L_img, 64] for the inputs of flux_dev.io.safetensors

Not run by the test command. See tools/golden/README.md.
"""
import json
import os

import torch
from safetensors.torch import load_file, save_file

import diffusers
import peft
from diffusers import FluxTransformer2DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "golden")

TARGETS_A = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
             "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
             "ff_context.net.2", "norm1.linear", "norm1_context.linear", "proj_mlp", "proj_out", "norm.linear",
             "norm_out.linear"]
TARGETS_B = ["attn.to_q", "attn.to_v", "attn.to_out.0", "proj_mlp", "proj_out"]


def load_base():
    with open(os.path.join(OUT, "flux_dev.config.json")) as f:
        cfg = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    model = FluxTransformer2DModel(**cfg).to(torch.float32).eval()
    sd = {k: v.to(torch.float32) for k, v in load_file(os.path.join(OUT, "flux_dev.safetensors")).items()}
    model.load_state_dict(sd, strict=True)
    return model


def add_random_adapter(model, name, r, alpha, targets, seed):
    model.add_adapter(LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, init_lora_weights=False), adapter_name=name)
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for pname, p in sorted(model.named_parameters()):
            if f".{name}." in pname and ("lora_A" in pname or "lora_B" in pname):
                std = 0.2 if "lora_A" in pname else 0.1
                p.copy_((std * torch.randn(p.shape, generator=g)).to(torch.float16).to(torch.float32))
    return {k: v.detach().to(torch.float16).contiguous() for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}


def fused_parts(sd, module, parts):
    """Stacked A's and block-diagonal B of `parts` (diffusers names under `module`); None when the
    adapter has none of them."""
    parts = [p for p in parts if f"{module}{p}.lora_A.weight" in sd]
    if not parts:
        return None
    a = [sd[f"{module}{p}.lora_A.weight"].float() for p in parts]
    b = [sd[f"{module}{p}.lora_B.weight"].float() for p in parts]
    return torch.cat(a, 0).half(), torch.block_diag(*b).half(), len(parts)


def to_bfl_modules(sd, n_double, n_single):
    """diffusers module LoRAs → {bfl module: (down, up, rank multiplier)} (the q/k/v row
    slices of diffusers' `_convert_kohya_flux_lora_to_diffusers`,
    src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c);
    modules the adapter does not have are left out. A fused form of only some parts (e.g. q and v)
    stacks just those: its rows then do not line up with the fused weight, so every adapter converted
    here must have all parts of a fused weight or none."""
    out = {}
    one = lambda m: (sd[f"{m}.lora_A.weight"], sd[f"{m}.lora_B.weight"], 1) if f"{m}.lora_A.weight" in sd else None
    for i in range(n_double):
        d, b = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        out[b + "img_attn.qkv"] = fused_parts(sd, d + "attn.", ["to_q", "to_k", "to_v"])
        out[b + "txt_attn.qkv"] = fused_parts(sd, d + "attn.", ["add_q_proj", "add_k_proj", "add_v_proj"])
        for bfl, dif in (("img_attn.proj", "attn.to_out.0"), ("txt_attn.proj", "attn.to_add_out"), ("img_mlp.0", "ff.net.0.proj"),
                         ("img_mlp.2", "ff.net.2"), ("txt_mlp.0", "ff_context.net.0.proj"), ("txt_mlp.2", "ff_context.net.2"),
                         ("img_mod.lin", "norm1.linear"), ("txt_mod.lin", "norm1_context.linear")):
            out[b + bfl] = one(d + dif)
    for i in range(n_single):
        d, b = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        out[b + "linear1"] = fused_parts(sd, d, ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"])
        out[b + "linear2"] = one(d + "proj_out")
        out[b + "modulation.lin"] = one(d + "norm.linear")
    if one("norm_out.linear") is not None:
        down, up, _ = one("norm_out.linear")
        half = up.shape[0] // 2
        out["final_layer.adaLN_modulation.1"] = (down, torch.cat([up[half:], up[:half]], 0).contiguous(), 1)
    out["final_layer.linear"] = one("proj_out")
    return {k: v for k, v in out.items() if v is not None}


def kohya_and_native(sd, alpha, n_double, n_single):
    """A diffusers-named adapter (`sd`, lora_alpha `alpha`) as kohya (`lora_unet_<bfl path>`) and
    BFL-native (`diffusion_model.<bfl path>`, PEFT suffixes) state dicts with per-module `.alpha`;
    alpha scales with the stacked rank of fused forms so that alpha/r is unchanged."""
    kohya, native = {}, {}
    for mod, (down, up, mult) in to_bfl_modules(sd, n_double, n_single).items():
        a = torch.tensor(float(alpha) * mult, dtype=torch.float16)
        k = "lora_unet_" + mod.replace(".", "_")
        kohya.update({f"{k}.lora_down.weight": down.contiguous(), f"{k}.lora_up.weight": up.contiguous(), f"{k}.alpha": a})
        n = "diffusion_model." + mod
        native.update({f"{n}.lora_A.weight": down.contiguous(), f"{n}.lora_B.weight": up.contiguous(), f"{n}.alpha": a})
    return kohya, native


def main():
    torch.manual_seed(0)
    model = load_base()
    io = load_file(os.path.join(OUT, "flux_dev.io.safetensors"))
    cfg = model.config
    inputs = dict(hidden_states=io["in/hidden_states"][None], encoder_hidden_states=io["in/encoder_hidden_states"][None],
                  pooled_projections=io["in/pooled"][None], timestep=io["in/timestep"], img_ids=io["in/img_ids"],
                  txt_ids=io["in/txt_ids"], guidance=io["in/guidance"], return_dict=False)
    sd_a = add_random_adapter(model, "a", 4, 8, TARGETS_A, 11)
    sd_b = add_random_adapter(model, "b", 2, 3, TARGETS_B, 12)
    rec = {}
    with torch.no_grad():
        for key, names, weights in (("a1.0", ["a"], [1.0]), ("a0.6", ["a"], [0.6]), ("b1.0", ["b"], [1.0]),
                                    ("a1.0_b0.6", ["a", "b"], [1.0, 0.6])):
            model.set_adapters(names, weights=weights)
            rec[f"out/{key}"] = model(**inputs)[0][0].contiguous()
        model.disable_adapters()
        base = model(**inputs)[0][0]
    assert torch.allclose(base, io["out/final"], rtol=1e-5, atol=1e-5), "base output differs from flux_dev.io"
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "peft": peft.__version__}

    # A in diffusers format, alpha in the adapter metadata (what FluxPipeline.save_lora_weights writes).
    ad_meta = json.dumps({"r": 4, "lora_alpha": 8, "target_modules": TARGETS_A})
    save_file({f"transformer.{k}": v for k, v in sd_a.items()}, os.path.join(OUT, "lora_a_diffusers.safetensors"),
              metadata={**meta, "lora_adapter_metadata": ad_meta})
    # The same adapter in kohya and BFL-native names; alpha scales with the stacked rank.
    kohya, native = kohya_and_native(sd_a, 8, cfg.num_layers, cfg.num_single_layers)
    save_file(kohya, os.path.join(OUT, "lora_a_kohya.safetensors"), metadata=meta)
    save_file(native, os.path.join(OUT, "lora_a_bfl.safetensors"), metadata=meta)
    # B as raw PEFT names with per-module alpha keys.
    peft_b = {f"base_model.model.{k}": v for k, v in sd_b.items()}
    for k in sd_b:
        if k.endswith(".lora_A.weight"):
            peft_b[f"base_model.model.{k[:-len('.lora_A.weight')]}.alpha"] = torch.tensor(3.0, dtype=torch.float16)
    save_file(peft_b, os.path.join(OUT, "lora_b_peft.safetensors"), metadata=meta)
    save_file({k: v.float().contiguous() for k, v in rec.items()}, os.path.join(OUT, "lora_io.safetensors"), metadata=meta)
    print({k: (tuple(v.shape), float(v.abs().max()), float((v - base).abs().max())) for k, v in rec.items()})


if __name__ == "__main__":
    main()
