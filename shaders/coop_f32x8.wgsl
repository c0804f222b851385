// Cooperative-matrix configuration for matmul_coop.wgsl (a prelude; must come first in the program):
// 8×8×8 tiles, f32 operands and accumulators — Metal simdgroup matrices, and the one configuration
// wgpu 30 documents as always supported where the feature exists. See coop_f16x16.wgsl.
enable wgpu_cooperative_matrix;
alias ab_t = f32;
alias coop_a = coop_mat8x8<f32, A>;
alias coop_b = coop_mat8x8<f32, B>;
alias coop_c = coop_mat8x8<f32, C>;
const CS: u32 = 8u;
