#!/usr/bin/env python3
"""Golden fixtures for the FLUX VAE (src/model/vae/): a tiny random-weight diffusers
`AutoencoderKL` with the FLUX structure (4 levels, 16 latent channels, mid-block attention,
no quant convs, scaling 0.3611 / shift 0.1159) but small widths, run in float32 on the CPU.

Writes under tests/fixtures/golden/:

  vae_tiny.config.json       the diffusers config (AutoencoderKL.config)
  vae_tiny.safetensors       the weights, diffusers names. Conv and attention weights are stored
                             as F16 (to keep the fixture ~1 MB) and the model runs on exactly those
                             values widened to float32; biases and GroupNorm affines are float32.
  vae_tiny.io.safetensors    float32 inputs and outputs:
     dec{h}x{w}/z [16, h, w]     a normalised latent (what the sampler produces), h x w in 4x4, 6x5
     dec{h}x{w}/image [3, 8h, 8w]  vae.decode(z / scaling + shift).sample
     enc/image [3, 32, 40]        an image in [-1, 1]
     enc/mean [16, 4, 5]          vae.encode(image).latent_dist.mode()
     enc/z [16, 4, 5]             scaling * (mean - shift)

The BFL-named variant (`ae.safetensors` keys) is made from these weights by tests/model_vae.rs.

Not run by the test command. See tools/golden/README.md.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

import diffusers
from diffusers import AutoencoderKL

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "golden")

CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    # Widths change at two levels (16 -> 32 -> 64), so both encoder and decoder have 1x1 shortcuts.
    block_out_channels=[16, 32, 32, 64],
    layers_per_block=1,
    act_fn="silu",
    latent_channels=16,
    norm_num_groups=8,
    sample_size=64,
    scaling_factor=0.3611,
    shift_factor=0.1159,
    use_quant_conv=False,
    use_post_quant_conv=False,
    mid_block_add_attention=True,
)
SEED = 5


def randomize(vae):
    """Default init for convs/linears (rounded to f16); GroupNorm affines away from (1, 0)."""
    g = torch.Generator("cpu").manual_seed(SEED)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name.split(".")[-2]:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_((torch.randn(p.shape, generator=g) / fan_in ** 0.5).half().float())


def main():
    torch.manual_seed(SEED)
    vae = AutoencoderKL(**CONFIG).eval()
    randomize(vae)
    os.makedirs(OUT, exist_ok=True)
    cfg = dict(vae.config)
    with open(os.path.join(OUT, "vae_tiny.config.json"), "w") as f:
        json.dump({k: v for k, v in cfg.items() if not k.startswith("_")} | {"_class_name": "AutoencoderKL"}, f, indent=1)

    sd = vae.state_dict()
    store = {}
    for k, v in sd.items():
        v = v.contiguous()
        store[k] = v.half() if v.dim() >= 2 else v.float()
    save_file(store, os.path.join(OUT, "vae_tiny.safetensors"))
    sf, sh = CONFIG["scaling_factor"], CONFIG["shift_factor"]
    g = torch.Generator("cpu").manual_seed(SEED + 1)
    io = {}
    with torch.no_grad():
        for (h, w) in [(4, 4), (6, 5)]:
            z = torch.randn(1, 16, h, w, generator=g)
            img = vae.decode(z / sf + sh).sample
            io[f"dec{h}x{w}/z"] = z[0]
            io[f"dec{h}x{w}/image"] = img[0]
        image = torch.rand(1, 3, 32, 40, generator=g) * 2 - 1
        mean = vae.encode(image).latent_dist.mode()
        io["enc/image"] = image[0]
        io["enc/mean"] = mean[0]
        io["enc/z"] = sf * (mean[0] - sh)
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "python": sys.version.split()[0]}
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(OUT, "vae_tiny.io.safetensors"), metadata=meta)
    for k, v in io.items():
        print(k, tuple(v.shape), f"rms {v.pow(2).mean().sqrt():.4f}")


if __name__ == "__main__":
    main()
