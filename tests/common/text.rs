//! Fixtures of the text encoders and tokenizers (tools/golden/make_text_fixtures.py), shared by
//! tests/tokenize.rs and tests/model_text.rs.

use iclora::model::tokenize::PromptTokenizer;
use safetensors::SafeTensors;

pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden");
pub const RTOL: f32 = 1e-4;
/// The fixture's T5 sequence length (small, so that the long prompt truncates).
pub const T5_LEN: usize = 32;

pub fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn prompts() -> Vec<String> {
    serde_json::from_slice(&read("text_prompts.json")).unwrap()
}

pub struct Io(pub Vec<u8>);

impl Io {
    pub fn open() -> Io {
        Io(read("text_io.safetensors"))
    }
    pub fn raw(&self, key: &str) -> Vec<u8> {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        st.tensor(key).unwrap_or_else(|_| panic!("fixture has no `{key}`")).data().to_vec()
    }
    pub fn i64s(&self, key: &str) -> Vec<i64> {
        self.raw(key).chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
    }
    pub fn ids(&self, key: &str) -> Vec<u32> {
        self.i64s(key).iter().map(|&i| u32::try_from(i).unwrap()).collect()
    }
    pub fn f32s(&self, key: &str) -> Vec<f32> {
        self.raw(key).chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }
}

pub fn t5_tokenizer(with_config: bool) -> iclora::Result<PromptTokenizer> {
    let config = with_config.then(|| read("t5_tokenizer_config.json"));
    PromptTokenizer::t5("t5_tokenizer.json", &read("t5_tokenizer.json"), config.as_deref(), T5_LEN)
}

pub fn clip_tokenizer(with_config: bool) -> PromptTokenizer {
    let config = with_config.then(|| read("clip_tokenizer_config.json"));
    PromptTokenizer::clip("clip_tokenizer.json", &read("clip_tokenizer.json"), config.as_deref()).unwrap()
}
