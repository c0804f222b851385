#!/usr/bin/env python3
"""Golden fixtures for the TAEF1 preview decoder (src/model/taef1.rs): a random-weight diffusers
`AutoencoderTiny` with TAEF1's structure (16 latent channels, decoder levels of 3, 3, 3, 1
blocks, ReLU, nearest x2 upsampling, scaling 1.0 / shift 0.0) but width 16 instead of 64, run in
float32 on the CPU.

Writes under tests/fixtures/golden/:

  taef1_tiny/config.json      the diffusers config (AutoencoderTiny.config): a component folder, as
                              madebyollin/taef1 is, so the studio and the CLI load it by folder
  taef1_tiny/diffusion_pytorch_model.safetensors
                              the weights, diffusers names (encoder included, as in TAEF1's file).
                              Conv weights stored as F16 and the model runs on exactly those values
                              widened to float32; biases float32.
  taef1_tiny.io.safetensors   float32 inputs and outputs:
     dec{h}x{w}/z [16, h, w]        a latent in the sampler's space, h x w in 4x4, 5x3
     dec{h}x{w}/image [3, 8h, 8w]   vae.decode(z / scaling + shift).sample, as FluxPipeline calls it
     big/z [16, 4, 5]               the 4x5 latent scaled by 4 (exercises the tanh clamp)
     big/image [3, 32, 40]

The original-file naming (`taef1_decoder.safetensors`, keys `{i+1}.*`) is made from these weights
by tests/model_taef1.rs.

Not run by the test command. See tools/golden/README.md.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

import diffusers
from diffusers import AutoencoderTiny

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "golden")

CONFIG = dict(
    in_channels=3,
    out_channels=3,
    encoder_block_out_channels=[16, 16, 16, 16],
    decoder_block_out_channels=[16, 16, 16, 16],
    act_fn="relu",
    upsample_fn="nearest",
    latent_channels=16,
    upsampling_scaling_factor=2,
    num_encoder_blocks=[1, 3, 3, 3],
    num_decoder_blocks=[3, 3, 3, 1],
    latent_magnitude=3,
    latent_shift=0.5,
    force_upcast=False,
    scaling_factor=1.0,
    shift_factor=0.0,
)
SEED = 7


def randomize(vae):
    """Convs: N(0, 1.2/fan_in) rounded to f16 (an activation scale that neither dies nor blows up
    through 19 ReLU convs); biases small."""
    g = torch.Generator("cpu").manual_seed(SEED)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_((torch.randn(p.shape, generator=g) * (1.2 / fan_in) ** 0.5).half().float())


def main():
    torch.manual_seed(SEED)
    vae = AutoencoderTiny(**CONFIG).eval()
    randomize(vae)
    os.makedirs(OUT, exist_ok=True)
    cfg = dict(vae.config)
    folder = os.path.join(OUT, "taef1_tiny")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({k: v for k, v in cfg.items() if not k.startswith("_")} | {"_class_name": "AutoencoderTiny"}, f, indent=1)
    store = {k: (v.half() if v.dim() >= 2 else v.float()).contiguous() for k, v in vae.state_dict().items()}
    save_file(store, os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    sf, sh = CONFIG["scaling_factor"], CONFIG["shift_factor"]
    g = torch.Generator("cpu").manual_seed(SEED + 1)
    io = {}
    with torch.no_grad():
        for (h, w) in [(4, 4), (5, 3)]:
            z = torch.randn(1, 16, h, w, generator=g)
            io[f"dec{h}x{w}/z"] = z[0]
            io[f"dec{h}x{w}/image"] = vae.decode(z / sf + sh).sample[0]
        z = 4 * torch.randn(1, 16, 4, 5, generator=g)
        io["big/z"] = z[0]
        io["big/image"] = vae.decode(z / sf + sh).sample[0]
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "python": sys.version.split()[0]}
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(OUT, "taef1_tiny.io.safetensors"), metadata=meta)
    for k, v in io.items():
        print(k, tuple(v.shape), f"rms {v.pow(2).mean().sqrt():.4f}", f"min {v.min():.3f} max {v.max():.3f}")


if __name__ == "__main__":
    main()
