#!/usr/bin/env python3
"""Golden fixtures for `iclora generate` (src/pipeline/generate.rs): a tiny complete FLUX.1-dev
pipeline in diffusers layout, and the images diffusers' FluxPipeline makes with it.

Writes web/demo/tiny-flux/ (~3 MB), loadable by `FluxPipeline.from_pretrained`:

  model_index.json
  scheduler/scheduler_config.json        FLUX.1-dev's (dynamic shifting)
  transformer/config.json                a new tiny dev transformer (joint 64 = T5 d_model, pooled 64 =
  transformer/diffusion_pytorch_model-0000{1,2}-of-00002.safetensors      CLIP hidden), sharded in two
  transformer/diffusion_pytorch_model.safetensors.index.json             with a weight_map, 2-D weights F8_E4M3
  vae/{config.json, diffusion_pytorch_model.safetensors}        = golden/vae_tiny.*
  text_encoder/{config.json, model.safetensors}                  = golden/clip_text.*  (CLIP)
  text_encoder_2/{config.json, model.safetensors}                = golden/t5_text.*    (T5)
  tokenizer/{vocab.json, merges.txt, tokenizer_config.json}      = golden/clip_*       (CLIP BPE)
  tokenizer_2/{tokenizer.json, tokenizer_config.json}            = golden/t5_tokenizer* (T5 unigram)

and tests/fixtures/golden/pipeline_cases.json + pipeline_images.safetensors: for each case, the
arguments and `FluxPipeline.from_pretrained(dir)(prompt, height, width, num_inference_steps,
guidance_scale, generator=torch.Generator("cpu").manual_seed(seed), max_sequence_length=L,
output_type="np")` converted to uint8 as diffusers' `numpy_to_pil` does (`(x·255).round()`),
`image/{i}` [H, W, 3] U8.

Run after make_text_fixtures.py and make_vae_fixtures.py (it reuses their outputs). Not run by
the test command. See tools/golden/README.md.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import FluxPipeline, FluxTransformer2DModel

sys.path.insert(0, os.path.dirname(__file__))
from make_flux_fixtures import randomize, weights_to_save  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
GOLDEN = os.path.join(ROOT, "golden")
# The demo model the page serves (web/demo/), also the fixture of the pipeline tests.
DIR = os.path.join(os.path.dirname(__file__), "..", "..", "web", "demo", "tiny-flux")

TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=2, attention_head_dim=64,
                   num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=64,
                   guidance_embeds=True, axes_dims_rope=(8, 28, 28))

SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
             "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
             "use_dynamic_shifting": True}

CASES = [
    dict(name="square", prompt="a photo of a red fox in the snow", width=64, height=64, steps=3, guidance=3.5,
         seed=42, max_sequence_length=32),
    dict(name="wide", prompt="[SCENE-1] a cozy cabin at dusk; [SCENE-2] the same cabin at dawn, <Leo> waving",
         width=96, height=64, steps=4, guidance=2.5, seed=7, max_sequence_length=48),
    dict(name="tall", prompt="Unicode: café, naïve, 東京 tower at night", width=64, height=96, steps=2,
         guidance=4.0, seed=123456789, max_sequence_length=24),
]


def copy(src, dst):
    os.makedirs(os.path.dirname(os.path.join(DIR, dst)), exist_ok=True)
    shutil.copyfile(os.path.join(GOLDEN, src), os.path.join(DIR, dst))


def write_json(path, obj):
    os.makedirs(os.path.dirname(os.path.join(DIR, path)), exist_ok=True)
    with open(os.path.join(DIR, path), "w") as f:
        json.dump(obj, f, indent=1)


def main():
    if os.path.isdir(DIR):
        shutil.rmtree(DIR)
    os.makedirs(DIR)
    write_json("model_index.json", {
        "_class_name": "FluxPipeline", "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]})
    write_json("scheduler/scheduler_config.json", SCHEDULER)

    torch.manual_seed(0)
    tr = FluxTransformer2DModel(**TRANSFORMER).eval()
    randomize(tr, 11)
    sd = weights_to_save(tr)
    names = sorted(sd)
    half = len(names) // 2
    shards = [names[:half], names[half:]]
    weight_map = {}
    for i, keys in enumerate(shards):
        fname = f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        os.makedirs(os.path.join(DIR, "transformer"), exist_ok=True)
        save_file({k: sd[k] for k in keys}, os.path.join(DIR, "transformer", fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in keys})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    write_json("transformer/diffusion_pytorch_model.safetensors.index.json",
               {"metadata": {"total_size": total}, "weight_map": weight_map})
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(tr.config).items() if not k.startswith("_")}
    write_json("transformer/config.json", cfg | {"_class_name": "FluxTransformer2DModel"})

    copy("vae_tiny.config.json", "vae/config.json")
    copy("vae_tiny.safetensors", "vae/diffusion_pytorch_model.safetensors")
    copy("clip_text.config.json", "text_encoder/config.json")
    copy("clip_text.safetensors", "text_encoder/model.safetensors")
    copy("t5_text.config.json", "text_encoder_2/config.json")
    copy("t5_text.safetensors", "text_encoder_2/model.safetensors")
    copy("clip_vocab.json", "tokenizer/vocab.json")
    copy("clip_merges.txt", "tokenizer/merges.txt")
    copy("clip_tokenizer_config.json", "tokenizer/tokenizer_config.json")
    copy("t5_tokenizer.json", "tokenizer_2/tokenizer.json")
    copy("t5_tokenizer_config.json", "tokenizer_2/tokenizer_config.json")

    pipe = FluxPipeline.from_pretrained(DIR, torch_dtype=torch.float32)
    # The transformer was loaded from F8 weights widened to f32: the same values as `tr`.
    for k, v in pipe.transformer.state_dict().items():
        assert torch.equal(v, tr.state_dict()[k].float()), k
    images = {}
    for i, c in enumerate(CASES):
        out = pipe(c["prompt"], height=c["height"], width=c["width"], num_inference_steps=c["steps"],
                   guidance_scale=c["guidance"], generator=torch.Generator("cpu").manual_seed(c["seed"]),
                   max_sequence_length=c["max_sequence_length"], output_type="np").images[0]
        u8 = (out * 255).round().astype(np.uint8)
        images[f"image/{i}"] = torch.from_numpy(np.ascontiguousarray(u8))
        print(c["name"], u8.shape, "mean", float(u8.mean()), "std", float(u8.std()))
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "python": sys.version.split()[0]}
    save_file(images, os.path.join(GOLDEN, "pipeline_images.safetensors"), metadata=meta)
    with open(os.path.join(GOLDEN, "pipeline_cases.json"), "w") as f:
        json.dump(CASES, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
