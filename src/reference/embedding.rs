//! CPU reference for `shaders/embedding.wgsl`.

/// `table` is `[vocab, k]` (already dequantized); out-of-range ids give zero rows.
pub fn embedding(table: &[f32], k: usize, ids: &[u32]) -> Vec<f32> {
    let vocab = table.len() / k.max(1);
    ids.iter()
        .flat_map(|&id| {
            let id = id as usize;
            (0..k).map(move |j| if id < vocab { table[id * k + j] } else { 0.0 })
        })
        .collect()
}
