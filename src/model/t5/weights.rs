//! T5 encoder weights on the GPU, a struct tree mirroring the HF checkpoint keys
//! (transformers `T5EncoderModel`, src/transformers/models/t5/modeling_t5.py @ 6b8b757): `shared.weight` (or
//! `encoder.embed_tokens.weight`), `encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight`,
//! `...layer.0.layer_norm.weight`,
//! `...layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight`, `...layer.1.layer_norm.weight`,
//! `encoder.final_layer_norm.weight`; the relative attention bias of block 0 stays on the CPU.
//! llama.cpp-style GGUF names (city96's T5 GGUFs: `token_embd`, `enc.blk.{i}.attn_q`, ...) are
//! mapped to these (ComfyUI-GGUF `T5_SD_MAP`, loader.py @ 795e451); quantized matrices stay quantized (the
//! matmul dequantizes).

use super::config::T5Config;
use crate::error::Result;
use crate::gpu::{Gpu, Tensor};
use crate::model::layers::{EmbeddingTable, Linear};
use crate::weights::load::{ByteSource, Pacer, Uploads, CHUNK_BYTES, PACE_BYTES};
use crate::weights::loader::{Missing, TensorLoader};
use crate::weights::tensor_info::WeightsHeader;

pub const MODEL: &str = "T5 text encoder";

/// How the checkpoint names its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum T5Keys {
    /// transformers' `T5EncoderModel` names.
    Hf,
    /// llama.cpp's T5 names (GGUF).
    LlamaCpp,
}

impl T5Keys {
    pub fn detect(header: &WeightsHeader) -> T5Keys {
        let gguf = header.tensor("token_embd.weight").is_some() || header.tensor("enc.blk.0.attn_q.weight").is_some();
        if gguf {
            T5Keys::LlamaCpp
        } else {
            T5Keys::Hf
        }
    }

    /// The checkpoint's name for the HF name `hf` (ComfyUI-GGUF's mapping, read backwards).
    pub fn key(self, hf: &str) -> String {
        const MAP: [(&str, &str); 11] = [
            ("shared.", "token_embd."),
            ("encoder.embed_tokens.", "token_embd."),
            ("encoder.final_layer_norm.", "enc.output_norm."),
            ("encoder.block.", "enc.blk."),
            (".layer.0.SelfAttention.relative_attention_bias.", ".attn_rel_b."),
            (".layer.0.SelfAttention.", ".attn_"),
            (".layer.0.layer_norm.", ".attn_norm."),
            (".layer.1.DenseReluDense.wi_0.", ".ffn_gate."),
            (".layer.1.DenseReluDense.wi_1.", ".ffn_up."),
            (".layer.1.DenseReluDense.wo.", ".ffn_down."),
            (".layer.1.layer_norm.", ".ffn_norm."),
        ];
        match self {
            T5Keys::Hf => hf.to_string(),
            T5Keys::LlamaCpp => MAP.iter().fold(hf.to_string(), |k, (from, to)| k.replace(from, to)),
        }
    }
}

/// `encoder.block.{i}.layer.0`: RMSNorm, then attention without biases.
pub struct SelfAttention {
    pub layer_norm: Tensor,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
}

/// `encoder.block.{i}.layer.1`: RMSNorm, then the gated-GELU FFN.
pub struct DenseGatedGelu {
    pub layer_norm: Tensor,
    pub wi_0: Linear,
    pub wi_1: Linear,
    pub wo: Linear,
}

pub struct T5Block {
    pub attention: SelfAttention,
    pub ff: DenseGatedGelu,
}

pub struct T5Weights {
    pub shared: EmbeddingTable,
    /// `relative_attention_bias.weight` `[buckets, heads]`, row-major, F32 on the CPU.
    pub relative_attention_bias: Vec<f32>,
    pub blocks: Vec<T5Block>,
    pub final_layer_norm: Tensor,
}

impl T5Weights {
    /// Loads every tensor `c` calls for. A missing tensor is `Error::MissingModelTensor`, one of
    /// another shape `Error::TensorShape`, both naming it. The embedding table is split into row
    /// ranges that fit the device's storage binding limit.
    pub fn load(gpu: &Gpu, src: &mut dyn ByteSource, header: &WeightsHeader, c: &T5Config) -> Result<T5Weights> {
        let max_bytes = gpu.info().max_storage_binding;
        Self::load_split(gpu, src, header, c, max_bytes)
    }

    /// [`load`](Self::load) with embedding ranges of at most `table_bytes` each.
    pub fn load_split(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        c: &T5Config,
        table_bytes: u64,
    ) -> Result<T5Weights> {
        let (weights, uploads) = Self::plan(gpu, src, header, c, table_bytes)?;
        uploads.run_now(gpu, src)?;
        Ok(weights)
    }

    /// [`load`](Self::load) for async callers: the bytes stream with a wait for the GPU's queue
    /// every `PACE_BYTES` (a browser's staging memory then stays bounded; T5-XXL is 5 GB and more).
    pub async fn load_paced(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        c: &T5Config,
    ) -> Result<T5Weights> {
        let (weights, uploads) = Self::plan(gpu, src, header, c, gpu.info().max_storage_binding)?;
        uploads.run(gpu, src, CHUNK_BYTES, Pacer::every(PACE_BYTES)).await?;
        Ok(weights)
    }

    /// The weight tree with its matrices allocated, and the uploads that fill them.
    fn plan(
        gpu: &Gpu,
        src: &mut dyn ByteSource,
        header: &WeightsHeader,
        c: &T5Config,
        table_bytes: u64,
    ) -> Result<(T5Weights, Uploads)> {
        // A config built in code skipped `from_json`'s caps; they bound the block list.
        c.check_caps(&header.file)?;
        c.validate()?;
        let keys = T5Keys::detect(header);
        let k = |hf: &str| keys.key(hf);
        let mut l = TensorLoader::new(gpu, src, header, MODEL, Missing::ModelTensor);
        let (d, inner, ff) = (c.d_model, c.inner(), c.d_ff);
        let (shared, embed) = (k("shared.weight"), k("encoder.embed_tokens.weight"));
        let shared = EmbeddingTable::load(&mut l, &[&shared, &embed], c.vocab, d, table_bytes)?;
        let rel = k("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
        let relative_attention_bias = l.values(&[&rel], &[&[c.buckets, c.heads]])?;
        let mut blocks = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let a = |s: &str| k(&format!("encoder.block.{i}.layer.0.{s}"));
            let f = |s: &str| k(&format!("encoder.block.{i}.layer.1.{s}"));
            blocks.push(T5Block {
                attention: SelfAttention {
                    layer_norm: l.vector(&a("layer_norm.weight"), d)?,
                    q: Linear::load_unbiased(&mut l, &a("SelfAttention.q.weight"), inner, d)?,
                    k: Linear::load_unbiased(&mut l, &a("SelfAttention.k.weight"), inner, d)?,
                    v: Linear::load_unbiased(&mut l, &a("SelfAttention.v.weight"), inner, d)?,
                    o: Linear::load_unbiased(&mut l, &a("SelfAttention.o.weight"), d, inner)?,
                },
                ff: DenseGatedGelu {
                    layer_norm: l.vector(&f("layer_norm.weight"), d)?,
                    wi_0: Linear::load_unbiased(&mut l, &f("DenseReluDense.wi_0.weight"), ff, d)?,
                    wi_1: Linear::load_unbiased(&mut l, &f("DenseReluDense.wi_1.weight"), ff, d)?,
                    wo: Linear::load_unbiased(&mut l, &f("DenseReluDense.wo.weight"), d, ff)?,
                },
            });
        }
        let final_layer_norm = l.vector(&k("encoder.final_layer_norm.weight"), d)?;
        let weights = T5Weights { shared, relative_attention_bias, blocks, final_layer_norm };
        Ok((weights, l.finish().0))
    }
}
