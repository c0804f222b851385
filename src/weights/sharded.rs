//! A sharded checkpoint (`*.safetensors.index.json` and its shard files) read as one file.

use std::collections::BTreeSet;

use super::load::{read_header, ByteSource};
use super::tensor_info::WeightsHeader;
use crate::error::{Error, Result};

/// Several shard files seen as one: shard `i` occupies `[base_i, base_i + len_i)` of a virtual
/// address space, and [`ShardedSource::open`] shifts each shard's tensor offsets by its base,
/// so the model loaders read sharded checkpoints unchanged. A read never spans two shards (a
/// tensor lies in one file).
pub struct ShardedSource {
    name: String,
    shards: Vec<(u64, Box<dyn ByteSource>)>,
    len: u64,
}

impl ShardedSource {
    /// Reads the headers of `files` (opened, in order) and returns the source with the merged
    /// header; `name` (the index file) names the whole in errors. A tensor in two shards is an error.
    pub fn open(name: &str, files: Vec<(String, Box<dyn ByteSource>)>) -> Result<(ShardedSource, WeightsHeader)> {
        let mut shards = Vec::new();
        let mut merged: Option<WeightsHeader> = None;
        let mut seen = BTreeSet::new();
        let mut base = 0u64;
        for (f, mut src) in files {
            let h = read_header(src.as_mut())?;
            for t in &h.tensors {
                if !seen.insert(t.name.clone()) {
                    return Err(Error::Malformed {
                        file: f,
                        what: format!("tensor `{}` is also in another shard of `{name}`", t.name),
                    });
                }
            }
            let mut tensors = h.tensors.clone();
            tensors.iter_mut().for_each(|t| t.offset += base);
            match merged.as_mut() {
                None => merged = Some(WeightsHeader { file: name.into(), tensors, ..h }),
                Some(m) => m.tensors.extend(tensors),
            }
            let len = src.len();
            shards.push((base, src));
            base += len;
        }
        let mut header = merged
            .ok_or_else(|| Error::Malformed { file: name.into(), what: "its weight_map lists no shard".into() })?;
        header.file_len = base;
        Ok((ShardedSource { name: name.into(), shards, len: base }, header))
    }

    /// The shard holding byte `offset`, with its base.
    fn shard_at(&mut self, offset: u64) -> Result<(u64, &mut Box<dyn ByteSource>)> {
        let at = self.shards.partition_point(|(b, _)| *b <= offset).saturating_sub(1);
        let name = self.name.clone();
        let (base, src) = self
            .shards
            .get_mut(at)
            .ok_or_else(|| Error::Io { file: name, message: format!("no shard holds byte {offset}") })?;
        Ok((*base, src))
    }

    /// The lengths of the shards, in order.
    pub fn shard_lens(&self) -> Vec<u64> {
        self.shards.iter().map(|(_, s)| s.len()).collect()
    }
}

impl ByteSource for ShardedSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_range(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let (base, src) = self.shard_at(offset)?;
        src.read_range(offset - base, len)
    }
    fn read_range_async(&mut self, offset: u64, len: usize) -> super::bytes::ReadFuture<'_> {
        match self.shard_at(offset) {
            Ok((base, src)) => src.read_range_async(offset - base, len),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}
