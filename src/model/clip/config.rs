//! CLIP text tower configuration (transformers `CLIPTextConfig`,
//! src/transformers/models/clip/configuration_clip.py @ 01841b3): from a transformers `config.json`
//! (`CLIPTextConfig`, or a `CLIPConfig` with a `text_config`), or inferred from tensor shapes.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::weights::tensor_info::WeightsHeader;

#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub max_positions: usize,
    pub eps: f32,
    /// transformers' pooled-output rule: `Some(2)` (the legacy value in `openai/clip-vit-large-patch14`)
    /// pools at the argmax of the ids; any other value pools at the first occurrence of that id.
    /// `None` (no config): the tokenizer's EOS is used.
    pub eos_token_id: Option<u32>,
}

impl ClipConfig {
    /// `openai/clip-vit-large-patch14`'s text tower, FLUX's `text_encoder`.
    pub fn large() -> ClipConfig {
        ClipConfig {
            vocab: 49408,
            hidden: 768,
            heads: 12,
            intermediate: 3072,
            layers: 12,
            max_positions: 77,
            eps: 1e-5,
            eos_token_id: Some(2),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads.max(1)
    }

    pub fn from_json(file: &str, text: &str) -> Result<ClipConfig> {
        let bad = |what: String| Error::Malformed { file: file.into(), what };
        let root: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let v = root.get("text_config").unwrap_or(&root);
        let get = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("CLIP text config without an integer `{k}`")))
        };
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "quick_gelu" {
                return Err(Error::UnsupportedFormat {
                    op: "CLIP text encoder",
                    format: act.into(),
                    why: format!("`{file}`: only CLIP's `quick_gelu` activation is implemented"),
                });
            }
        }
        let c = ClipConfig {
            vocab: get("vocab_size")?,
            hidden: get("hidden_size")?,
            heads: get("num_attention_heads")?,
            intermediate: get("intermediate_size")?,
            layers: get("num_hidden_layers")?,
            max_positions: get("max_position_embeddings")?,
            eps: v.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-5) as f32,
            eos_token_id: v.get("eos_token_id").and_then(Value::as_u64).map(|x| x as u32),
        };
        c.check_caps(file)?;
        c.validate()?;
        Ok(c)
    }

    /// From tensor shapes. The head count is not in the shapes: CLIP text towers use 64-wide heads.
    pub fn infer(header: &WeightsHeader) -> Result<ClipConfig> {
        let dims2 = |name: &str| -> Result<(usize, usize)> {
            let t = header.tensor(name).ok_or_else(|| Error::MissingModelTensor {
                model: "CLIP text encoder",
                file: header.file.clone(),
                name: name.into(),
            })?;
            match t.shape.as_slice() {
                &[a, b] => Ok((a as usize, b as usize)),
                s => Err(Error::TensorShape {
                    file: header.file.clone(),
                    name: name.into(),
                    expected: "2 dimensions".into(),
                    got: format!("{s:?}"),
                }),
            }
        };
        let pre = super::weights::key_prefix(header)?;
        let (vocab, hidden) = dims2(&format!("{pre}embeddings.token_embedding.weight"))?;
        let (max_positions, _) = dims2(&format!("{pre}embeddings.position_embedding.weight"))?;
        let (intermediate, _) = dims2(&format!("{pre}encoder.layers.0.mlp.fc1.weight"))?;
        let layers =
            (0..).take_while(|i| header.tensor(&format!("{pre}encoder.layers.{i}.mlp.fc1.weight")).is_some()).count();
        let c = ClipConfig {
            vocab,
            hidden,
            heads: (hidden / 64).max(1),
            intermediate,
            layers,
            max_positions,
            eps: 1e-5,
            eos_token_id: None,
        };
        c.check_caps(&header.file)?;
        c.validate()?;
        Ok(c)
    }

    /// Every count and width against `crate::limits` (`file` names the config in the error),
    /// before anything is allocated from them.
    pub fn check_caps(&self, file: &str) -> Result<()> {
        use crate::limits::{CLIP_HEADS, CLIP_LAYERS, CLIP_POSITIONS, CLIP_VOCAB, CLIP_WIDTH};
        CLIP_LAYERS.check_usize(file, self.layers)?;
        CLIP_HEADS.check_usize(file, self.heads)?;
        CLIP_VOCAB.check_usize(file, self.vocab)?;
        CLIP_POSITIONS.check_usize(file, self.max_positions)?;
        [self.hidden, self.intermediate].iter().try_for_each(|&w| CLIP_WIDTH.check_usize(file, w))
    }

    pub fn validate(&self) -> Result<()> {
        let ok = self.vocab > 0
            && self.hidden > 0
            && self.heads > 0
            && self.intermediate > 0
            && self.layers > 0
            && self.max_positions > 0;
        if !ok || !self.hidden.is_multiple_of(self.heads) {
            return Err(Error::InvalidArgument(format!("CLIP config has a zero or inconsistent size: {self:?}")));
        }
        Ok(())
    }
}
