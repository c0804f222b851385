#!/usr/bin/env python3
"""Golden sampler runs: diffusers' FluxPipeline end to end (denoising loop only) with the tiny
random-weight transformers of make_flux_fixtures.py (run that first: this script loads
tests/fixtures/golden/flux_{dev,odd}.safetensors + .config.json).

Writes tests/fixtures/golden/sampler_steps.safetensors (float32), for each CASE:

  {case}/noise       [L_img, 64]   the packed initial latents FluxPipeline drew (prepare_latents,
                                   torch.Generator("cpu").manual_seed(seed))
  {case}/txt         [L_txt, joint]  prompt_embeds (given directly: no text encoders)
  {case}/pooled      [pooled]        pooled_prompt_embeds
  {case}/step{i}     [L_img, 64]   the latents after Euler step i (callback_on_step_end)
  {case}/final       [L_img, 64]   FluxPipeline(..., output_type="latent") output
  {case}/params      [5]           seed, height, width, steps, guidance (0 = model without guidance)

Cases: dev model + FLUX.1-dev scheduler (dynamic shift), guidance 3.5, 64×64 (4 steps) and
48×80 (3 steps, H×W); odd model + FLUX.1-schnell scheduler (no shift, no guidance), 80×48, 2 steps.
Not run by the test command. See tools/golden/README.md.
"""
import json
import os

import torch
from safetensors.torch import load_file, save_file

import diffusers
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

from make_sampler_fixtures import SCHEDULER_CONFIGS

DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "golden")

# name: (model, scheduler, seed, height, width, steps, guidance)
CASES = {
    "dev_64x64": ("dev", "dev", 3, 64, 64, 4, 3.5),
    "dev_48x80": ("dev", "dev", 4, 48, 80, 3, 3.5),
    "odd_80x48": ("odd", "schnell", 5, 80, 48, 2, None),
}
TXT_LEN = 5


def load_model(name):
    with open(os.path.join(DIR, f"flux_{name}.config.json")) as f:
        config = json.load(f)
    model = FluxTransformer2DModel.from_config(config).to(torch.float32).eval()
    sd = {k: v.to(torch.float32) for k, v in load_file(os.path.join(DIR, f"flux_{name}.safetensors")).items()}
    model.load_state_dict(sd, strict=True)
    return model


def run(case, model_name, sched, seed, h, w, steps, guidance):
    model = load_model(model_name)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIGS[sched]), vae=None,
                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                        transformer=model)
    g = torch.Generator("cpu").manual_seed(1000 + seed)
    txt = torch.randn(1, TXT_LEN, model.config.joint_attention_dim, generator=g)
    pooled = torch.randn(1, model.config.pooled_projection_dim, generator=g)
    out = {}

    def on_step(p, i, t, kw):
        out[f"{case}/step{i}"] = kw["latents"][0].clone()
        return {}

    # The initial noise, drawn exactly as the pipeline will draw it from the same seed.
    noise, _ = pipe.prepare_latents(1, 16, h, w, torch.float32, torch.device("cpu"),
                                    torch.Generator("cpu").manual_seed(seed))
    with torch.no_grad():
        final = pipe(prompt_embeds=txt, pooled_prompt_embeds=pooled, height=h, width=w,
                     num_inference_steps=steps, guidance_scale=guidance if guidance is not None else 0.0,
                     generator=torch.Generator("cpu").manual_seed(seed), output_type="latent",
                     callback_on_step_end=on_step).images
    assert len(out) == steps
    out.update({f"{case}/noise": noise[0], f"{case}/txt": txt[0], f"{case}/pooled": pooled[0],
                f"{case}/final": final[0],
                f"{case}/params": torch.tensor([seed, h, w, steps, guidance or 0.0], dtype=torch.float64)})
    return out


if __name__ == "__main__":
    tensors = {}
    for case, spec in CASES.items():
        tensors.update(run(case, *spec))
    tensors = {k: v.to(torch.float32).contiguous() for k, v in tensors.items()}
    path = os.path.join(DIR, "sampler_steps.safetensors")
    save_file(tensors, path, metadata={"torch": torch.__version__, "diffusers": diffusers.__version__,
                                       "script": "tools/golden/make_sampler_steps.py"})
    print(f"wrote {len(tensors)} tensors, {os.path.getsize(path) / 1024:.0f} KiB, to {path}")
