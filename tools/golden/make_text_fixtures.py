#!/usr/bin/env python3
"""Golden fixtures for the tokenizers and text encoders (src/model/{tokenize,t5,clip}):
tiny tokenizers trained here, tiny random-weight transformers `T5EncoderModel` (v1.1 style,
gated-gelu) and `CLIPTextModel` (quick_gelu), float32 on the CPU.

Writes under tests/fixtures/golden/:

  t5_tokenizer.json, t5_tokenizer_config.json
        a unigram tokenizer shaped like T5's (Metaspace pre-tokenizer, `$A </s>` post-processor,
        `<pad>`=0, `</s>`=1, `<unk>`=2), trained on CORPUS
  clip_tokenizer.json, clip_tokenizer_config.json
        a byte-level BPE shaped like CLIP's (lower-case, `</w>` suffix, `<|startoftext|>` …
        `<|endoftext|>`, pad = `<|endoftext|>`): trained here, then converted by transformers'
        CLIPTokenizer from vocab.json + merges.txt (what FLUX's `tokenizer/` folder holds) and
        saved from that tokenizer
  clip_vocab.json, clip_merges.txt     that vocab.json + merges.txt (the tokenizer's source)
  t5_text.safetensors, clip_text.safetensors     weights, HF names (CLIP with FLUX's `text_model.`
        prefix; T5 without the tied `encoder.embed_tokens.weight`), float32
  t5_text.config.json, clip_text.config.json     the transformers configs
  text_io.safetensors
        t5/ids/{p} [T5_LEN] (I64, from transformers with padding="max_length", truncation=True),
        t5/full_len/{p} [1] (untruncated length incl. </s>), t5/out/{p} [T5_LEN, 64];
        clip/ids/{p} [77], clip/full_len/{p} [1], clip/out/{p} [77, 64], clip/pooled/{p} [64]
  text_prompts.json      the prompts by index p

Not run by the test command. See tools/golden/README.md.
"""
import json
import os
import shutil
import tempfile

import torch
import transformers
import tokenizers
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, PreTrainedTokenizerFast, T5Config, T5EncoderModel

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "golden")
T5_LEN = 32  # small max_sequence_length so that the long prompt truncates (FLUX: 512 dev / 256 schnell)
CLIP_LEN = 77

CORPUS = [
    "a photo of a cat sitting on a red sofa in the living room",
    "[SCENE-1] a man walks into a bar; [SCENE-2] he orders a drink, [SCENE-3] he leaves",
    "<Leo> a portrait of Leo the lion wearing sunglasses, studio lighting, 4k",
    "the quick brown fox jumps over the lazy dog. The QUICK brown fox!",
    "In-Context LoRA: a set of panels showing the same character in different poses",
    "landscape painting of mountains at sunset, oil on canvas, highly detailed",
    "a bowl of ramen with an egg, chopsticks, steam rising; food photography",
    "two images side by side: left a sketch, right the finished illustration",
] * 4

PROMPTS = [
    "a photo of a cat",
    "[SCENE-1] <Leo> walks into the café — naïve Zoë says «hello» 日本 🦁",
    "  Extra   spaces,\tTabs and UPPER case: [SCENE-2] <Leo>'s 3 sunsets!!  ",
    " ".join(["a long prompt about panels and characters in different poses"] * 12),
]


def t5_tokenizer():
    tok = Tokenizer(models.Unigram())
    # T5's tokenizer.json: a Precompiled (NFKC-like) normalizer, then runs of spaces → one space.
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(CORPUS, trainer)
    eos = tok.token_to_id("</s>")
    assert (tok.token_to_id("<pad>"), eos, tok.token_to_id("<unk>")) == (0, 1, 2)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)])
    return tok


def clip_tokenizer(tmp):
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    pattern = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  end_of_word_suffix="</w>", initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.model.save(tmp)  # vocab.json + merges.txt, as in FLUX's tokenizer/ folder
    hf = CLIPTokenizer(vocab=os.path.join(tmp, "vocab.json"), merges=os.path.join(tmp, "merges.txt"),
                       pad_token="<|endoftext|>")
    return hf


def seeded(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif p.dim() == 1:  # norm scales
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
            elif "embed" in name or "relative_attention_bias" in name or name == "shared.weight":
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def main():
    os.makedirs(OUT, exist_ok=True)
    io = {}
    # ---- T5 ----
    t5tok = t5_tokenizer()
    t5_json = os.path.join(OUT, "t5_tokenizer.json")
    t5tok.save(t5_json)
    with open(os.path.join(OUT, "t5_tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "model_max_length": 512,
                   "tokenizer_class": "T5Tokenizer"}, f, indent=1)
    hf_t5 = PreTrainedTokenizerFast(tokenizer_file=t5_json, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    t5cfg = T5Config(vocab_size=t5tok.get_vocab_size(), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                     relative_attention_num_buckets=32, relative_attention_max_distance=128,
                     feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0,
                     tie_word_embeddings=False, is_encoder_decoder=False, use_cache=False)
    torch.manual_seed(0)
    t5 = T5EncoderModel(t5cfg).eval()
    seeded(t5, 5)
    # ---- CLIP ----
    with tempfile.TemporaryDirectory() as tmp:
        hf_clip = clip_tokenizer(tmp)
        hf_clip.backend_tokenizer.save(os.path.join(OUT, "clip_tokenizer.json"))
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(os.path.join(tmp, name), os.path.join(OUT, "clip_" + name))
    with open(os.path.join(OUT, "clip_tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                   "unk_token": "<|endoftext|>", "model_max_length": CLIP_LEN, "tokenizer_class": "CLIPTokenizer"}, f, indent=1)
    eos = hf_clip.convert_tokens_to_ids("<|endoftext|>")
    clipcfg = CLIPTextConfig(vocab_size=len(hf_clip), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=CLIP_LEN, hidden_act="quick_gelu",
                             layer_norm_eps=1e-5, bos_token_id=hf_clip.convert_tokens_to_ids("<|startoftext|>"),
                             eos_token_id=eos, pad_token_id=eos)
    assert eos != 2  # newer rule: pooled at the first eos_token_id (the ids' argmax would differ here)
    clip = CLIPTextModel(clipcfg).eval()
    seeded(clip, 6)

    for p, prompt in enumerate(PROMPTS):
        enc = hf_t5(prompt, padding="max_length", max_length=T5_LEN, truncation=True, return_tensors="pt")
        ids = enc.input_ids
        io[f"t5/ids/{p}"] = ids[0]
        io[f"t5/full_len/{p}"] = torch.tensor([len(hf_t5(prompt).input_ids)])
        with torch.no_grad():
            io[f"t5/out/{p}"] = t5(input_ids=ids).last_hidden_state[0].contiguous()
        enc = hf_clip(prompt, padding="max_length", max_length=CLIP_LEN, truncation=True, return_tensors="pt")
        io[f"clip/ids/{p}"] = enc.input_ids[0]
        io[f"clip/full_len/{p}"] = torch.tensor([len(hf_clip(prompt).input_ids)])
        with torch.no_grad():
            o = clip(input_ids=enc.input_ids)
        io[f"clip/out/{p}"] = o.last_hidden_state[0].contiguous()
        io[f"clip/pooled/{p}"] = o.pooler_output[0].contiguous()
    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "t5_len": str(T5_LEN)}
    # `encoder.embed_tokens.weight` is tied to `shared.weight`: stored once, as `shared.weight`.
    t5_sd = {k: v.contiguous() for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(t5_sd, os.path.join(OUT, "t5_text.safetensors"), metadata=meta)
    # transformers 5 saves CLIPTextModel without the `text_model.` prefix that FLUX's text_encoder/
    # model.safetensors (and transformers 4) has; the fixture keeps the FLUX layout.
    clip_sd = {"text_model." + k: v.contiguous() for k, v in clip.state_dict().items()}
    save_file(clip_sd, os.path.join(OUT, "clip_text.safetensors"), metadata=meta)
    save_file(io, os.path.join(OUT, "text_io.safetensors"), metadata=meta)
    t5cfg.to_json_file(os.path.join(OUT, "t5_text.config.json"))
    clipcfg.to_json_file(os.path.join(OUT, "clip_text.config.json"))
    with open(os.path.join(OUT, "text_prompts.json"), "w") as f:
        json.dump(PROMPTS, f, indent=1, ensure_ascii=False)
    for p in range(len(PROMPTS)):
        print(p, "t5", io[f"t5/full_len/{p}"].item(), "clip", io[f"clip/full_len/{p}"].item(), io[f"clip/ids/{p}"][:12].tolist())


if __name__ == "__main__":
    main()
