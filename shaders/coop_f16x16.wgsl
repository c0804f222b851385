// Cooperative-matrix configuration for matmul_coop.wgsl (a prelude, like precision_f16.wgsl; must come
// first in the program): 16×16×16 tiles, f16 operands, f32 accumulators — NVIDIA tensor cores through
// VK_KHR_cooperative_matrix, AMD WMMA. Chosen when the adapter reports (16, 16, 16, f16, f32).
enable f16;
enable wgpu_cooperative_matrix;
alias ab_t = f16;
alias coop_a = coop_mat16x16<f16, A>;
alias coop_b = coop_mat16x16<f16, B>;
alias coop_c = coop_mat16x16<f32, C>;
const CS: u32 = 16u;
