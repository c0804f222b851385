// Activation functions shared by several kernels (a library: no entry points).
// Reference: src/reference/elementwise.rs.
//
// Activation ids (also used by matmul epilogues):
const ACT_GELU_TANH: u32 = 0u;
const ACT_QUICK_GELU: u32 = 1u;
const ACT_SILU: u32 = 2u;
const ACT_NONE: u32 = 3u;
const ACT_TANH: u32 = 4u;

// tanh written via exp, clamped where it is ±1 in f32, so that no implementation's exp overflows:
// tanh(u) = 1 − 2/(exp(2u) + 1).
fn tanh_exp(u: f32) -> f32 {
    return 1.0 - 2.0 / (exp(2.0 * clamp(u, -15.0, 15.0)) + 1.0);
}

fn gelu_tanh(x: f32) -> f32 {
    // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
    let u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
    return 0.5 * x * (1.0 + tanh_exp(u));
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
        case 4u: { return tanh_exp(x); }
        default: { return x; }
    }
}
