"""Peer for `iclora bench flux-step` on an NVIDIA GPU: one forward of diffusers'
FluxTransformer2DModel with FLUX.1-dev's shapes (random weights, bf16, as diffusers
runs FLUX) at the same token count, in the same run on the same card.
Usage: python3 tools/diffusers_flux_step.py [TOKENS] [ITERS]
"""
import sys
import torch
from diffusers import FluxTransformer2DModel

from torch_matmul_peer import median_ms  # same directory: one timing helper for both peers

def main():
    tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 4608
    iters = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    txt = tokens // 9
    img = tokens - txt
    side = int(img ** 0.5)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    with torch.device(dev):
        model = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
            guidance_embeds=True, axes_dims_rope=(16, 56, 56),
        ).to(torch.bfloat16).eval()
    bf = torch.bfloat16
    hidden = torch.randn(1, img, 64, device=dev, dtype=bf)
    enc = torch.randn(1, txt, 4096, device=dev, dtype=bf)
    pooled = torch.randn(1, 768, device=dev, dtype=bf)
    t = torch.tensor([0.5], device=dev, dtype=bf)
    g = torch.tensor([3.5], device=dev, dtype=bf)
    img_ids = torch.zeros(img, 3, device=dev)
    img_ids[:, 1] = (torch.arange(img, device=dev) // side).float()
    img_ids[:, 2] = (torch.arange(img, device=dev) % side).float()
    txt_ids = torch.zeros(txt, 3, device=dev)

    def step():
        with torch.no_grad():
            model(hidden_states=hidden, encoder_hidden_states=enc, pooled_projections=pooled, timestep=t,
                  guidance=g, img_ids=img_ids, txt_ids=txt_ids, return_dict=False)

    ms = median_ms(step, iters)
    print(f"peer diffusers FluxTransformer2DModel bf16 {tokens} tokens ({txt} text): step median_ms={ms:.1f} "
          f"on {torch.cuda.get_device_name(0)} (torch {torch.__version__})")

if __name__ == "__main__":
    main()
