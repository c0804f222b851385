#!/usr/bin/env python3
"""Golden fixtures for the host-side sampler pieces (src/pipeline/): seeded
noise and the FLUX sigma schedule, straight from torch and diffusers.

Writes tests/fixtures/golden/sampler.safetensors (float32 tensors):

  randn/s{seed}/n{numel}          torch.randn(numel, generator=Generator("cpu").manual_seed(seed),
                                  dtype=float32) with torch's own CPU dispatch (AVX2/AVX-512 kernel
                                  on x86 machines that have them)
  randn_scalar/s{seed}/n{numel}   the same with ATEN_CPU_CAPABILITY=default (the scalar libm kernel),
                                  drawn in a child process because the variable is read at import
  noise/s{seed}/{H}x{W}           FluxPipeline.prepare_latents(batch 1, 16 channels, H, W, float32,
                                  CPU generator): the packed latents, [1, (H/16)(W/16), 64]
  sigmas/{dev|schnell}/steps{N}/tokens{T}     scheduler.sigmas after FluxPipeline's set-up
  timesteps/{dev|schnell}/steps{N}/tokens{T}  scheduler.timesteps (= sigmas[:-1] * 1000)
  euler/x, euler/v, euler/out, euler/sigmas   one FlowMatchEulerDiscreteScheduler.step

Not run by the test command. See tools/golden/README.md for the command.
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

SEEDS = [0, 1, 42, 2**32 + 5, 2**63 - 1]
NUMELS = [1, 7, 15, 16, 17, 100, 1024, 4096 + 3]
# (seed, H, W): square, non-square both ways, and sides that are not multiples of 16
# (diffusers rounds the latent down to 2*floor(side/16)).
NOISE = [(0, 256, 256), (42, 128, 384), (7, 384, 128), (2**32 + 5, 80, 48), (3, 100, 72)]
STEPS = [1, 4, 20, 28]
TOKENS = [16, 256, 1024, 4096, 6144]

# scheduler/scheduler_config.json of the FLUX.1 model repos on the Hugging Face hub.
SCHEDULER_CONFIGS = {
    "dev": dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                base_image_seq_len=256, max_image_seq_len=4096, base_shift=0.5, max_shift=1.15),
    "schnell": dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False,
                    base_image_seq_len=256, max_image_seq_len=4096, base_shift=0.5, max_shift=1.15),
}


def randn(seed, numel):
    g = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(numel, generator=g, dtype=torch.float32)


def randn_all():
    return {f"s{s}/n{n}": randn(s, n) for s in SEEDS for n in NUMELS}


def scalar_randn_in_child():
    """Re-run this script as a child with the scalar kernel forced; it prints
    the values as JSON (exact: float32 -> float64 -> repr round-trips)."""
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    out = subprocess.run([sys.executable, __file__, "--child-scalar"], env=env,
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    assert data.pop("__capability") == "DEFAULT", "the child did not get the scalar kernel"
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in data.items()}


def flux_pipe(config):
    # prepare_latents and the timestep set-up need only the scheduler and the
    # VAE scale factor (8 when there is no VAE, as for FLUX.1's VAE).
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**config), vae=None,
                        text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=None)
    assert pipe.vae_scale_factor == 8
    return pipe


def flux_schedule(pipe, steps, image_seq_len):
    """FluxPipeline.__call__ step 5 ("Prepare timesteps"), verbatim in effect."""
    sigmas = np.linspace(1.0, 1 / steps, steps)
    cfg = pipe.scheduler.config
    mu = calculate_shift(image_seq_len, cfg.get("base_image_seq_len", 256),
                         cfg.get("max_image_seq_len", 4096), cfg.get("base_shift", 0.5),
                         cfg.get("max_shift", 1.15))
    timesteps, _ = retrieve_timesteps(pipe.scheduler, steps, "cpu", sigmas=sigmas, mu=mu)
    return pipe.scheduler.sigmas.clone(), timesteps.clone()


def main(out_path):
    tensors = {f"randn/{k}": v for k, v in randn_all().items()}
    tensors.update({f"randn_scalar/{k}": v for k, v in scalar_randn_in_child().items()})

    pipe = flux_pipe(SCHEDULER_CONFIGS["dev"])
    for seed, h, w in NOISE:
        g = torch.Generator("cpu").manual_seed(seed)
        latents, _ = pipe.prepare_latents(1, 16, h, w, torch.float32, torch.device("cpu"), g)
        tensors[f"noise/s{seed}/{h}x{w}"] = latents.contiguous()

    for name, config in SCHEDULER_CONFIGS.items():
        pipe = flux_pipe(config)
        for n in STEPS:
            for t in TOKENS:
                sigmas, timesteps = flux_schedule(pipe, n, t)
                tensors[f"sigmas/{name}/steps{n}/tokens{t}"] = sigmas
                tensors[f"timesteps/{name}/steps{n}/tokens{t}"] = timesteps

    # One Euler step (dev, 4 steps, 256 tokens, from sigma_1 to sigma_2).
    pipe = flux_pipe(SCHEDULER_CONFIGS["dev"])
    sigmas, timesteps = flux_schedule(pipe, 4, 256)
    g = torch.Generator("cpu").manual_seed(1234)
    x = torch.randn(1, 16, 64, generator=g)
    v = torch.randn(1, 16, 64, generator=g)
    pipe.scheduler.set_begin_index(0)
    pipe.scheduler._step_index = 1
    out = pipe.scheduler.step(v, timesteps[1], x, return_dict=False)[0]
    tensors.update({"euler/x": x, "euler/v": v, "euler/out": out, "euler/sigmas": sigmas[1:3].clone()})

    meta = {
        "torch": torch.__version__, "diffusers": diffusers.__version__, "numpy": np.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "script": "tools/golden/make_sampler_fixtures.py",
    }
    tensors = {k: v.to(torch.float32).contiguous() for k, v in tensors.items()}
    save_file(tensors, out_path, metadata=meta)
    size = os.path.getsize(out_path)
    print(f"wrote {len(tensors)} tensors, {size / 1024:.0f} KiB, to {out_path}; {meta}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--child-scalar"]:
        data = {k: [float(x) for x in v.tolist()] for k, v in randn_all().items()}
        data["__capability"] = torch.backends.cpu.get_cpu_capability()
        print(json.dumps(data))
    else:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        main(sys.argv[1] if len(sys.argv) > 1 else
             os.path.join(root, "tests", "fixtures", "golden", "sampler.safetensors"))
