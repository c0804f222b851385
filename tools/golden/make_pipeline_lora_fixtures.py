#!/usr/bin/env python3
"""Golden images for `iclora generate --lora` (tests/generate_lora.rs): diffusers' FluxPipeline on
the tiny pipeline of make_pipeline_fixtures.py (web/demo/tiny-flux/) with random LoRA
adapters loaded by `load_lora_weights(..., adapter_name=...)` and mixed by `set_adapters`.

Adapters (random, non-zero lora_B; values rounded to F16 and stored as F16, so the reference runs
with exactly the stored values), made with make_lora_fixtures.add_random_adapter:

  A: rank 4, lora_alpha 8 (alpha/r = 2, so a wrong alpha shows), on attention q/k/v/out and the
     add_* projections, both feed-forwards, single-block q/k/v/proj_mlp/proj_out (and, since peft
     matches suffixes, the final `proj_out`).
  B: rank 2, lora_alpha 3, on attention q/k/v/out, single-block proj_mlp and proj_out.

Writes under tests/fixtures/golden/:

  pipe_lora_a_diffusers.safetensors  A as `FluxPipeline.save_lora_weights` writes it
                                     (`transformer.<module>.lora_A/B.weight`, alpha in
                                     `__metadata__["lora_adapter_metadata"]`)
  pipe_lora_a_kohya.safetensors      A in kohya names, pipe_lora_a_bfl.safetensors in BFL-native
                                     names (make_lora_fixtures.kohya_and_native: fused qkv / linear1
                                     as split-qkv forms)
  pipe_lora_b_diffusers.safetensors  B, as save_lora_weights writes it
  pipe_lora_images.safetensors       `image/{name}` [64, 64, 3] U8 for each of CASES (the adapters
                                     and weights given to set_adapters); the prompt, size, steps,
                                     guidance, seed and sequence length are in the metadata
                                     (`generate`, JSON), the cases in `cases` (JSON)

Run after make_pipeline_fixtures.py. Not run by the test command. See tools/golden/README.md.
"""
import json
import os
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import diffusers
import peft
from diffusers import FluxPipeline, FluxTransformer2DModel

sys.path.insert(0, os.path.dirname(__file__))
from make_lora_fixtures import add_random_adapter, kohya_and_native  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
GOLDEN = os.path.join(ROOT, "golden")
# The demo model the page serves (web/demo/), also the fixture of the pipeline tests.
DIR = os.path.join(os.path.dirname(__file__), "..", "..", "web", "demo", "tiny-flux")

TARGETS_A = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
             "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
             "ff_context.net.2", "proj_mlp", "proj_out"]
TARGETS_B = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "proj_mlp", "proj_out"]

GENERATE = dict(prompt="a photo of a red fox in the snow", width=64, height=64, steps=3, guidance=3.5, seed=42,
                max_sequence_length=32)
# (name, adapters, set_adapters weights)
CASES = [("a1.0", ["a"], [1.0]), ("a0.6", ["a"], [0.6]), ("a1.0_b0.6", ["a", "b"], [1.0, 0.6])]


def make_adapter(name, r, alpha, targets, seed):
    """A random adapter on a fresh copy of the tiny transformer, saved as save_lora_weights does."""
    tr = FluxTransformer2DModel.from_pretrained(os.path.join(DIR, "transformer"), torch_dtype=torch.float32)
    sd = add_random_adapter(tr, name, r, alpha, targets, seed)
    path = os.path.join(GOLDEN, f"pipe_lora_{name}_diffusers.safetensors")
    meta = {"r": r, "lora_alpha": alpha, "target_modules": targets}
    with tempfile.TemporaryDirectory() as d:
        FluxPipeline.save_lora_weights(d, transformer_lora_layers=sd, weight_name="lora.safetensors",
                                       transformer_lora_adapter_metadata=meta)
        saved = load_file(os.path.join(d, "lora.safetensors"))
        with open(os.path.join(d, "lora.safetensors"), "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
    assert all(k.startswith("transformer.") for k in saved), list(saved)[:3]
    assert all(v.abs().max() > 0 for k, v in saved.items() if "lora_B" in k), "zero lora_B"
    save_file(saved, path, metadata=header.get("__metadata__", {}))
    return path, sd, tr.config


def main():
    path_a, sd_a, cfg = make_adapter("a", 4, 8, TARGETS_A, 21)
    path_b, _, _ = make_adapter("b", 2, 3, TARGETS_B, 22)
    kohya, native = kohya_and_native(sd_a, 8, cfg.num_layers, cfg.num_single_layers)
    save_file(kohya, os.path.join(GOLDEN, "pipe_lora_a_kohya.safetensors"))
    save_file(native, os.path.join(GOLDEN, "pipe_lora_a_bfl.safetensors"))

    pipe = FluxPipeline.from_pretrained(DIR, torch_dtype=torch.float32)
    pipe.load_lora_weights(path_a, adapter_name="a")
    pipe.load_lora_weights(path_b, adapter_name="b")
    g = GENERATE
    images = {}
    for name, names, weights in CASES:
        pipe.set_adapters(names, adapter_weights=weights)
        out = pipe(g["prompt"], height=g["height"], width=g["width"], num_inference_steps=g["steps"],
                   guidance_scale=g["guidance"], generator=torch.Generator("cpu").manual_seed(g["seed"]),
                   max_sequence_length=g["max_sequence_length"], output_type="np").images[0]
        u8 = (out * 255).round().astype(np.uint8)
        images[f"image/{name}"] = torch.from_numpy(np.ascontiguousarray(u8))
        print(name, u8.shape, "mean", float(u8.mean()), "std", float(u8.std()))
    names = list(images)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.equal(images[a], images[b]), f"{a} and {b} are the same image: the LoRA does nothing"
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "peft": peft.__version__,
            "generate": json.dumps(GENERATE), "cases": json.dumps(CASES)}
    save_file(images, os.path.join(GOLDEN, "pipe_lora_images.safetensors"), metadata=meta)
    for f in ["pipe_lora_a_diffusers", "pipe_lora_a_kohya", "pipe_lora_a_bfl", "pipe_lora_b_diffusers"]:
        print(f, os.path.getsize(os.path.join(GOLDEN, f + ".safetensors")), "bytes")


if __name__ == "__main__":
    main()
