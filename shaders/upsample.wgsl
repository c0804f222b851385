// Nearest-neighbour ×2 upsampling of one [C, H, W] image (the VAE decoder's Upsample before its conv,
// BFL `Upsample`, src/flux/modules/autoencoder.py @ 802fb47). conv2d.wgsl can fuse this into its input reads;
// this standalone kernel is for other uses and for checking. Reference: src/reference/upsample.rs. Wrapper:
// src/kernels/upsample.rs.
//
// One invocation per output element, so writes are contiguous; the grid is 2-D for large images:
// index = (wid.y * nwg.x + wid.x) * WG + lid.x.

override WG: u32 = 256;

struct Params {
    n: u32,  // output elements, C · 2H · 2W
    h: u32,  // input height
    w: u32,  // input width
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (C, H, W)
@group(0) @binding(2) var<storage, read_write> y: array<f32>;    // (C, 2H, 2W)

@compute @workgroup_size(WG)
fn nearest2x(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.n) { return; }
    let w2 = 2u * p.w;
    let ox = i % w2;
    let row = i / w2;          // ch · 2H + oy
    let oy = row % (2u * p.h);
    let ch = row / (2u * p.h);
    y[i] = x[(ch * p.h + oy / 2u) * p.w + ox / 2u];
}
