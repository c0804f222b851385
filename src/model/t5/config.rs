//! T5 v1.1 encoder configuration (transformers `T5Config` as used by
//! src/transformers/models/t5/modeling_t5.py @ 6b8b757): from a transformers `config.json`, or
//! inferred from tensor shapes (a single safetensors file carries no config).

use serde_json::Value;

use crate::error::{Error, Result};
use crate::weights::tensor_info::WeightsHeader;

#[derive(Debug, Clone, PartialEq)]
pub struct T5Config {
    /// Embedding rows (32128 for T5-XXL; the tokenizer uses the first 32100).
    pub vocab: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub heads: usize,
    pub d_ff: usize,
    pub layers: usize,
    pub buckets: usize,
    pub max_distance: usize,
    pub eps: f32,
}

impl T5Config {
    /// `google/t5-v1_1-xxl`, FLUX's `text_encoder_2`.
    pub fn xxl() -> T5Config {
        T5Config {
            vocab: 32128,
            d_model: 4096,
            d_kv: 64,
            heads: 64,
            d_ff: 10240,
            layers: 24,
            buckets: 32,
            max_distance: 128,
            eps: 1e-6,
        }
    }

    pub fn inner(&self) -> usize {
        self.heads * self.d_kv
    }

    /// From `config.json` text (`file` names it in errors). Only the gated-GELU (v1.1) FFN is
    /// supported: `feed_forward_proj` must be `gated-gelu` when present.
    pub fn from_json(file: &str, text: &str) -> Result<T5Config> {
        let bad = |what: String| Error::Malformed { file: file.into(), what };
        let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let get = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("T5 config without an integer `{k}`")))
        };
        if let Some(ff) = v.get("feed_forward_proj").and_then(Value::as_str) {
            if ff != "gated-gelu" {
                return Err(Error::UnsupportedFormat {
                    op: "T5 text encoder",
                    format: ff.into(),
                    why: format!("`{file}`: only T5 v1.1's `gated-gelu` feed-forward is implemented"),
                });
            }
        }
        let c = T5Config {
            vocab: get("vocab_size")?,
            d_model: get("d_model")?,
            d_kv: get("d_kv")?,
            heads: get("num_heads")?,
            d_ff: get("d_ff")?,
            layers: get("num_layers")?,
            buckets: v.get("relative_attention_num_buckets").and_then(Value::as_u64).unwrap_or(32) as usize,
            max_distance: v.get("relative_attention_max_distance").and_then(Value::as_u64).unwrap_or(128) as usize,
            eps: v.get("layer_norm_epsilon").and_then(Value::as_f64).unwrap_or(1e-6) as f32,
        };
        c.check_caps(file)?;
        c.validate()?;
        Ok(c)
    }

    /// From the tensor shapes of a checkpoint (HF or llama.cpp names): vocab and d_model from the embedding,
    /// heads from the relative attention bias `[buckets, heads]`, d_ff from `wi_0`, layers by
    /// counting blocks. `max_distance` and eps are not in the shapes: 128 and 1e-6 (v1.1).
    pub fn infer(header: &WeightsHeader) -> Result<T5Config> {
        let missing = |name: &str| Error::MissingModelTensor {
            model: "T5 text encoder",
            file: header.file.clone(),
            name: name.into(),
        };
        let shape = |names: &[&str]| -> Result<Vec<usize>> {
            let t = names.iter().find_map(|n| header.tensor(n)).ok_or_else(|| missing(&names.join("` or `")))?;
            Ok(t.shape.iter().map(|&d| d as usize).collect())
        };
        let dims2 = |names: &[&str]| -> Result<(usize, usize)> {
            match shape(names)?.as_slice() {
                &[a, b] => Ok((a, b)),
                s => Err(Error::TensorShape {
                    file: header.file.clone(),
                    name: names[0].into(),
                    expected: "2 dimensions".into(),
                    got: format!("{s:?}"),
                }),
            }
        };
        let keys = super::weights::T5Keys::detect(header);
        let k = |hf: &str| keys.key(hf);
        let (vocab, d_model) = dims2(&[&k("shared.weight"), &k("encoder.embed_tokens.weight")])?;
        let (buckets, heads) = dims2(&[&k("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")])?;
        let (inner, _) = dims2(&[&k("encoder.block.0.layer.0.SelfAttention.q.weight")])?;
        let (d_ff, _) = dims2(&[&k("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")])?;
        let layers = (0..)
            .take_while(|i| header.tensor(&k(&format!("encoder.block.{i}.layer.0.SelfAttention.q.weight"))).is_some())
            .count();
        let c = T5Config {
            vocab,
            d_model,
            d_kv: inner / heads.max(1),
            heads,
            d_ff,
            layers,
            buckets,
            max_distance: 128,
            eps: 1e-6,
        };
        c.check_caps(&header.file)?;
        c.validate()?;
        Ok(c)
    }

    /// Every count and width against `crate::limits` (`file` names the config in the error),
    /// before anything is allocated from them.
    pub fn check_caps(&self, file: &str) -> Result<()> {
        use crate::limits::{T5_BUCKETS, T5_HEADS, T5_LAYERS, T5_VOCAB, T5_WIDTH};
        T5_LAYERS.check_usize(file, self.layers)?;
        T5_HEADS.check_usize(file, self.heads)?;
        T5_VOCAB.check_usize(file, self.vocab)?;
        [self.d_model, self.d_kv, self.d_ff].iter().try_for_each(|&w| T5_WIDTH.check_usize(file, w))?;
        [self.buckets, self.max_distance].iter().try_for_each(|&b| T5_BUCKETS.check_usize(file, b))
    }

    pub fn validate(&self) -> Result<()> {
        let ok =
            self.vocab > 0 && self.d_model > 0 && self.d_kv > 0 && self.heads > 0 && self.d_ff > 0 && self.layers > 0;
        if !ok || self.buckets < 4 || self.max_distance <= self.buckets / 4 {
            return Err(Error::InvalidArgument(format!("T5 config has a zero or inconsistent size: {self:?}")));
        }
        Ok(())
    }
}
