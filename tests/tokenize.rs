//! Tokenizers against transformers (fixtures from tools/golden/make_text_fixtures.py): token ids
//! equal the HF tokenizers' ids exactly, incl. a prompt that truncates, Unicode and IC-LoRA tags;
//! special ids come from the tokenizer files.

mod common;

use common::text::{clip_tokenizer, prompts, read, t5_tokenizer, Io, T5_LEN};
use iclora::model::tokenize::PromptTokenizer;
use iclora::Error;

fn check_ids(tok: &PromptTokenizer, enc: &str, io: &Io) {
    let mut truncated = 0;
    for (p, prompt) in prompts().iter().enumerate() {
        let e = tok.encode(prompt).unwrap();
        assert_eq!(e.ids, io.ids(&format!("{enc}/ids/{p}")), "{enc} ids of prompt {p} {prompt:?}");
        let full = io.i64s(&format!("{enc}/full_len/{p}"))[0] as usize;
        assert_eq!(e.full_len, full, "{enc} untruncated length of prompt {p}");
        assert_eq!(e.truncated, full > tok.max_len(), "{enc} truncation flag of prompt {p}");
        assert_eq!(e.warning(enc).is_some(), e.truncated);
        truncated += e.truncated as usize;
    }
    assert!(truncated > 0, "some {enc} fixture prompt must truncate");
}

#[test]
fn t5_ids_equal_transformers() {
    let tok = t5_tokenizer(true).unwrap();
    let io = Io::open();
    assert_eq!((tok.pad_id(), tok.eos_id(), tok.bos_id()), (0, 1, None));
    check_ids(&tok, "t5", &io);
}

#[test]
fn clip_ids_equal_transformers_with_and_without_config() {
    let io = Io::open();
    for with_config in [true, false] {
        let tok = clip_tokenizer(with_config);
        // The fixture's ids start with BOS and pad with EOS (FLUX's CLIP tokenizer); found from the files.
        let first = io.ids("clip/ids/0");
        assert_eq!(tok.bos_id(), Some(first[0]));
        assert_eq!(tok.pad_id(), tok.eos_id());
        check_ids(&tok, "clip", &io);
    }
}

#[test]
fn clip_from_vocab_and_merges_equals_transformers() {
    // FLUX's tokenizer/ folder has vocab.json + merges.txt and no tokenizer.json.
    let io = Io::open();
    let config = read("clip_tokenizer_config.json");
    for cfg in [Some(config.as_slice()), None] {
        let tok =
            PromptTokenizer::clip_from_vocab("tokenizer/", &read("clip_vocab.json"), &read("clip_merges.txt"), cfg)
                .unwrap();
        check_ids(&tok, "clip", &io);
    }
    let err = PromptTokenizer::clip_from_vocab("tokenizer/", &read("clip_vocab.json"), b"a b c\n", None).err().unwrap();
    assert!(
        matches!(&err, Error::Tokenizer { file, message } if file == "tokenizer/" && message.contains("line 1")),
        "{err}"
    );
}

#[test]
fn t5_eos_comes_from_the_post_processor_and_pad_needs_the_config() {
    let err = t5_tokenizer(false).err().expect("no pad token without tokenizer_config.json");
    assert!(
        matches!(&err, Error::Tokenizer { file, message } if file == "t5_tokenizer.json" && message.contains("pad")),
        "{err}"
    );
    // A config naming an unknown token is an error naming it; a too short length is rejected.
    let bad = br#"{"pad_token": "<nothing>"}"#;
    let err = PromptTokenizer::t5("t.json", &read("t5_tokenizer.json"), Some(bad), T5_LEN).err().unwrap();
    assert!(err.to_string().contains("<nothing>"), "{err}");
    assert!(PromptTokenizer::t5("t.json", b"{not json", None, T5_LEN).is_err());
    let mut tok = t5_tokenizer(true).unwrap();
    assert!(tok.set_max_len(1).is_err());
    tok.set_max_len(4).unwrap();
    let e = tok.encode(&prompts()[0]).unwrap();
    assert_eq!((e.ids.len(), e.ids[3], e.truncated), (4, tok.eos_id(), true));
}
