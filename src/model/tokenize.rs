//! Prompt tokenizers for the two text encoders (as diffusers' `FluxPipeline._get_t5_prompt_embeds` /
//! `_get_clip_prompt_embeds` use them, src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c), on the
//! `tokenizers` crate from `tokenizer.json` bytes (no file system: the same code runs in wasm32).
//!
//! T5: SentencePiece pieces + `</s>`, truncated to `max_len` keeping the EOS last, right-padded
//! with `<pad>` (diffusers: `padding="max_length", truncation=True`). CLIP: `<|startoftext|>`,
//! at most `max_len − 2` pieces, `<|endoftext|>`, padded to 77. The special ids come from the
//! files: `tokenizer_config.json`'s `eos_token` / `bos_token` / `pad_token` when given, else the
//! tokens the `tokenizer.json` post-processor adds, else its `padding` section; never constants.

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// FLUX.1-dev's T5 sequence length (diffusers' default and maximum).
pub const T5_MAX_LEN_DEV: usize = 512;
/// FLUX.1-schnell's T5 sequence length (BFL `max_length=256` for flux-schnell, src/flux/cli.py @ 802fb47;
/// recommended by diffusers, docs/source/en/api/pipelines/flux.md @ 58eb52c).
pub const T5_MAX_LEN_SCHNELL: usize = 256;
/// CLIP's context length (`max_position_embeddings`).
pub const CLIP_MAX_LEN: usize = 77;

/// Which encoder a tokenizer feeds: decides the sequence shape around the pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// pieces, EOS, pads.
    T5,
    /// BOS, pieces, EOS, pads.
    Clip,
}

/// One prompt's ids, exactly `max_len` long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Length of the untruncated sequence with its special tokens (may exceed `max_len`).
    pub full_len: usize,
    /// Pieces were dropped to fit `max_len`.
    pub truncated: bool,
}

impl Encoded {
    /// diffusers' warning for a truncated prompt (it logs one for each encoder), or `None`.
    pub fn warning(&self, encoder: &str) -> Option<String> {
        self.truncated.then(|| {
            format!(
                "the prompt is {} tokens long for {encoder}, which takes at most {}; the end of the prompt was cut off",
                self.full_len,
                self.ids.len()
            )
        })
    }
}

pub struct PromptTokenizer {
    tok: Tokenizer,
    kind: TokenizerKind,
    file: String,
    bos: Option<u32>,
    eos: u32,
    pad: u32,
    max_len: usize,
}

impl PromptTokenizer {
    /// A T5 tokenizer from `tokenizer.json` bytes (`file` names it in errors) and, when present,
    /// `tokenizer_config.json` bytes; sequences are `max_len` long (512 dev, 256 schnell).
    pub fn t5(
        file: &str,
        tokenizer_json: &[u8],
        config_json: Option<&[u8]>,
        max_len: usize,
    ) -> Result<PromptTokenizer> {
        Self::new(TokenizerKind::T5, file, tokenizer_json, config_json, max_len)
    }

    /// A CLIP tokenizer (77 tokens) from `tokenizer.json` (+ `tokenizer_config.json`) bytes.
    pub fn clip(file: &str, tokenizer_json: &[u8], config_json: Option<&[u8]>) -> Result<PromptTokenizer> {
        Self::new(TokenizerKind::Clip, file, tokenizer_json, config_json, CLIP_MAX_LEN)
    }

    /// A CLIP tokenizer from `vocab.json` + `merges.txt` (what FLUX's `tokenizer/` folder holds: it
    /// has no `tokenizer.json`), built as transformers' `CLIPTokenizer` builds it (see
    /// [`clip_tokenizer_json`]); `file` names the folder in errors.
    pub fn clip_from_vocab(
        file: &str,
        vocab_json: &[u8],
        merges_txt: &[u8],
        config_json: Option<&[u8]>,
    ) -> Result<PromptTokenizer> {
        let json = clip_tokenizer_json(file, vocab_json, merges_txt, config_json)?;
        Self::new(TokenizerKind::Clip, file, json.as_bytes(), config_json, CLIP_MAX_LEN)
    }

    pub fn new(
        kind: TokenizerKind,
        file: &str,
        tokenizer_json: &[u8],
        config_json: Option<&[u8]>,
        max_len: usize,
    ) -> Result<PromptTokenizer> {
        let err = |message: String| Error::Tokenizer { file: file.into(), message };
        let tok = Tokenizer::from_bytes(tokenizer_json).map_err(|e| err(format!("not a valid tokenizer.json: {e}")))?;
        let config: Option<serde_json::Value> = match config_json {
            Some(b) => Some(
                serde_json::from_slice(b).map_err(|e| err(format!("tokenizer_config.json is not valid JSON: {e}")))?,
            ),
            None => None,
        };
        // The special tokens the post-processor wraps an empty text in: `[</s>]` for T5,
        // `[<|startoftext|>, <|endoftext|>]` for CLIP.
        let wrapped = tok.encode("", true).map_err(|e| err(format!("encoding failed: {e}")))?.get_ids().to_vec();
        let configured = |key: &str| -> Result<Option<u32>> {
            let Some(v) = config.as_ref().and_then(|c| c.get(key)) else {
                return Ok(None);
            };
            // A plain string, or an AddedToken object `{"content": ...}`; null means none.
            let Some(name) = v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str())) else {
                return Ok(None);
            };
            let id = tok
                .token_to_id(name)
                .ok_or_else(|| err(format!("its config names `{name}` as {key}, which is not in the vocabulary")))?;
            Ok(Some(id))
        };
        let (bos_at, eos_at) = match kind {
            TokenizerKind::T5 => (None, 0),
            TokenizerKind::Clip => (Some(0), 1),
        };
        let eos = match configured("eos_token")? {
            Some(id) => id,
            None => *wrapped.get(eos_at).ok_or_else(|| {
                err("no end-of-sequence token: neither tokenizer_config.json's `eos_token` nor a post-processor that appends one".into())
            })?,
        };
        let bos = match bos_at {
            None => None,
            Some(at) => Some(match configured("bos_token")? {
                Some(id) => id,
                None => *wrapped.get(at).ok_or_else(|| {
                    err("no start-of-text token: neither tokenizer_config.json's `bos_token` nor a post-processor that prepends one".into())
                })?,
            }),
        };
        // Pad: the config's, else the tokenizer.json `padding` section's; CLIP falls back to its EOS
        // (as the CLIP tokenizer in the FLUX.1 Hugging Face repos does), T5 has no fallback.
        let pad = match (configured("pad_token")?, tok.get_padding(), kind) {
            (Some(id), _, _) => id,
            (None, Some(p), _) => p.pad_id,
            (None, None, TokenizerKind::Clip) => eos,
            (None, None, TokenizerKind::T5) => {
                return Err(err(
                    "no padding token: give tokenizer_config.json (with `pad_token`) next to tokenizer.json".into(),
                ))
            }
        };
        let mut t = PromptTokenizer { tok, kind, file: file.into(), bos, eos, pad, max_len: 0 };
        t.set_max_len(max_len)?;
        Ok(t)
    }

    /// Changes the sequence length (e.g. `--max-sequence-length`).
    pub fn set_max_len(&mut self, max_len: usize) -> Result<()> {
        if max_len < self.specials() + 1 {
            return Err(Error::InvalidArgument(format!(
                "a {:?} sequence length of {max_len} leaves no room for the prompt next to its {} special token(s)",
                self.kind,
                self.specials()
            )));
        }
        self.max_len = max_len;
        Ok(())
    }

    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }
    pub fn max_len(&self) -> usize {
        self.max_len
    }
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos_id(&self) -> u32 {
        self.eos
    }
    pub fn pad_id(&self) -> u32 {
        self.pad
    }
    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    fn specials(&self) -> usize {
        1 + self.bos.is_some() as usize
    }

    /// The prompt's pieces (no special tokens), untruncated.
    pub fn pieces(&self, prompt: &str) -> Result<Vec<u32>> {
        let enc = self.tok.encode(prompt, false).map_err(|e| Error::Tokenizer {
            file: self.file.clone(),
            message: format!("encoding the prompt failed: {e}"),
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// `[BOS] pieces[..max_len − specials] EOS pad…`, exactly `max_len` ids.
    pub fn encode(&self, prompt: &str) -> Result<Encoded> {
        let pieces = self.pieces(prompt)?;
        let room = self.max_len - self.specials();
        let full_len = pieces.len() + self.specials();
        let mut ids = Vec::with_capacity(self.max_len);
        ids.extend(self.bos);
        ids.extend(pieces.iter().take(room));
        ids.push(self.eos);
        ids.resize(self.max_len, self.pad);
        Ok(Encoded { ids, full_len, truncated: pieces.len() > room })
    }
}

/// The `tokenizer.json` transformers' `CLIPTokenizer` (5.x) makes from `vocab.json` and
/// `merges.txt`: NFC → collapse whitespace → lower-case; split by CLIP's regex, then byte-level;
/// BPE with the `</w>` end-of-word suffix and `unk_token` as unknown; `bos … eos` post-processor.
/// Special token names come from `tokenizer_config.json`, else transformers' defaults.
pub fn clip_tokenizer_json(
    file: &str,
    vocab_json: &[u8],
    merges_txt: &[u8],
    config_json: Option<&[u8]>,
) -> Result<String> {
    use serde_json::{json, Value};
    let err = |message: String| Error::Tokenizer { file: file.into(), message };
    let vocab: serde_json::Map<String, Value> = serde_json::from_slice(vocab_json)
        .map_err(|e| err(format!("vocab.json is not a JSON object of token ids: {e}")))?;
    let merges_txt = std::str::from_utf8(merges_txt).map_err(|e| err(format!("merges.txt is not UTF-8: {e}")))?;
    let mut merges = Vec::new();
    for (n, line) in merges_txt.lines().enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) => merges.push(json!([a, b])),
            _ => {
                return Err(err(format!(
                    "merges.txt line {}: expected two tokens separated by one space, got {line:?}",
                    n + 1
                )))
            }
        }
    }
    let config: Value = match config_json {
        Some(b) => {
            serde_json::from_slice(b).map_err(|e| err(format!("tokenizer_config.json is not valid JSON: {e}")))?
        }
        None => Value::Null,
    };
    let name = |key: &str, default: &str| -> String {
        let v = config.get(key);
        v.and_then(|v| v.as_str().or_else(|| v.get("content").and_then(Value::as_str))).unwrap_or(default).to_string()
    };
    let (bos, eos, unk, pad) = (
        name("bos_token", "<|startoftext|>"),
        name("eos_token", "<|endoftext|>"),
        name("unk_token", "<|endoftext|>"),
        name("pad_token", "<|endoftext|>"),
    );
    let id = |t: &str| {
        vocab.get(t).and_then(Value::as_u64).ok_or_else(|| err(format!("special token `{t}` is not in vocab.json")))
    };
    let (bos_id, eos_id) = (id(&bos)?, id(&eos)?);
    let mut added: Vec<(u64, String)> = Vec::new();
    for t in [&bos, &eos, &unk, &pad] {
        let i = id(t)?;
        if !added.iter().any(|(a, _)| *a == i) {
            added.push((i, t.clone()));
        }
    }
    added.sort();
    let added: Vec<Value> = added
        .into_iter()
        .map(|(i, t)| json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let pattern = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": [eos, eos_id], "cls": [bos, bos_id], "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges}
    });
    Ok(tok.to_string())
}
