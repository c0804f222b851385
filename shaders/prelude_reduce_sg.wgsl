// The reductions of prelude_reduce.wgsl (same names, same contract) through subgroup operations:
// each subgroup reduces in registers (subgroupAdd / subgroupMax), its first invocation leaves the
// result in one workgroup-memory slot per subgroup, and after one barrier every invocation combines
// the num_subgroups slots. One barrier pair per call instead of log2(WG) + 2.
//
// Needs `subgroups` with the subgroup_id / num_subgroups builtins (gpu::GpuFeatures::subgroups).
// The program gets no `enable subgroups;` line here: naga (native) rejects it, and in the browser
// gpu::ShaderSpec::source adds it before the first line.

struct Lane {
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) sgs: u32,
}

var<workgroup> red_sg: array<vec4<f32>, WG>;  // one slot per subgroup (at most WG of them)

fn wg_reduce(lane: Lane, v: vec4<f32>, take_max: bool) -> vec4<f32> {
    var r: vec4<f32>;
    if (take_max) {
        r = subgroupMax(v);
    } else {
        r = subgroupAdd(v);
    }
    if (lane.sg_lane == 0u) {
        red_sg[lane.sg] = r;
    }
    workgroupBarrier();
    r = red_sg[0];
    for (var i = 1u; i < lane.sgs; i++) {
        let b = red_sg[i];
        r = select(r + b, max(r, b), take_max);
    }
    workgroupBarrier(); // red_sg is written again by the next call
    return r;
}
