// The reductions kernels call, on top of `wg_reduce` from prelude_reduce.wgsl (workgroup memory)
// or prelude_reduce_sg.wgsl (subgroups); the contract is in prelude_reduce.wgsl.

// Workgroup sum of v, component-wise; every invocation gets the result.
fn wg_sum(lane: Lane, v: vec4<f32>) -> vec4<f32> {
    return wg_reduce(lane, v, false);
}

// Workgroup maximum of v; every invocation gets the result.
fn wg_max(lane: Lane, v: f32) -> f32 {
    return wg_reduce(lane, vec4<f32>(v), true).x;
}
