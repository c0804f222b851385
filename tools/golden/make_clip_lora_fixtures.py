#!/usr/bin/env python3
"""Golden fixtures for LoRA on the CLIP text encoder (src/lora/clip.rs; kohya `lora_te1_…` keys as
diffusers' `_convert_kohya_flux_lora_to_diffusers` reads them,
src/diffusers/loaders/lora_conversion_utils.py @ 58eb52c) on the
tiny `CLIPTextModel` of make_text_fixtures.py (its committed weights, config and token ids are
reused as is).

One random adapter (rank 4, lora_alpha 8, non-zero lora_B) is attached with peft `LoraConfig` +
`inject_adapter_in_model` (transformers 5.24's `add_adapter` wants peft >= 0.22; the pinned peft is 0.21) on every Linear of the encoder layers (self_attn q/k/v/out_proj, mlp fc1/fc2) and run
at strength 1.0 and 0.6 (`LoraLayer.set_scale`).

Writes under tests/fixtures/golden/ (LoRA values rounded to F16 and stored as F16; the reference
runs with exactly those values):

  clip_lora_diffusers.safetensors  diffusers/PEFT names as `FluxLoraLoaderMixin.save_lora_weights`
                                   writes them (`text_encoder.text_model.encoder.layers.{i}.self_attn.q_proj.lora_A.weight`,
                                   the transformers-4 / FLUX `text_model.` layout), alpha in
                                   `__metadata__["lora_adapter_metadata"]` (`text_encoder.lora_alpha`)
  clip_lora_kohya.safetensors      the same in kohya names (`lora_te1_text_model_encoder_layers_{i}_self_attn_q_proj`
                                   `.lora_down.weight` / `.lora_up.weight` / `.alpha`)
  (both files are checked here to give the same outputs through diffusers' own LoRA loader,
  `FluxLoraLoaderMixin.lora_state_dict` + `load_lora_into_text_encoder`)
  clip_lora_io.safetensors         out/{s}/{p} [77, 64] last_hidden_state and pooled/{s}/{p} [64] for
                                   s in {1.0, 0.6}, p in {0, 1} (the ids clip/ids/{p} of text_io.safetensors)

Not run by the test command. See tools/golden/README.md.
"""
import json
import os
import tempfile

import peft
import torch
import transformers
from diffusers.loaders.lora_pipeline import FluxLoraLoaderMixin
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "golden")
TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
RANK, ALPHA = 4, 8
PROMPTS = [0, 1]
SCALES = ["1.0", "0.6"]


def base():
    cfg = CLIPTextConfig.from_json_file(os.path.join(OUT, "clip_text.config.json"))
    model = CLIPTextModel(cfg).eval()
    sd = load_file(os.path.join(OUT, "clip_text.safetensors"))
    # The fixture has FLUX's `text_model.` prefix; transformers 5's CLIPTextModel has none.
    own = model.state_dict().keys()
    sd = {(k if k in own else k.removeprefix("text_model.")): v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True)
    return model


def with_lora(model, seed):
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False), model)
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "lora_A" in name or "lora_B" in name:
                std = 0.3 if "lora_A" in name else 0.2
                p.copy_((std * torch.randn(p.shape, generator=g)).to(torch.float16).to(torch.float32))
    return model


def set_strength(model, s):
    for m in model.modules():
        if isinstance(m, LoraLayer):
            m.set_scale("default", s)


def outputs(model, ids, tag, io):
    for p in PROMPTS:
        with torch.no_grad():
            o = model(input_ids=ids[p][None])
        io[f"out/{tag}/{p}"] = o.last_hidden_state[0].contiguous()
        io[f"pooled/{tag}/{p}"] = o.pooler_output[0].contiguous()


def kohya(sd):
    """PEFT names (`text_model.encoder.layers.{i}.<path>.lora_A.weight`) → kohya `lora_te1_` names."""
    out = {}
    for k, v in sd.items():
        module, suffix = k.rsplit(".lora_", 1)
        name = "lora_te1_" + module.replace(".", "_")
        out[f"{name}.lora_down.weight" if suffix.startswith("A") else f"{name}.lora_up.weight"] = v
        out[f"{name}.alpha"] = torch.tensor(float(ALPHA), dtype=torch.float16)
    return out


def main():
    texts = load_file(os.path.join(OUT, "text_io.safetensors"))
    ids = {p: texts[f"clip/ids/{p}"] for p in PROMPTS}
    model = with_lora(base(), 11)
    io = {}
    for s in SCALES:
        set_strength(model, float(s))
        outputs(model, ids, s, io)
    set_strength(model, 1.0)

    sd = {k: v.to(torch.float16).contiguous() for k, v in get_peft_model_state_dict(model).items()}
    # FLUX's text_encoder (transformers 4) has the `text_model.` level; transformers 5 drops it.
    sd = {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()}
    assert len(sd) == 2 * 6 * 2, sorted(sd)
    with tempfile.TemporaryDirectory() as tmp:
        FluxLoraLoaderMixin.save_lora_weights(tmp, text_encoder_lora_layers=sd, weight_name="x.safetensors",
                                              text_encoder_lora_adapter_metadata={"r": RANK, "lora_alpha": ALPHA,
                                                                                  "target_modules": TARGETS})
        with open(os.path.join(tmp, "x.safetensors"), "rb") as f:
            diffusers_bytes = f.read()
    with open(os.path.join(OUT, "clip_lora_diffusers.safetensors"), "wb") as f:
        f.write(diffusers_bytes)
    k = kohya(sd)
    save_file(k, os.path.join(OUT, "clip_lora_kohya.safetensors"))

    # diffusers' own loading of that kohya file (`lora_state_dict` converts the names and folds
    # alpha/r into the factors; `load_lora_into_text_encoder` attaches them) gives the same outputs.
    for name in ("clip_lora_kohya.safetensors", "clip_lora_diffusers.safetensors"):
        state, alphas, meta = FluxLoraLoaderMixin.lora_state_dict(os.path.join(OUT, name), return_alphas=True,
                                                                   return_lora_metadata=True)
        check = base()
        FluxLoraLoaderMixin.load_lora_into_text_encoder(state, alphas, check, prefix="text_encoder", metadata=meta)
        n_lora = sum(1 for m in check.modules() if isinstance(m, LoraLayer))
        assert n_lora == 12, f"{name}: diffusers attached {n_lora} LoRA layers"
        with torch.no_grad():
            for p in PROMPTS:
                got = check(input_ids=ids[p][None]).last_hidden_state[0]
                err = (got - io[f"out/1.0/{p}"]).abs().max().item()
                assert err < 1e-4, f"{name}: diffusers' loader differs by {err}"
    moved = (io["out/1.0/0"] - base()(input_ids=ids[0][None]).last_hidden_state[0].detach()).abs().max().item()
    assert moved > 1e-2, f"the LoRA barely changes the output ({moved})"

    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
    save_file(io, os.path.join(OUT, "clip_lora_io.safetensors"), metadata=meta)
    header = json.loads(diffusers_bytes[8:8 + int.from_bytes(diffusers_bytes[:8], "little")])
    print("metadata:", header.get("__metadata__"))
    print("keys:", sorted(sd)[:2], sorted(k)[:3])
    print("LoRA moves the last hidden state by up to", moved)


if __name__ == "__main__":
    main()
