//! Wrapper for `shaders/embedding.wgsl`: row gather from a table in any
//! weight format (T5's token embedding), and whole-weight dequantization.
//! Reference: `reference::embedding`.

use bytemuck::{Pod, Zeroable};

use super::{launch_1d, shape_err, Variant};
use crate::error::{Error, Result};
use crate::gpu::{Batch, Binding, DType, Gpu, ShaderSpec, Tensor};

pub static SHADER: ShaderSpec = ShaderSpec {
    name: "embedding",
    sources: &[include_str!("../../shaders/quant.wgsl"), include_str!("../../shaders/embedding.wgsl")],
    needs_f16: false,
    needs_subgroups: false,
};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    k: u32,
    vocab: u32,
    _pad: u32,
}

pub fn variants() -> Vec<Variant> {
    DType::WEIGHT_FORMATS
        .iter()
        .map(|f| Variant::new("gather", &[("FORMAT", f.shader_id() as f64), ("WG", WG as f64)]))
        .collect()
}

/// `table` `[V, K]` (any weight format), `ids` U32 `[n]` → F32 `[n, K]`. Ids ≥ V give zero rows.
pub fn embedding(gpu: &Gpu, batch: &mut Batch, table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    if table.shape().len() != 2 {
        return Err(shape_err("embedding", "a table [V, K]", table.shape()));
    }
    if !DType::WEIGHT_FORMATS.contains(&table.dtype()) {
        return Err(Error::UnsupportedFormat {
            op: "embedding",
            format: table.dtype().to_string(),
            why: "not a weight format".into(),
        });
    }
    if ids.dtype() != DType::U32 {
        return Err(Error::UnsupportedFormat {
            op: "embedding ids",
            format: ids.dtype().to_string(),
            why: "ids are U32".into(),
        });
    }
    let (vocab, k, n) = (table.shape()[0], table.shape()[1], ids.numel());
    let total = n
        .checked_mul(k)
        .filter(|&t| t < u32::MAX as usize)
        .ok_or_else(|| shape_err("embedding", "< 2^32 outputs", (n, k)))?;
    let y = gpu.empty(&[n, k], DType::F32)?;
    let p = Params { rows: n as u32, k: k as u32, vocab: vocab as u32, _pad: 0 };
    let (wg, grid) = launch_1d(gpu, total, WG);
    batch.dispatch(
        gpu,
        &SHADER,
        "gather",
        &[("FORMAT", table.dtype().shader_id() as f64), ("WG", wg as f64)],
        &[Binding::Uniform(bytemuck::bytes_of(&p)), Binding::Tensor(ids), Binding::Tensor(table), Binding::Tensor(&y)],
        grid,
    )?;
    Ok(y)
}

/// The whole weight `[N, K]` as F32 (debugging, and formats a kernel cannot read directly).
pub fn dequantize(gpu: &Gpu, batch: &mut Batch, w: &Tensor) -> Result<Tensor> {
    let rows = w.shape().first().copied().unwrap_or(0) as u32;
    let ids = gpu.upload_u32(&[rows as usize], &(0..rows).collect::<Vec<_>>())?;
    embedding(gpu, batch, w, &ids)
}
