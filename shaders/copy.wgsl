// Strided 2-D block copy between row-major matrices of 32-bit elements (F32 or U32, copied as bits):
// the one primitive behind slicing and concatenating along tokens (rows) and features (columns), e.g.
// FLUX's joint sequence concat(txt, img) and the single block's concat_features(attn, mlp) (BFL
// `Flux.forward`, src/flux/model.py @ 802fb47; `SingleStreamBlock`, src/flux/modules/layers.py @ 802fb47).
// Reference: src/reference/copy.rs. Wrapper: src/kernels/copy.rs.
//
// dst[dst_offset + r · dst_stride + c] = src[src_offset + r · src_stride + c] for r < rows, c < cols,
// copied as bits; or, with the override ACT set to an activation of activations.wgsl (prepended by the
// wrapper), act(src) of F32 values: the single block's gelu(mlp) written beside the attention output in
// the same pass that moves it (instead of a slice, an activation and a concat).
// One invocation per element (consecutive invocations copy consecutive columns, so reads and writes are
// contiguous along a row); the grid is 2-D for large blocks: index = (wid.y * nwg.x + wid.x) * WG + lid.x.
// Offsets are relative to the bound ranges: the wrapper binds sub-ranges of large tensors so that no
// binding exceeds the device's storage binding limit.

override WG: u32 = 256;
override ACT: u32 = ACT_NONE;

struct Params {
    rows: u32,
    cols: u32,
    src_stride: u32,  // elements between rows of src
    src_offset: u32,  // element of src at (0, 0) of the block
    dst_stride: u32,
    dst_offset: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;         // (src rows, src_stride)
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;   // (dst rows, dst_stride)

@compute @workgroup_size(WG)
fn copy_2d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.rows * p.cols) { return; }
    let r = i / p.cols;
    let c = i - r * p.cols;
    let v = src[p.src_offset + r * p.src_stride + c];
    if (ACT == ACT_NONE) {
        dst[p.dst_offset + r * p.dst_stride + c] = v;
    } else {
        dst[p.dst_offset + r * p.dst_stride + c] = bitcast<u32>(activate(bitcast<f32>(v), ACT));
    }
}

// Transpose of a whole `[rows, cols]` matrix into `[cols, rows]`: dst[c · rows + r] = src[r · cols + c].
// The VAE's mid-block attention (BFL `AttnBlock`, src/flux/modules/autoencoder.py @ 802fb47) works on
// `[H·W, C]` token rows while the convolutions keep `[C, H, W]`. One invocation per element, indexed by the
// destination so that writes
// are contiguous; src_stride/dst_stride/offsets are unused (whole tensors are bound).
@compute @workgroup_size(WG)
fn transpose(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.rows * p.cols) { return; }
    let c = i / p.rows;
    let r = i - c * p.rows;
    dst[i] = src[r * p.cols + c];
}
