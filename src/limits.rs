//! Caps on every count and size read from a file the user (or a share link) hands the app:
//! model `config.json` fields, LoRA ranks and decoded bytes, the small JSON and text files read
//! whole, PNG dimensions and recipe text. A file is checked against these before anything is
//! allocated from its numbers, so a hostile or corrupt file is a typed [`Error::FileLimit`]
//! instead of a multi-gigabyte allocation (in wasm: an abort that kills the worker).
//!
//! Each cap is generous against the largest real file of its kind (FLUX.1, T5-XXL, CLIP-L, the
//! FLUX VAE, the released IC-LoRA adapters) and says so in its `why`, which the error shows.
//! Weights-file headers have their own caps next to their parsers (`weights::tensor_info`).

use crate::error::{Error, Result};

/// A cap on one count or size read from a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// What is counted, as the file names it (`num_layers`, `LoRA rank`, ...).
    pub what: &'static str,
    pub max: u64,
    /// Why this value: the real size it is generous against (shown in the error).
    pub why: &'static str,
}

impl Cap {
    /// `Err(Error::FileLimit)` naming `file` when `found` is over the cap.
    pub fn check(&self, file: &str, found: u64) -> Result<()> {
        if found > self.max {
            return Err(Error::FileLimit {
                file: file.into(),
                what: self.what.into(),
                found,
                limit: self.max,
                why: self.why.into(),
            });
        }
        Ok(())
    }

    /// [`check`](Self::check) for a `usize` count.
    pub fn check_usize(&self, file: &str, found: usize) -> Result<()> {
        self.check(file, found as u64)
    }
}

const fn cap(what: &'static str, max: u64, why: &'static str) -> Cap {
    Cap { what, max, why }
}

// ---- Model configurations (`config.json`, or sizes inferred from tensor shapes) ----
// Layers and blocks become `Vec`s of GPU modules and loops over the file; widths multiply into
// buffer sizes (T5's relative bias is heads × len² floats on the CPU).

/// FLUX.1 has 19 double blocks.
pub const FLUX_DOUBLE_BLOCKS: Cap = cap("num_layers (double blocks)", 256, "FLUX.1 has 19");
/// FLUX.1 has 38 single blocks.
pub const FLUX_SINGLE_BLOCKS: Cap = cap("num_single_layers (single blocks)", 512, "FLUX.1 has 38");
/// FLUX.1: 24 heads of 128.
pub const FLUX_HEADS: Cap = cap("num_attention_heads", 256, "FLUX.1 has 24");
pub const FLUX_HEAD_DIM: Cap = cap("attention_head_dim", 1024, "FLUX.1 uses 128");
/// FLUX.1: 3072 × 4 = 12288.
pub const FLUX_MLP: Cap = cap("MLP width", 1 << 17, "FLUX.1 uses 12288");
/// Input/output channels (64), T5 context (4096), CLIP pooled (768).
pub const FLUX_WIDTH: Cap = cap("an input or output width", 1 << 16, "FLUX.1's widest is T5-XXL's 4096");

/// T5-XXL has 24 encoder layers.
pub const T5_LAYERS: Cap = cap("num_layers", 256, "T5-XXL has 24");
/// The relative-position bias is built on the CPU as heads × len² floats: 128 MiB at 128 heads
/// and 512 tokens.
pub const T5_HEADS: Cap = cap("num_heads", 128, "T5-XXL has 64");
/// d_model, d_kv and d_ff: T5-XXL 4096, 64, 10240.
pub const T5_WIDTH: Cap = cap("a width (d_model, d_kv or d_ff)", 1 << 17, "T5-XXL's widest is d_ff = 10240");
/// Embedding rows: 32128 in T5-XXL.
pub const T5_VOCAB: Cap = cap("vocab_size", 1 << 20, "T5-XXL has 32128");
/// Relative attention buckets (32) and their max distance (128).
pub const T5_BUCKETS: Cap = cap("relative_attention_num_buckets / max_distance", 1 << 16, "T5 uses 32 and 128");

/// CLIP-L's text tower has 12 layers (OpenCLIP bigG 32).
pub const CLIP_LAYERS: Cap = cap("num_hidden_layers", 256, "CLIP-L has 12");
pub const CLIP_HEADS: Cap = cap("num_attention_heads", 1024, "CLIP-L has 12");
/// hidden 768, intermediate 3072 in CLIP-L.
pub const CLIP_WIDTH: Cap = cap("a width (hidden_size or intermediate_size)", 1 << 17, "CLIP-L's widest is 3072");
pub const CLIP_VOCAB: Cap = cap("vocab_size", 1 << 20, "CLIP-L has 49408");
/// The tokenizer pads every prompt to this length: 77 in CLIP-L.
pub const CLIP_POSITIONS: Cap = cap("max_position_embeddings", 1 << 14, "CLIP-L has 77");

/// The FLUX VAE has 4 resolution levels.
pub const VAE_LEVELS: Cap = cap("block_out_channels (levels)", 16, "the FLUX VAE has 4");
/// Level widths 128–512, 16 latent channels, 32 norm groups, 3 image channels.
pub const VAE_WIDTH: Cap = cap("a channel count", 1 << 14, "the FLUX VAE's widest level is 512");
pub const VAE_LAYERS: Cap = cap("layers_per_block", 64, "the FLUX VAE has 2");

// ---- LoRA adapters ----

/// The released IC-LoRA adapters are rank 16; community FLUX LoRAs go up to 128 (rarely 256).
pub const LORA_RANK: Cap = cap("LoRA rank", 1024, "IC-LoRA adapters are rank 16, large FLUX LoRAs 128");
/// Every factor is decoded to f32 in wasm memory (4 bytes per weight). A rank-128 LoRA on every
/// FLUX Linear decodes to ~1.4 GB; an IC-LoRA adapter (rank 16) to ~170 MB. Browsers give a wasm
/// instance at most 4 GiB, shared with the rest of the engine.
pub const LORA_F32_BYTES: Cap =
    cap("LoRA factors decoded to f32 (bytes)", 2 << 30, "a rank-128 LoRA on every FLUX layer needs 1.4 GB");

/// A dropped LoRA file is held whole in the worker's memory (wasm: at most 4 GiB in all). The
/// IC-LoRA adapters are ~40 MB; a rank-128 LoRA on every FLUX layer in 16 bits ~700 MB.
pub const LORA_FILE_BYTES: Cap = cap("LoRA file size (bytes)", 1 << 30, "a rank-128 FLUX LoRA in 16 bits is ~700 MB");

// ---- Small files read whole (configs, tokenizers, shard indexes) ----

/// `config.json`, `tokenizer_config.json`, `scheduler_config.json`: a few KB in FLUX.1-dev (T5's
/// tokenizer_config with its 100 extra ids is ~20 KB).
pub const CONFIG_JSON_BYTES: Cap =
    cap("size of a config file (bytes)", 1 << 20, "FLUX.1's config files are under 25 KB");
/// `*.safetensors.index.json`: FLUX.1-dev's transformer index is ~120 KB.
pub const INDEX_JSON_BYTES: Cap = cap("size of a shard index (bytes)", 16 << 20, "FLUX.1-dev's index is ~120 KB");
/// `tokenizer.json` (T5 ~2.4 MB, CLIP ~3.6 MB), `vocab.json` + `merges.txt` (~1 MB each).
pub const TOKENIZER_BYTES: Cap =
    cap("size of a tokenizer file (bytes)", 64 << 20, "FLUX.1's largest tokenizer file is ~3.6 MB");

// ---- Images and recipes ----

/// PNG width and height: this app writes canvases of at most 4096 per side (`recipe::MAX_SIDE`).
pub const PNG_SIDE: Cap = cap("image width or height (pixels)", 16384, "this app's images are at most 4096 wide");
/// Decoded bytes of a PNG (width × height × channels × bytes per sample): 4096² RGB8 is 48 MiB.
/// Rows are decoded one at a time, but a bomb of tiny compressed rows still costs decoding time.
pub const PNG_DECODED_BYTES: Cap =
    cap("decoded image size (bytes)", 256 << 20, "this app's largest image decodes to 48 MiB");
/// A dropped PNG is read whole into the page's memory: this app's largest (4096² RGB, incompressible
/// noise) is ~50 MB.
pub const PNG_FILE_BYTES: Cap = cap("PNG file size (bytes)", 256 << 20, "this app's largest PNG is ~50 MB");
/// All text and metadata chunks of a PNG together (the PNG decoder's allocation limit); a recipe
/// is a few KB (`recipe::MAX_TEXT_CHARS` of captions, each non-ASCII character escaped to ≤ 12 bytes).
pub const PNG_METADATA_BYTES: u64 = 4 << 20;
/// The recipe `tEXt` chunk parsed as JSON: captions are at most 16 Ki characters (≤ 192 KiB escaped).
pub const RECIPE_TEXT_BYTES: Cap = cap("recipe text (bytes)", 1 << 20, "a recipe is a few KB");
