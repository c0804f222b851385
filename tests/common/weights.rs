//! Helpers of the weight-loading tests: a source that counts its reads, random F8 bytes.

use iclora::reference::random::Rng;
use iclora::weights::load::ByteSource;
use iclora::weights::tensor_info::FileDType;

/// Wraps a source and records the largest read and the total read.
pub struct Counting<S> {
    pub inner: S,
    pub max_read: usize,
    pub total: u64,
}

impl<S: ByteSource> ByteSource for Counting<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_range(&mut self, offset: u64, len: usize) -> iclora::Result<Vec<u8>> {
        self.max_read = self.max_read.max(len);
        self.total += len as u64;
        self.inner.read_range(offset, len)
    }
}

/// Random F8 bytes without NaN/inf (GPUs need not preserve NaN payloads).
pub fn f8_bytes(rng: &mut Rng, n: usize, dtype: FileDType) -> Vec<u8> {
    (0..n)
        .map(|_| loop {
            let b = rng.next_u64() as u8;
            let special = match dtype {
                FileDType::F8E4M3 => b & 0x7f == 0x7f,
                _ => b & 0x7c == 0x7c,
            };
            if !special {
                break b;
            }
        })
        .collect()
}
