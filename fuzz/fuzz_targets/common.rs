//! Shared by both targets: parse `data` as a whole file, and as the prefix of
//! a longer file (the length taken from the input's last byte), and check the
//! parser's promises. Any panic (including these asserts) is a finding.

use iclora::weights::tensor_info::Parsed;
use iclora::Error;

pub fn check(data: &[u8], parse: fn(&[u8], u64, &str) -> iclora::Result<Parsed>) {
    let extra = data.last().map_or(0, |&b| (b as u64) << 12);
    for file_len in [data.len() as u64, data.len() as u64 + extra] {
        match parse(data, file_len, "fuzz") {
            Ok(Parsed::NeedMore(n)) => assert!(n > data.len() as u64 && n <= file_len),
            Ok(Parsed::Header(h)) => {
                for t in &h.tensors {
                    assert!(t.offset >= h.data_start && t.offset + t.size <= file_len);
                }
            }
            Err(e @ (Error::Malformed { .. } | Error::UnsupportedFormat { .. })) => {
                assert!(e.to_string().contains("fuzz"))
            }
            Err(e) => panic!("untyped error {e:?}"),
        }
    }
}
