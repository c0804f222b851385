// Workgroup-wide reductions for kernels that give a row or group to one workgroup (norm.wgsl,
// rope.wgsl, softmax.wgsl, reduce.wgsl): every invocation passes its partial value and gets the
// workgroup's result. This file goes through workgroup memory and runs on every adapter;
// prelude_reduce_sg.wgsl defines the same names with subgroup operations, and the kernel's wrapper
// picks one (`gpu::GpuFeatures::subgroups`), so each kernel has one source.
//
// Contract for the kernel: it declares `override WG: u32` (a power of two, the workgroup size),
// takes `lane: Lane` among its entry point's parameters, and calls these functions from uniform
// control flow (every invocation of the workgroup calls them, in the same order).

struct Lane {
    @builtin(local_invocation_index) li: u32,
}

var<workgroup> red_tree: array<vec4<f32>, WG>;

// Sum (take_max = false) or maximum (true) of v over the workgroup, component-wise: a tree of
// log2(WG) barrier-separated steps.
fn wg_reduce(lane: Lane, v: vec4<f32>, take_max: bool) -> vec4<f32> {
    red_tree[lane.li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lane.li < s) {
            let a = red_tree[lane.li];
            let b = red_tree[lane.li + s];
            red_tree[lane.li] = select(a + b, max(a, b), take_max);
        }
        workgroupBarrier();
    }
    let r = red_tree[0];
    workgroupBarrier(); // red_tree is written again by the next call
    return r;
}
