// Embedding gather: Y[i, :] = dequant(W[IDS[i], :]) for a table in any weight format (quant.wgsl is
// prepended). With IDS = 0..N it dequantizes a whole weight. Wrapper: src/kernels/embedding.rs.
// Reference: src/reference/embedding.rs. One invocation per output element, 2-D grid for large outputs.

override FORMAT: u32 = 0u;
override WG: u32 = 256u;

struct Params {
    rows: u32,     // number of ids
    k: u32,        // embedding width
    vocab: u32,    // rows of the table
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> IDS: array<u32>;       // (rows)
@group(0) @binding(2) var<storage, read> W: array<u32>;         // (vocab, k) in FORMAT's layout
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;   // (rows, k)

@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.rows * p.k) { return; }
    let id = IDS[i / p.k];
    // An out-of-range id yields zeros rather than reading another tensor's memory.
    Y[i] = select(0.0, dq(id, i % p.k, p.k), id < p.vocab);
}
