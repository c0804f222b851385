// FLUX latent packing (diffusers `FluxPipeline._pack_latents`,
// src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c): [C, h, w] latents ⇄ [(h/2)(w/2), 4C] tokens.
//   token n = r · (w/2) + c,  feature f = ch · 4 + dy · 2 + dx,  packed[n, f] = latent[ch, 2r + dy, 2c + dx]
// (C = 16 for FLUX, so 64 features). `pack` and `unpack` are exact inverses; each invocation writes one
// output element (contiguous writes) and gathers its input. Reference: src/reference/pack.rs.
// Wrapper: src/kernels/pack.rs. Grid is 2-D for large latents: index = (wid.y * nwg.x + wid.x) * WG + lid.x.

override WG: u32 = 256;

struct Params {
    n: u32,  // elements (C · h · w)
    c: u32,  // latent channels
    h: u32,  // latent height (even)
    w: u32,  // latent width (even)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // pack: (C, h, w); unpack: ((h/2)(w/2), 4C)
@group(0) @binding(2) var<storage, read_write> y: array<f32>;    // pack: ((h/2)(w/2), 4C); unpack: (C, h, w)

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// Index in the packed layout of latent element (ch, yy, xx).
fn packed_index(ch: u32, yy: u32, xx: u32) -> u32 {
    let token = (yy / 2u) * (p.w / 2u) + xx / 2u;
    let feature = ch * 4u + (yy & 1u) * 2u + (xx & 1u);
    return token * (4u * p.c) + feature;
}

// i in packed order: find the latent element that lands there.
@compute @workgroup_size(WG)
fn pack(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let features = 4u * p.c;
    let token = i / features;
    let f = i % features;
    let ch = f / 4u;
    let yy = 2u * (token / (p.w / 2u)) + (f / 2u) % 2u;
    let xx = 2u * (token % (p.w / 2u)) + f % 2u;
    y[i] = x[(ch * p.h + yy) * p.w + xx];
}

// i in latent order [C, h, w]: read it from its packed position.
@compute @workgroup_size(WG)
fn unpack(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let xx = i % p.w;
    let yy = (i / p.w) % p.h;
    let ch = i / (p.w * p.h);
    y[i] = x[packed_index(ch, yy, xx)];
}
