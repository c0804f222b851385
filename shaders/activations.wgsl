// Activation functions shared by several kernels (a library: no entry points).
// Reference: src/reference/elementwise.rs.
//
// Activation ids (also used by matmul epilogues):
const ACT_GELU_TANH: u32 = 0u;
const ACT_QUICK_GELU: u32 = 1u;
const ACT_SILU: u32 = 2u;
const ACT_NONE: u32 = 3u;

fn gelu_tanh(x: f32) -> f32 {
    // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))); tanh written via exp for
    // large |u| stability: tanh(u) = 1 − 2/(exp(2u) + 1).
    let u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
    let t = 1.0 - 2.0 / (exp(2.0 * clamp(u, -15.0, 15.0)) + 1.0);
    return 0.5 * x * (1.0 + t);
}

fn quick_gelu(x: f32) -> f32 {
    return x / (1.0 + exp(-1.702 * x));
}

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

fn activate(x: f32, op: u32) -> f32 {
    switch op {
        case 0u: { return gelu_tanh(x); }
        case 1u: { return quick_gelu(x); }
        case 2u: { return silu(x); }
        default: { return x; }
    }
}
